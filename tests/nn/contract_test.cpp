// The API contract's "details that are easy to get wrong", one check each.
#include <catch2/catch.hpp>

#include <algorithm>

#include <fusedcnn/fusedcnn.hpp>

#include "reference/reference.hpp"
#include "support.hpp"

using fusedcnn::BatchNorm2D;
using fusedcnn::BatchNormOptions;
using fusedcnn::Conv2D;
using fusedcnn::ConvBN;
using fusedcnn::Tensor;

TEST_CASE("absent tensors throw value_error", "[contract]") {
  fusedcnn::Conv2DOptions co;
  co.bias = false;
  Conv2D<float> conv(2, 3, co);
  CHECK_FALSE(conv.has_bias());
  CHECK_THROWS_AS(conv.bias(), fusedcnn::value_error);
  CHECK_THROWS_AS(conv.bias_grad(), fusedcnn::value_error);
  BatchNormOptions bo;
  bo.affine = false;
  bo.track_running_stats = false;
  BatchNorm2D<float> bn(3, bo);
  CHECK_THROWS_AS(bn.weight(), fusedcnn::value_error);
  CHECK_THROWS_AS(bn.bias(), fusedcnn::value_error);
  CHECK_THROWS_AS(bn.weight_grad(), fusedcnn::value_error);
  CHECK_THROWS_AS(bn.running_mean(), fusedcnn::value_error);
  CHECK_THROWS_AS(bn.running_var(), fusedcnn::value_error);
}

TEST_CASE("num_batches_tracked counts training forwards whatever the momentum", "[contract]") {
  for (std::optional<double> m : {std::optional<double>{0.1}, std::optional<double>{}}) {
    BatchNormOptions o;
    o.momentum = m;
    BatchNorm2D<double> bn(2, o);
    const Tensor<double> x({2, 3, 3, 2}, 1.0);
    bn.forward(x);
    bn.forward(x);
    CHECK(bn.num_batches_tracked() == 2);
    bn.eval();
    bn.forward(x);
    CHECK(bn.num_batches_tracked() == 2);
  }
  BatchNormOptions untracked;
  untracked.track_running_stats = false;
  BatchNorm2D<double> bn(2, untracked);
  bn.forward(Tensor<double>({2, 3, 3, 2}, 1.0));
  CHECK(bn.num_batches_tracked() == 0);
}

TEST_CASE("momentum nullopt is a cumulative average of batch statistics", "[contract]") {
  BatchNormOptions o;
  o.momentum = std::nullopt;
  BatchNorm2D<double> bn(1, o);
  std::mt19937_64 rng(1);
  std::vector<double> means;
  for (int i = 0; i < 3; ++i) {
    Tensor<double> x({2, 2, 2, 1});
    support::fill(x, rng);
    ref::Vec m, v;
    ref::moments(ref::to_vec(x), 1, m, v);
    means.push_back(m[0]);
    bn.forward(x);
  }
  CHECK(bn.running_mean()[0] == Approx((means[0] + means[1] + means[2]) / 3).epsilon(1e-12));
}

TEST_CASE("eval mode without running statistics normalises with batch statistics", "[contract]") {
  BatchNormOptions o;
  o.track_running_stats = false;
  BatchNorm2D<double> bn(1, o);
  bn.eval();
  Tensor<double> x({1, 2, 2, 1});
  x[0] = 1, x[1] = 2, x[2] = 3, x[3] = 4;
  const Tensor<double> y = bn.forward(x);
  double s = 0;
  for (std::size_t i = 0; i < 4; ++i) s += y[i];
  CHECK(std::abs(s) < 1e-12);
  CHECK(y[3] == Approx(1.5 / std::sqrt(1.25 + 1e-5)));
}

TEST_CASE("ReLU's mask is x > 0", "[contract]") {
  fusedcnn::ReLU<float> relu;
  Tensor<float> x({1, 1, 1, 2});
  x[0] = 0.0f, x[1] = -0.0f;
  relu.forward(x);
  const Tensor<float> dx = relu.backward(Tensor<float>(x.shape(), 1.0f));
  CHECK(dx[0] == 0.0f);
  CHECK(dx[1] == 0.0f);
}

TEST_CASE("layers are deep-copyable and movable", "[contract]") {
  Conv2D<float> a(2, 3);
  Conv2D<float> b = a;
  b.weight()[0] = a.weight()[0] + 1.0f;
  CHECK(b.weight()[0] != a.weight()[0]);
  const Tensor<float> x({1, 4, 4, 2}, 0.5f);
  a.forward(x);
  Conv2D<float> c = a;  // a copy after forward can run backward
  CHECK_NOTHROW(c.backward(Tensor<float>({1, 2, 2, 3}, 1.0f)));
  Conv2D<float> d = std::move(c);
  CHECK(d.weight().shape() == a.weight().shape());
  ConvBN<float> f(2, 3);
  ConvBN<float> g = f;
  g.bn().running_mean()[0] = 5.0f;
  CHECK(f.bn().running_mean()[0] == 0.0f);
  ConvBN<float> h = std::move(g);
  CHECK(h.bn().running_mean()[0] == 5.0f);
  BatchNorm2D<float> bn(3);
  BatchNorm2D<float> bn2 = bn;
  bn2.running_var()[0] = 3.0f;
  CHECK(bn.running_var()[0] == 1.0f);
}

TEST_CASE("defaults, train/eval and zero_grad", "[contract]") {
  Conv2D<float> conv(2, 2);
  BatchNorm2D<float> bn(2);
  ConvBN<float> f(2, 2);
  CHECK(conv.training());
  CHECK(bn.training());
  CHECK(f.training());
  f.eval();
  CHECK_FALSE(f.conv().training());
  CHECK_FALSE(f.bn().training());
  CHECK(bn.options().eps == 1e-5);
  CHECK(*bn.options().momentum == 0.1);
  CHECK(conv.options().kernel == std::array<std::size_t, 2>{3, 3});
  CHECK(fusedcnn::Padding{} == fusedcnn::Padding{0, 0, 0, 0});
}

TEST_CASE("writes through non-const accessors are never stale", "[contract]") {
  Conv2D<double> conv(1, 1, {.kernel = {1, 1}});
  CHECK(conv.options().padding == fusedcnn::Padding{});  // a braced temporary arrives intact
  const Tensor<double> x({1, 1, 1, 1}, 2.0);
  conv.weight()[0] = 3.0;
  conv.bias()[0] = 0.5;
  CHECK(conv.forward(x)[0] == 6.5);
  conv.weight()[0] = -1.0;
  CHECK(conv.forward(x)[0] == -1.5);
}

TEST_CASE("Padding::same gives ceil(in / stride) for any stride", "[contract]") {
  for (std::size_t s = 1; s <= 3; ++s)
    for (std::size_t h : {1, 5, 7, 8}) {
      Conv2D<float> conv(1, 1, {.kernel = {3, 3}, .stride = {s, s}, .padding = fusedcnn::Padding::same()});
      const Tensor<float> y = conv.forward(Tensor<float>({1, h, h, 1}, 1.0f));
      CHECK(y.shape()[1] == (h + s - 1) / s);
    }
}

TEST_CASE("set_num_threads / num_threads round-trip", "[contract][threads]") {
  const int before = fusedcnn::num_threads();
  fusedcnn::set_num_threads(1);
  CHECK(fusedcnn::num_threads() == 1);
  fusedcnn::set_num_threads(before);
  CHECK(fusedcnn::num_threads() == before);
}

TEST_CASE("backward uses the input as it was at forward, whatever happens to it after",
          "[contract]") {
  // Each layer keeps x lent (or a copy, where its forward overwrites x): the caller may
  // overwrite x through any accessor, assign it a new batch, pass a temporary, or have the
  // forward write its output over x. Every check draws a fresh x, so a copy that was never
  // made cannot pass by holding an older input.
  std::mt19937_64 rng(5);
  // The strided 1x1 gathers the pixels it reads from the kept x in backward.
  const fusedcnn::Conv2DOptions shapes[] = {
      {.kernel = {3, 3}, .padding = fusedcnn::Padding::same()},
      {.kernel = {1, 1}},
      {.kernel = {1, 1}, .stride = {2, 3}, .padding = fusedcnn::Padding{1, 0, 2, 1}},
      {.kernel = {3, 3}, .padding = fusedcnn::Padding::symmetric(1, 1), .groups = 2}};
  auto same = [](const Tensor<double>& a, const Tensor<double>& b) {
    return a.shape() == b.shape() && std::equal(a.data(), a.data() + a.size(), b.data());
  };
  for (const fusedcnn::Conv2DOptions& shape : shapes)
    for (std::size_t c : {2, 8, 24}) {  // the row, strip (3x3 doubles on AVX-512), igemm families
      const std::size_t k = c;           // so that forward(x, x) keeps the shape (stride 1)
      fusedcnn::Conv2DOptions o = shape;
      if (o.groups > 1) o.groups = c;  // the grouped shape is depthwise
      INFO("kernel " << o.kernel[0] << ", " << c << " channels, " << o.groups << " groups");
      Conv2D<double> proto(c, k, o);  // never run: copies of it start without a cached input
      support::fill(proto.weight(), rng);
      Tensor<double> x({2, 9, 10, c});
      Tensor<double> dy(fusedcnn::ops::make_geometry(x.shape(), k, o).out_shape());
      support::fill(dy, rng);
      for (int variant = 0; variant < 5; ++variant) {
        INFO("variant " << variant);
        support::fill(x, rng);
        Conv2D<double> ref_conv = proto, conv = proto;
        const Tensor<double> y_ref = ref_conv.forward(x);
        const Tensor<double> dx_ref = ref_conv.backward(dy);
        Tensor<double> xv = x;
        if (variant == 0) {  // x overwritten between forward and backward
          CHECK(same(conv.forward(xv), y_ref));
          xv.fill(7.0);
        } else if (variant == 1) {  // a temporary input
          CHECK(same(conv.forward(Tensor<double>(x)), y_ref));
        } else if (variant == 3) {  // single values written, as a loader might
          CHECK(same(conv.forward(xv), y_ref));
          xv(0, 0, 0, 0) = 11.0;
          xv(1, 8, 9, c - 1) = -11.0;
        } else if (variant == 4) {  // the next batch assigned (same shape)
          CHECK(same(conv.forward(xv), y_ref));
          Tensor<double> next(x.shape());
          support::fill(next, rng);
          xv = next;
        } else {  // the output written over the input
          conv.forward(xv, xv);
          CHECK(same(xv, y_ref));
        }
        CHECK(same(conv.backward(dy), dx_ref));
        CHECK(same(conv.weight_grad(), ref_conv.weight_grad()));
      }
      for (bool training : {true, false}) {  // ConvBN: batch statistics and folded
        support::fill(x, rng);
        ConvBN<double> cb_proto(c, k, o, {}, fusedcnn::Activation::relu);
        cb_proto.conv().weight() = proto.weight();
        cb_proto.train(training);
        ConvBN<double> cb = cb_proto, cb2 = cb_proto;
        const Tensor<double> yb = cb.forward(x);
        const Tensor<double> dxb = cb.backward(dy);
        Tensor<double> xy = x;
        cb2.forward(xy, xy);
        CHECK(same(xy, yb));
        xy.fill(-3.0);
        CHECK(same(cb2.backward(dy), dxb));
        CHECK(same(cb2.conv().weight_grad(), cb.conv().weight_grad()));
      }
    }
}
