// Compiled for aarch64 by tests/run.sh all: every header builds there and the NEON kernels
// are the ones selected.
#include <fusedcnn/fusedcnn.hpp>

#include <string_view>

static_assert(std::string_view(fusedcnn::kernels::isa_name) == "neon");

// Instantiates every layer in both precisions so the kernels are compiled, not just parsed.
template class fusedcnn::Conv2D<float>;
template class fusedcnn::Conv2D<double>;
template class fusedcnn::BatchNorm2D<float>;
template class fusedcnn::ConvBN<float>;
template class fusedcnn::ConvBN<double>;

float neon_check_step() {
  fusedcnn::ConvBN<float> f(2, 3);
  fusedcnn::Tensor<float> x({1, 5, 5, 2}, 1.0f);
  auto y = f.forward(x);
  return f.backward(y)[0];
}
