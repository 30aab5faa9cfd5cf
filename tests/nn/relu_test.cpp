// ReLU against the reference, with exact zeros (mask x > 0) and NaN.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include <fusedcnn/fusedcnn.hpp>

#include "reference/reference.hpp"
#include "support.hpp"

TEMPLATE_TEST_CASE("ReLU forward and backward match the reference", "[relu]", float, double) {
  std::mt19937_64 rng(17);
  for (int i = 0; i < 50; ++i) {
    const std::size_t n = support::pick(rng, 3), h = support::pick(rng, 7), w = support::pick(rng, 13),
                      c = support::pick(rng, 17);
    INFO("x=" << n << "," << h << "," << w << "," << c);
    fusedcnn::Tensor<TestType> x({n, h, w, c});
    support::fill(x, rng);
    for (std::size_t j = 0; j < x.size(); j += 3) x.data()[j] = TestType{0};  // exact zeros
    fusedcnn::ReLU<TestType> relu;
    const auto y = relu.forward(x);
    fusedcnn::Tensor<TestType> dy(x.shape());
    support::fill(dy, rng);
    const auto dx = relu.backward(dy);
    const ref::Vec xr = ref::to_vec(x);
    CHECK(ref::rel_err(y, ref::relu_forward(xr)) == 0.0);
    CHECK(ref::rel_err(dx, ref::relu_backward(xr, ref::to_vec(dy))) == 0.0);
  }
}

TEST_CASE("ReLU propagates NaN and gives zero gradient at exactly 0", "[relu]") {
  fusedcnn::Tensor<float> x({1, 1, 1, 3});
  x.data()[0] = std::numeric_limits<float>::quiet_NaN();
  x.data()[1] = 0.0f;
  x.data()[2] = 2.0f;
  fusedcnn::ReLU<float> relu;
  const auto y = relu.forward(x);
  CHECK(std::isnan(y.data()[0]));
  CHECK(y.data()[1] == 0.0f);
  CHECK(y.data()[2] == 2.0f);
  const auto dx = relu.backward(fusedcnn::Tensor<float>(x.shape(), 1.0f));
  CHECK(dx.data()[1] == 0.0f);
  CHECK(dx.data()[2] == 1.0f);
}
