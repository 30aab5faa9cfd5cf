// One training step of Conv2D -> BatchNorm2D -> ReLU, run as three layers and as one ConvBN
// built from copies of them: the same numbers, in less time.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fusedcnn/fusedcnn.hpp>

using namespace fusedcnn;
using Clock = std::chrono::steady_clock;

// Median milliseconds of seven runs of f.
template <class F> double median_ms(F&& f) {
  f();  // warm-up: first-touch of buffers, packed weights
  double t[7];
  for (double& v : t) {
    const auto t0 = Clock::now();
    f();
    v = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }
  std::sort(t, t + 7);
  return t[3];
}

int main() {
  Conv2D<float> conv(2, 2, {.kernel = {3, 3}, .padding = Padding::same()});
  BatchNorm2D<float> bn(2);
  ReLU<float> relu;
  ConvBN<float> fused(conv, bn, Activation::relu);   // takes over copies of conv and bn
  Tensor<float> x({8, 112, 112, 2}), dy({8, 112, 112, 2});
  fill_normal(x, 0, 1, 1);
  fill_normal(dy, 0, 1, 2);
  Tensor<float> y1, y2, dx1, dx2;
  auto unfused_step = [&] { y1 = relu.forward(bn.forward(conv.forward(x))); dx1 = conv.backward(bn.backward(relu.backward(dy))); };
  auto fused_step = [&] { fused.forward(x, y2); fused.backward(dy, dx2); };
  const double tu = median_ms(unfused_step), tf = median_ms(fused_step);
  double dy_max = 0, dx_max = 0, scale = 0;
  for (std::size_t i = 0; i < y1.size(); ++i) dy_max = std::max(dy_max, double(std::abs(y1[i] - y2[i])));
  for (std::size_t i = 0; i < dx1.size(); ++i) dx_max = std::max(dx_max, double(std::abs(dx1[i] - dx2[i]))), scale = std::max(scale, double(std::abs(dx1[i])));
  std::printf("largest difference: output %.3g, input gradient %.3g (of %.3g)\n", dy_max, dx_max, scale);
  std::printf("training step: unfused %.3f ms, fused %.3f ms, speedup %.2fx\n", tu, tf, tu / tf);
  return dy_max <= 1e-4 && dx_max <= 1e-4 * scale ? 0 : 1;
}
