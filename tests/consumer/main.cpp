// Runs a Conv2D -> BatchNorm2D step and checks one value by hand: exit status 0 when right.
#include <cmath>
#include <cstdio>

#include <fusedcnn/fusedcnn.hpp>

int main() {
  fusedcnn::Conv2D<double> conv(1, 1, {.kernel = {1, 1}});
  conv.weight()[0] = 2.0;
  conv.bias()[0] = 1.0;
  fusedcnn::BatchNorm2D<double> bn(1);
  fusedcnn::Tensor<double> x({1, 1, 2, 1});
  x[0] = 1.0, x[1] = 3.0;                          // conv: 3, 7; mean 5, biased var 4
  const auto y = bn.forward(conv.forward(x));
  const double want = 2.0 / std::sqrt(4.0 + 1e-5);  // (7 - 5) / sqrt(var + eps)
  const auto dx = conv.backward(bn.backward(fusedcnn::Tensor<double>(y.shape(), 1.0)));
  const bool ok = std::abs(y[1] - want) < 1e-12 && std::abs(dx[0]) < 1e-9;
  std::printf("consumer: y = %.12f (want %.12f) %s\n", y[1], want, ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
