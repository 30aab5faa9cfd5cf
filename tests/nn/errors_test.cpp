// Bad input: the right exception, a message naming the layer, the parameter and the shapes,
// and no change to the layer's state or the output buffer.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>

#include <fusedcnn/fusedcnn.hpp>

#include "reference/reference.hpp"
#include "support.hpp"

using Catch::Matchers::Contains;
using fusedcnn::BatchNorm2D;
using fusedcnn::BatchNormOptions;
using fusedcnn::Conv2D;
using fusedcnn::Conv2DOptions;
using fusedcnn::ConvBN;
using fusedcnn::Tensor;

namespace {

// Everything observable about a layer's state, flattened for before/after comparison.
std::vector<double> state_of(const Conv2D<float>& c) {
  std::vector<double> s = ref::to_vec(c.weight());
  for (double v : ref::to_vec(c.weight_grad())) s.push_back(v);
  if (c.has_bias()) {
    for (double v : ref::to_vec(c.bias())) s.push_back(v);
    for (double v : ref::to_vec(c.bias_grad())) s.push_back(v);
  }
  return s;
}
std::vector<double> state_of(const BatchNorm2D<float>& b) {
  std::vector<double> s = ref::to_vec(b.running_mean());
  for (double v : ref::to_vec(b.running_var())) s.push_back(v);
  for (double v : ref::to_vec(b.weight_grad())) s.push_back(v);
  for (double v : ref::to_vec(b.bias_grad())) s.push_back(v);
  s.push_back(static_cast<double>(b.num_batches_tracked()));
  return s;
}

// Requires f() to throw E with every fragment in its message.
template <class E, class F>
void require_throws(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    FAIL("no exception");
  } catch (const E& e) {
    for (const char* frag : fragments) CHECK_THAT(e.what(), Contains(frag));
  }
}

}  // namespace

TEST_CASE("Conv2D rejects bad shapes with both shapes in the message and no state change",
          "[errors][conv2d]") {
  Conv2D<float> conv(4, 6);
  Tensor<float> x({2, 8, 8, 4}, 0.5f);
  const Tensor<float> y = conv.forward(x);
  conv.backward(Tensor<float>(y.shape(), 1.0f));
  const auto before = state_of(conv);
  Tensor<float> out({1, 2, 3, 4}, 7.0f);

  require_throws<fusedcnn::shape_error>([&] { conv.forward(Tensor<float>({2, 8, 8, 3}), out); },
                                        {"Conv2D", "3 channels", "weight expects 4", "2,8,8,3"});
  require_throws<fusedcnn::shape_error>([&] { conv.forward(Tensor<float>({0, 8, 8, 4}), out); },
                                        {"Conv2D", "zero-sized", "0,8,8,4"});
  require_throws<fusedcnn::shape_error>([&] { conv.forward(Tensor<float>({1, 2, 8, 4}), out); },
                                        {"Conv2D", "kernel 3x3", "1,2,8,4", "<= 0"});
  require_throws<fusedcnn::shape_error>([&] { conv.backward(Tensor<float>({2, 6, 5, 6})); },
                                        {"Conv2D", "dy", "2,6,5,6", "2,6,6,6"});
  require_throws<fusedcnn::shape_error>([&] { conv.backward(Tensor<float>({2, 6, 6, 5})); },
                                        {"Conv2D", "dy", "2,6,6,5"});
  CHECK(state_of(conv) == before);
  for (std::size_t i = 0; i < out.size(); ++i) REQUIRE(out.data()[i] == 7.0f);  // untouched
  CHECK(out.shape() == fusedcnn::Shape<4>{1, 2, 3, 4});
  // the cache of the good forward is still the one backward uses
  Conv2D<float> twin(conv);
  twin.zero_grad();
  conv.zero_grad();
  CHECK(ref::rel_err(conv.backward(Tensor<float>(y.shape(), 1.0f)),
                     ref::to_vec(twin.backward(Tensor<float>(y.shape(), 1.0f)))) == 0.0);

  SECTION("a weight replaced by one of another shape is reported") {
    conv.weight() = Tensor<float>({3, 3, 4, 5});
    require_throws<fusedcnn::shape_error>([&] { conv.forward(x); }, {"Conv2D", "weight", "3,3,4,5", "3,3,4,6"});
  }
}

TEST_CASE("Conv2D rejects bad options", "[errors][conv2d]") {
  auto with = [](auto edit) {
    Conv2DOptions o;
    edit(o);
    return o;
  };
  require_throws<fusedcnn::value_error>([&] { Conv2D<float>(4, 4, with([](auto& o) { o.stride = {0, 1}; })); },
                                        {"Conv2D", "stride"});
  require_throws<fusedcnn::value_error>([&] { Conv2D<float>(4, 4, with([](auto& o) { o.dilation = {1, 0}; })); },
                                        {"Conv2D", "dilation"});
  require_throws<fusedcnn::value_error>([&] { Conv2D<float>(4, 6, with([](auto& o) { o.groups = 4; })); },
                                        {"Conv2D", "groups = 4", "6"});
  require_throws<fusedcnn::value_error>([&] { Conv2D<float>(0, 4); }, {"Conv2D", "in_channels"});
  require_throws<fusedcnn::value_error>([&] { Conv2D<float>(4, 4, with([](auto& o) { o.kernel = {0, 3}; })); },
                                        {"Conv2D", "kernel"});
  const std::size_t huge = std::numeric_limits<std::size_t>::max() / 4;
  CHECK_THROWS_AS(Conv2D<float>(huge, huge), fusedcnn::shape_error);
  Conv2D<float> no_bias(2, 2, with([](auto& o) { o.bias = false; }));
  require_throws<fusedcnn::value_error>([&] { (void)no_bias.bias(); }, {"Conv2D", "bias", "bias = false"});
  CHECK_FALSE(no_bias.has_bias());
}

TEST_CASE("BatchNorm2D rejects bad input and options without changing state", "[errors][batchnorm]") {
  BatchNorm2D<float> bn(3);
  const Tensor<float> x({2, 4, 4, 3}, 1.5f);
  bn.forward(x);
  bn.backward(Tensor<float>(x.shape(), 1.0f));
  const auto before = state_of(bn);
  require_throws<fusedcnn::shape_error>([&] { bn.forward(Tensor<float>({2, 4, 4, 5})); },
                                        {"BatchNorm2D", "5 channels", "expected 3", "2,4,4,5"});
  require_throws<fusedcnn::value_error>([&] { bn.forward(Tensor<float>({1, 1, 1, 3})); },
                                        {"BatchNorm2D", "more than 1 value per channel", "1,1,1,3"});
  require_throws<fusedcnn::shape_error>([&] { bn.backward(Tensor<float>({2, 4, 3, 3})); },
                                        {"BatchNorm2D", "dy", "2,4,3,3", "2,4,4,3"});
  require_throws<fusedcnn::shape_error>([&] { bn.forward(Tensor<float>({2, 0, 4, 3})); },
                                        {"BatchNorm2D", "zero-sized"});
  CHECK(state_of(bn) == before);
  bn.eval();  // eval mode with running statistics accepts a single value per channel
  CHECK_NOTHROW(bn.forward(Tensor<float>({1, 1, 1, 3})));

  BatchNormOptions o;
  o.eps = 0;
  require_throws<fusedcnn::value_error>([&] { BatchNorm2D<float>(3, o); }, {"BatchNorm2D", "eps"});
  o.eps = -1e-5;
  CHECK_THROWS_AS(BatchNorm2D<float>(3, o), fusedcnn::value_error);
  o = {};
  o.momentum = 1.5;
  require_throws<fusedcnn::value_error>([&] { BatchNorm2D<float>(3, o); }, {"BatchNorm2D", "momentum", "1.5"});
  o.momentum = -0.1;
  CHECK_THROWS_AS(BatchNorm2D<float>(3, o), fusedcnn::value_error);
}

TEST_CASE("backward before forward throws state_error", "[errors]") {
  const Tensor<float> dy({1, 2, 2, 2});
  CHECK_THROWS_AS(Conv2D<float>(2, 2).backward(dy), fusedcnn::state_error);
  CHECK_THROWS_AS(BatchNorm2D<float>(2).backward(dy), fusedcnn::state_error);
  CHECK_THROWS_AS(fusedcnn::ReLU<float>().backward(dy), fusedcnn::state_error);
  CHECK_THROWS_AS(ConvBN<float>(2, 2).backward(dy), fusedcnn::state_error);
  try {
    ConvBN<float>(2, 2).backward(dy);
  } catch (const std::logic_error& e) {  // state_error is a logic_error
    CHECK_THAT(e.what(), Contains("ConvBN"));
  }
}

TEST_CASE("ConvBN rejects bad input without changing state", "[errors][conv_bn]") {
  fusedcnn::Conv2DOptions o;
  o.padding = fusedcnn::Padding::same();
  ConvBN<float> f(3, 4, o, {}, fusedcnn::Activation::relu);
  const Tensor<float> x({2, 5, 5, 3}, 0.25f);
  f.forward(x);
  const auto conv_before = state_of(f.conv());
  const auto bn_before = state_of(f.bn());
  CHECK_THROWS_AS(f.forward(Tensor<float>({2, 5, 5, 2})), fusedcnn::shape_error);
  CHECK_THROWS_AS(f.forward(Tensor<float>({1, 1, 1, 3})), fusedcnn::value_error);  // one value per channel
  CHECK_THROWS_AS(f.backward(Tensor<float>({2, 5, 4, 4})), fusedcnn::shape_error);
  CHECK(state_of(f.conv()) == conv_before);
  CHECK(state_of(f.bn()) == bn_before);
}

TEST_CASE("Tensor element-count overflow throws shape_error", "[errors][tensor]") {
  const std::size_t big = std::size_t{1} << 40;
  CHECK_THROWS_AS((Tensor<float>({big, big, 1, 1})), fusedcnn::shape_error);
  CHECK_THROWS_AS((Tensor<double>({std::numeric_limits<std::size_t>::max() / 4, 1, 1, 1})),
                  fusedcnn::shape_error);
}

TEST_CASE("NaN inputs propagate as NaN through forward and backward", "[errors][nan]") {
  fusedcnn::Conv2DOptions o;
  o.padding = fusedcnn::Padding::same();
  ConvBN<float> f(2, 3, o);
  Conv2D<float> conv(2, 3, o);
  Tensor<float> x({1, 4, 4, 2}, 0.5f);
  x(0, 1, 1, 0) = std::numeric_limits<float>::quiet_NaN();
  const Tensor<float> y = conv.forward(x);
  CHECK(std::isnan(y(0, 1, 1, 0)));
  CHECK(std::isnan(y(0, 2, 2, 1)));  // the 3x3 neighbourhood reads it
  const Tensor<float> dx = conv.backward(Tensor<float>(y.shape(), 1.0f));
  CHECK(std::isnan(conv.weight_grad()(1, 1, 0, 0)));
  (void)dx;
  const Tensor<float> yf = f.forward(x);
  bool any_nan = false;
  for (std::size_t i = 0; i < yf.size(); ++i) any_nan |= std::isnan(yf.data()[i]);
  CHECK(any_nan);  // batch statistics of a NaN channel are NaN
  CHECK_NOTHROW(f.backward(Tensor<float>(yf.shape(), 1.0f)));
}
