#include <cstdio>
#include <fusedcnn/fusedcnn.hpp>

int main() {
  using namespace fusedcnn;
  // 3x3 conv, 16 -> 32 channels, 'same' padding, then batch norm and ReLU, fused.
  ConvBN<float> unit(16, 32, {.kernel = {3, 3}, .padding = Padding::same()}, {}, Activation::relu);
  Tensor<float> x({8, 28, 28, 16});                  // NHWC
  fill_normal(x, 0.0, 1.0, /*seed=*/42);
  Tensor<float> y = unit.forward(x);                 // training mode: batch statistics
  Tensor<float> dx = unit.backward(Tensor<float>(y.shape(), 1.0f));
  std::printf("y %zux%zux%zux%zu, dW[0] = %g\n", y.shape()[0], y.shape()[1], y.shape()[2],
              y.shape()[3], unit.conv().weight_grad()[0]);
  unit.eval();                                       // inference: BN folded into the conv
  return unit.forward(x).size() == y.size() && dx.size() == x.size() ? 0 : 1;
}
