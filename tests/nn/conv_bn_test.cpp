// ConvBN against the unfused chain Conv2D -> BatchNorm2D -> ReLU on identical parameters and
// data, and fold() against the eval-mode chain.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include <fusedcnn/fusedcnn.hpp>

#include "reference/reference.hpp"
#include "support.hpp"

using fusedcnn::Activation;
using fusedcnn::BatchNorm2D;
using fusedcnn::BatchNormOptions;
using fusedcnn::Conv2D;
using fusedcnn::ConvBN;
using fusedcnn::Tensor;

namespace {

template <class T>
constexpr double tol() {
  return sizeof(T) == 4 ? 1e-4 : 1e-10;
}

// Normwise relative error of a against b (both library tensors).
template <class T, std::size_t R>
double rel(const Tensor<T, R>& a, const Tensor<T, R>& b) {
  return ref::rel_err(a, ref::to_vec(b));
}

// The unfused chain.
template <class T>
struct Chain {
  Conv2D<T> conv;
  BatchNorm2D<T> bn;
  bool relu;
  fusedcnn::ReLU<T> act;
  Tensor<T> forward(const Tensor<T>& x) {
    Tensor<T> y = bn.forward(conv.forward(x));
    return relu ? act.forward(y) : y;
  }
  Tensor<T> dz;  // the last backward's gradient at the conv output
  Tensor<T> backward(const Tensor<T>& dy) {
    dz = bn.backward(relu ? act.backward(dy) : dy);
    return conv.backward(dz);
  }
};

// Random BN options (eval mode needs running statistics only when they are tracked).
BatchNormOptions random_bn_options(std::mt19937_64& rng) {
  auto u = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  BatchNormOptions o;
  const int m = u(0, 3);
  o.momentum = m == 0 ? std::optional<double>{} : m == 1 ? 0.5 : 0.1;
  o.affine = u(0, 3) != 0;
  o.track_running_stats = u(0, 5) != 0;
  return o;
}

// Compares every output, gradient and statistic of the fused unit with the chain's.
template <class T>
void compare(const ConvBN<T>& f, const Chain<T>& c, const Tensor<T>& yf, const Tensor<T>& yc,
             const Tensor<T>& dxf, const Tensor<T>& dxc, const Tensor<T>& dy) {
  CHECK(rel(yf, yc) <= tol<T>());
  CHECK(rel(dxf, dxc) <= tol<T>());
  const bool batch_stats = c.bn.training() || !c.bn.options().track_running_stats;
  const auto& co = c.conv.options();
  if (batch_stats && co.kernel[0] * co.kernel[1] * (c.conv.in_channels() / co.groups) == 1) {
    // Each output channel is w * x + b of one input: batch statistics cancel w's effect too,
    // so its gradient is rounding noise like the bias's (compared by the bound below).
    CHECK(rel(f.conv().weight_grad(), c.conv.weight_grad()) <= 1e3 * tol<T>());
  } else {
    CHECK(rel(f.conv().weight_grad(), c.conv.weight_grad()) <= tol<T>());
  }
  if (c.conv.has_bias()) {
    if (batch_stats) {
      // With batch statistics the conv bias cancels out of the output: its gradient, a sum of
      // dz over pixels, is zero up to rounding. Each dz is itself a cancelling sum of terms of
      // the size of dy and dz, so the bound scales with eps * sum(|dz| + |dy|) per channel
      // (a missing mean subtraction would give a gradient of the size of that sum).
      const std::size_t K = c.conv.bias_grad().size();
      std::vector<double> scale(K, 0.0);
      for (std::size_t i = 0; i < c.dz.size(); ++i)
        scale[i % K] += std::abs(double(c.dz.data()[i])) + std::abs(double(dy.data()[i]));
      for (std::size_t k = 0; k < K; ++k) {
        const double bound = 1e3 * std::numeric_limits<T>::epsilon() * scale[k];
        CAPTURE(k, bound, scale[k]);
        CHECK(std::abs(f.conv().bias_grad()[k]) <= bound);
        CHECK(std::abs(c.conv.bias_grad()[k]) <= bound);
      }
    } else {
      CHECK(rel(f.conv().bias_grad(), c.conv.bias_grad()) <= tol<T>());
    }
  }
  if (c.bn.options().affine) {
    CHECK(rel(f.bn().weight_grad(), c.bn.weight_grad()) <= tol<T>());
    CHECK(rel(f.bn().bias_grad(), c.bn.bias_grad()) <= tol<T>());
  }
  if (c.bn.options().track_running_stats) {
    CHECK(rel(f.bn().running_mean(), c.bn.running_mean()) <= tol<T>());
    CHECK(rel(f.bn().running_var(), c.bn.running_var()) <= tol<T>());
    CHECK(f.bn().num_batches_tracked() == c.bn.num_batches_tracked());
  }
}

// A layer shape of the family tests.
struct UnitShape {
  std::size_t n, h, w, c, k;
  fusedcnn::Conv2DOptions o;
};

// One step of a ConvBN and of the chain it is built from, in training and eval mode, with
// and without ReLU, on an input, conv weights and BN parameters and statistics drawn from
// rng, compared; dx is written over dy when dx_over_dy.
template <class T>
void check_modes(const UnitShape& s, bool dx_over_dy, std::mt19937_64& rng) {
  for (int mode = 0; mode < 4; ++mode) {
    const bool training = mode % 2 == 0, relu = mode / 2 == 0;
    INFO("shape " << s.n << "," << s.h << "," << s.w << "," << s.c << "->" << s.k
                  << (training ? " train" : " eval") << (relu ? " relu" : ""));
    Chain<T> chain{Conv2D<T>(s.c, s.k, s.o), BatchNorm2D<T>(s.k), relu, {}, {}};
    support::fill(chain.conv.weight(), rng);
    support::fill(chain.bn.weight(), rng, 0.5, 1.5);
    support::fill(chain.bn.bias(), rng);
    support::fill(chain.bn.running_mean(), rng, -0.2, 0.2);
    support::fill(chain.bn.running_var(), rng, 0.5, 2);
    chain.conv.train(training);
    chain.bn.train(training);
    ConvBN<T> fused(chain.conv, chain.bn, relu ? Activation::relu : Activation::none);
    Tensor<T> x({s.n, s.h, s.w, s.c});
    support::fill(x, rng);
    const Tensor<T> yf = fused.forward(x), yc = chain.forward(x);
    Tensor<T> dy(yc.shape());
    support::fill(dy, rng);
    Tensor<T> dxf;
    if (dx_over_dy) {
      dxf = dy;  // resized to the input's shape
      fused.backward(dxf, dxf);
    } else {
      dxf = fused.backward(dy);
    }
    const Tensor<T> dxc = chain.backward(dy);
    compare(fused, chain, yf, yc, dxf, dxc, dy);
  }
}
}  // namespace

TEMPLATE_TEST_CASE("ConvBN equals the unfused chain on 300 random shapes, both modes and activations",
                   "[conv_bn][random]", float, double) {
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 505 : 606);
  for (int i = 0; i < 300; ++i) {
    const support::ConvCase cc = support::random_conv(rng);
    const BatchNormOptions bo = random_bn_options(rng);
    const bool training = i % 2 == 0;
    const bool relu = (i / 2) % 2 == 0;
    const std::size_t pixels = cc.n * cc.problem().ho() * cc.problem().wo();
    if (training && pixels < 2) continue;  // refused in training, tested in errors_test
    // With a handful of values per channel the batch-norm backward cancels almost completely,
    // so two correct float computations differ by more than 1e-4; double covers those shapes.
    if (sizeof(TestType) == 4 && (training || !bo.track_running_stats) && pixels < 16) continue;
    INFO("case " << i << ": " << cc.str() << (training ? " train" : " eval") << (relu ? " relu" : "")
                 << " affine=" << bo.affine << " track=" << bo.track_running_stats);
    Chain<TestType> chain{Conv2D<TestType>(cc.c, cc.k, cc.opts), BatchNorm2D<TestType>(cc.k, bo), relu, {}, {}};
    // Parameters from this test's generator, at the default init's scale, rather than the
    // process-wide init sequence, which depends on the layers other tests built before.
    const double bound = 1.0 / std::sqrt(static_cast<double>(
                                   cc.opts.kernel[0] * cc.opts.kernel[1] * cc.c / cc.opts.groups));
    support::fill(chain.conv.weight(), rng, -bound, bound);
    if (chain.conv.has_bias()) support::fill(chain.conv.bias(), rng, -bound, bound);
    if (bo.affine) {
      support::fill(chain.bn.weight(), rng, 0.5, 1.5);
      support::fill(chain.bn.bias(), rng);
    }
    if (bo.track_running_stats) {
      support::fill(chain.bn.running_mean(), rng, -0.2, 0.2);
      support::fill(chain.bn.running_var(), rng, 0.5, 2);
    }
    chain.conv.train(training);
    chain.bn.train(training);
    ConvBN<TestType> fused(chain.conv, chain.bn, relu ? Activation::relu : Activation::none);
    REQUIRE(fused.training() == training);
    // two steps: running statistics after both, gradients accumulated over both
    for (int step = 0; step < 2; ++step) {
      Tensor<TestType> x({cc.n, cc.h, cc.w, cc.c});
      support::fill(x, rng);
      Tensor<TestType> yf, dxf;
      if (i % 3 == 0) {
        fused.forward(x, yf);
      } else {
        yf = fused.forward(x);
      }
      const Tensor<TestType> yc = chain.forward(x);
      Tensor<TestType> dy(yc.shape());
      support::fill(dy, rng);
      if (i % 3 == 0) {
        fused.backward(dy, dxf);
      } else {
        dxf = fused.backward(dy);
      }
      const Tensor<TestType> dxc = chain.backward(dy);
      compare(fused, chain, yf, yc, dxf, dxc, dy);
    }
  }
}

TEMPLATE_TEST_CASE("ConvBN statistics from the dot family's tiles equal the chain's",
                   "[conv_bn][dot]", float, double) {
  // Few output channels on many input channels run the forward through the dot kernel, whose
  // tiles of a few pixels feed the statistics epilogue: every mode, with and without ReLU,
  // merged and unmerged gathers, a plain GEMM and groups.
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 73 : 74);
  const UnitShape shapes[] = {
      {2, 13, 15, 40, 3, {.kernel = {3, 3}, .padding = fusedcnn::Padding::same()}},
      {2, 12, 11, 70, 4,
       {.kernel = {3, 3}, .stride = {2, 2}, .padding = fusedcnn::Padding{1, 1, 0, 1}}},
      {3, 9, 10, 37, 2, {.kernel = {1, 1}}},
      {2, 10, 9, 48, 4, {.kernel = {3, 3}, .padding = fusedcnn::Padding::same(), .groups = 2}}};
  for (const UnitShape& s : shapes) {
    // (builds with vectors of fewer than 8 values run some of these through other families)
    const auto g = fusedcnn::ops::make_geometry({s.n, s.h, s.w, s.c}, s.k, s.o);
    if (fusedcnn::kernels::dot_max_kb<TestType> >= 4)
      REQUIRE(fusedcnn::ops::plan_forward<TestType>(g).by_dot);
    check_modes<TestType>(s, false, rng);
  }
}

TEMPLATE_TEST_CASE("ConvBN statistics from the Winograd family's chunks equal the chain's",
                   "[conv_bn][winograd]", float, double) {
  // 3x3 stride-1 layers of many channels run the forward as F(2x2, 3x3): each chunk of whole
  // output rows reaches the epilogues as one tile (statistics, folded BN, ReLU). Every mode,
  // with and without ReLU; odd sizes, chunks across images, asymmetric padding.
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 75 : 76);
  const UnitShape shapes[] = {
      {2, 21, 19, 24, 40, {.kernel = {3, 3}, .padding = fusedcnn::Padding::same()}},
      {16, 7, 7, 64, 48, {.kernel = {3, 3}, .padding = fusedcnn::Padding{1, 1, 0, 2}}},
      {1, 30, 28, 40, 33, {.kernel = {3, 3}}}};
  for (const UnitShape& s : shapes) {
    const auto g = fusedcnn::ops::make_geometry({s.n, s.h, s.w, s.c}, s.k, s.o);
    REQUIRE(fusedcnn::ops::plan_forward<TestType>(g).by_winograd);
    check_modes<TestType>(s, false, rng);
  }
}

TEMPLATE_TEST_CASE("ConvBN statistics from the panel-by-panel Winograd equal the chain's",
                   "[conv_bn][winograd]", float, double) {
  // Many channels over few tiles run the forward as F(2x2, 3x3) with the weights transformed
  // panel by panel: each panel of a chunk reaches the epilogues as one tile of the chunk's
  // rows and the panel's channels. Every mode, with and without ReLU; one chunk and two.
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 77 : 78);
  const auto same = fusedcnn::Padding::same();
  const UnitShape shapes[] = {{3, 6, 6, 150, 200, {.kernel = {3, 3}, .padding = same}},
                              {8, 8, 5, 384, 72, {.kernel = {3, 3}, .padding = same}},
                              {2, 11, 12, 256, 72, {.kernel = {3, 3}, .padding = same}},
                              {2, 10, 10, 256, 130, {.kernel = {3, 3}, .padding = same}}};
  std::size_t by_panels = 0;
  for (const UnitShape& s : shapes) {
    const auto g = fusedcnn::ops::make_geometry({s.n, s.h, s.w, s.c}, s.k, s.o);
    by_panels += fusedcnn::ops::plan_forward<TestType>(g).winograd_panels;
    check_modes<TestType>(s, false, rng);
  }
  CHECK(by_panels >= 1);
}

TEMPLATE_TEST_CASE("ConvBN forms dz where the row kernels read it, as the chain's dz",
                   "[conv_bn][rows]", float, double) {
  // Few-channel layers run both gradients through the row kernels, which read dz in planar
  // form: the fused backward forms dz there from dy and Z (never storing it NHWC), with the
  // conv bias gradient summed on the way. Strides 1 (gathered data gradient) and 2
  // (scattered), dilation, every mode, with and without ReLU, and dx written over dy.
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 71 : 72);
  // The row family takes groups of up to half a vector of output channels.
  const std::size_t kmax = fusedcnn::kernels::RowVec<TestType>::lanes / 2;
  if (kmax == 0) {
    WARN("this build's vectors hold one value: no row family, nothing to test");
    return;
  }
  const UnitShape shapes[] = {
      {2, 17, 23, 2, std::min<std::size_t>(2, kmax),
       {.kernel = {3, 3}, .padding = fusedcnn::Padding::same()}},
      {3, 12, 31, 1, std::min<std::size_t>(3, kmax),
       {.kernel = {3, 2}, .stride = {2, 2}, .padding = fusedcnn::Padding{1, 0, 1, 1}}},
      {2, 19, 14, 3, std::min<std::size_t>(2, kmax),
       {.kernel = {2, 3}, .padding = fusedcnn::Padding::symmetric(2, 2), .dilation = {2, 2}}},
      // the widest row tile (8 floats on AVX-512)
      {2, 16, 16, kmax, kmax, {.kernel = {3, 3}, .padding = fusedcnn::Padding::same()}}};
  for (const UnitShape& s : shapes) {
    const auto g = fusedcnn::ops::make_geometry({s.n, s.h, s.w, s.c}, s.k, s.o);
    REQUIRE(fusedcnn::ops::backward_reads_planar_dz<TestType>(g));
    check_modes<TestType>(s, true, rng);
  }
}

TEMPLATE_TEST_CASE("ConvBN backward again without a forward gives the same dx, gradients add up",
                   "[conv_bn]", float, double) {
  // Most backwards write dz over the saved Z (its last reader): a second backward after the
  // same forward must compute Z anew. Shapes for the igemm, strip, Winograd (both ways of
  // transforming the weights), 1x1 and row families, every mode, with and without ReLU.
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 81 : 82);
  const auto same = fusedcnn::Padding::same();
  const UnitShape shapes[] = {{2, 9, 11, 24, 40, {.kernel = {3, 3}, .padding = same}},
                              {2, 20, 37, 16, 16, {.kernel = {3, 3}, .padding = same}},
                              {2, 16, 18, 64, 64, {.kernel = {3, 3}, .padding = same}},
                              {2, 10, 10, 256, 130, {.kernel = {3, 3}, .padding = same}},
                              {3, 7, 9, 48, 72, {.kernel = {1, 1}}},
                              {2, 13, 21, 2, 2, {.kernel = {3, 3}, .padding = same}}};
  for (const UnitShape& s : shapes)
    for (int mode = 0; mode < 4; ++mode) {
      const bool training = mode % 2 == 0, relu = mode / 2 == 0;
      INFO("shape " << s.n << "," << s.h << "," << s.w << "," << s.c << "->" << s.k
                    << (training ? " train" : " eval") << (relu ? " relu" : ""));
      ConvBN<TestType> f(s.c, s.k, s.o, {}, relu ? Activation::relu : Activation::none);
      support::fill(f.conv().weight(), rng);
      support::fill(f.bn().weight(), rng, 0.5, 1.5);
      support::fill(f.bn().bias(), rng);
      support::fill(f.bn().running_var(), rng, 0.5, 2);
      f.train(training);
      Tensor<TestType> x({s.n, s.h, s.w, s.c});
      support::fill(x, rng);
      const Tensor<TestType> y = f.forward(x);
      Tensor<TestType> dy(y.shape());
      support::fill(dy, rng);
      const Tensor<TestType> dx1 = f.backward(dy);
      const Tensor<TestType> dw1 = f.conv().weight_grad();
      const Tensor<TestType, 1> dg1 = f.bn().weight_grad(), db1 = f.bn().bias_grad();
      const Tensor<TestType> dx2 = f.backward(dy);
      REQUIRE(dx2.shape() == dx1.shape());
      CHECK(std::equal(dx1.data(), dx1.data() + dx1.size(), dx2.data()));
      auto doubled = [](const auto& t) {
        ref::Vec v = ref::to_vec(t);
        for (double& e : v) e *= 2;
        return v;
      };
      CHECK(ref::rel_err(f.conv().weight_grad(), doubled(dw1)) <= tol<TestType>());
      CHECK(ref::rel_err(f.bn().weight_grad(), doubled(dg1)) <= tol<TestType>());
      CHECK(ref::rel_err(f.bn().bias_grad(), doubled(db1)) <= tol<TestType>());
    }
}

TEST_CASE("ConvBN keeps accurate statistics for a channel with mean 1e4", "[conv_bn][numerics]") {
  // The fused statistics come from the conv epilogue's tiles; they must equal the variance of
  // the float z they summarise (computed here in double from a plain Conv2D's output, which
  // has the same bits) to 1e-6, with no cancellation from the 1e4 mean.
  fusedcnn::Conv2DOptions o;
  o.padding = fusedcnn::Padding::same();
  BatchNormOptions bo;
  bo.momentum = 1.0;  // running_var = the unbiased batch variance
  for (const std::size_t k : {2, 40}) {  // row family and igemm tiles
    INFO("channels " << k);
    Conv2D<float> conv(3, k, o);
    for (std::size_t c = 0; c < k; ++c) conv.bias()[c] = c % 2 ? -3e4f : 1e4f;
    Conv2D<float> plain = conv;
    ConvBN<float> f(conv, BatchNorm2D<float>(k, bo), Activation::relu);
    Tensor<float> x({3, 21, 19, 3});
    std::mt19937_64 rng(9);
    support::fill(x, rng);
    f.forward(x);
    const Tensor<float> z = plain.forward(x);
    ref::Vec mean, var;
    ref::moments(ref::to_vec(z), k, mean, var);
    const double rows = static_cast<double>(z.size() / k);
    for (std::size_t c = 0; c < k; ++c) {
      INFO("channel " << c);
      const double want = var[c] * rows / (rows - 1);
      CHECK(std::abs(f.bn().running_var()[c] - want) / want <= 1e-6);
      CHECK(std::abs(f.bn().running_mean()[c] - mean[c]) <= 1e-6 * std::abs(mean[c]));
    }
  }
}

TEST_CASE("ConvBN honours parameters written through the accessors after a forward",
          "[conv_bn]") {
  fusedcnn::Conv2DOptions o;
  o.padding = fusedcnn::Padding::symmetric(1, 1);
  ConvBN<double> f(4, 5, o, {}, Activation::relu);
  std::mt19937_64 rng(3);
  Tensor<double> x({2, 6, 7, 4});
  support::fill(x, rng);
  f.train();
  f.forward(x);  // running statistics now set
  f.eval();
  f.forward(x);  // packs folded weights
  support::fill(f.conv().weight(), rng);
  support::fill(f.bn().running_mean(), rng);
  support::fill(f.bn().running_var(), rng, 0.5, 1.5);
  support::fill(f.bn().weight(), rng);
  const Tensor<double> y = f.forward(x);
  Conv2D<double> conv = f.conv();
  BatchNorm2D<double> bn = f.bn();
  fusedcnn::ReLU<double> relu;
  conv.eval(), bn.eval();
  const Tensor<double> want = relu.forward(bn.forward(conv.forward(x)));
  CHECK(rel(y, want) <= 1e-12);
}

TEST_CASE("ConvBN(conv, bn) checks channels and takes the BN's mode", "[conv_bn]") {
  Conv2D<float> conv(3, 4);
  BatchNorm2D<float> bn(5);
  CHECK_THROWS_AS(ConvBN<float>(conv, bn), fusedcnn::shape_error);
  BatchNorm2D<float> bn4(4);
  bn4.eval();
  ConvBN<float> f(conv, bn4);
  CHECK_FALSE(f.training());
  CHECK_FALSE(f.conv().training());
  f.train();
  CHECK(f.conv().training());
  CHECK(f.bn().training());
}

TEMPLATE_TEST_CASE("fold equals the eval-mode chain", "[fold]", float, double) {
  std::mt19937_64 rng(77);
  for (int i = 0; i < 40; ++i) {
    const support::ConvCase cc = support::random_conv(rng);
    BatchNormOptions bo;
    bo.affine = i % 3 != 0;
    INFO(cc.str() << " affine=" << bo.affine);
    Conv2D<TestType> conv(cc.c, cc.k, cc.opts);
    BatchNorm2D<TestType> bn(cc.k, bo);
    support::fill(bn.running_mean(), rng);
    support::fill(bn.running_var(), rng, 0.5, 2);
    if (bo.affine) {
      support::fill(bn.weight(), rng);
      support::fill(bn.bias(), rng);
    }
    const Tensor<TestType> w_before = conv.weight();
    const Conv2D<TestType> folded = fusedcnn::fold(conv, bn);  // bn in training mode: still running stats
    CHECK(folded.has_bias());
    CHECK_FALSE(folded.training());
    CHECK(rel(conv.weight(), w_before) == 0.0);  // inputs untouched
    Tensor<TestType> x({cc.n, cc.h, cc.w, cc.c});
    support::fill(x, rng);
    Conv2D<TestType> fc = folded;
    conv.eval();
    bn.eval();
    CHECK(rel(fc.forward(x), bn.forward(conv.forward(x))) <= (sizeof(TestType) == 4 ? 1e-5 : 1e-12));
  }
  BatchNormOptions untracked;
  untracked.track_running_stats = false;
  CHECK_THROWS_AS(fusedcnn::fold(Conv2D<TestType>(2, 3), BatchNorm2D<TestType>(3, untracked)),
                  fusedcnn::value_error);
}
