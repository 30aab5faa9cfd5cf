// Conv2D against the naive double reference over random shapes and every option.
#include <catch2/catch.hpp>

#include <fusedcnn/fusedcnn.hpp>

#include "reference/reference.hpp"
#include "support.hpp"

using fusedcnn::Conv2D;
using fusedcnn::Tensor;

namespace {
template <class T>
constexpr double tol() {
  return sizeof(T) == 4 ? 1e-5 : 1e-12;
}

// A square kernel with "same" padding, as the kernel-family tests list their shapes.
struct SquareShape {
  std::size_t n, h, w, c, k, kh, stride, groups;
  support::ConvCase conv_case() const {
    fusedcnn::Conv2DOptions o;
    o.kernel = {kh, kh};
    o.stride = {stride, stride};
    o.padding = fusedcnn::Padding::same();
    o.groups = groups;
    return {n, h, w, c, k, o};
  }
};
// A layer with its own kernel, strides, dilations, padding and groups (the strided cases).
struct StridedCase {
  std::size_t n, h, w, c, k, kh, kw, sh, sw, dh, dw;
  fusedcnn::Padding pad;
  std::size_t groups = 1;
  support::ConvCase conv_case() const {
    fusedcnn::Conv2DOptions o;
    o.kernel = {kh, kw};
    o.stride = {sh, sw};
    o.dilation = {dh, dw};
    o.padding = pad;
    o.groups = groups;
    return {n, h, w, c, k, o};
  }
};
// One forward and backward of a Conv2D with random parameters and data (drawn from rng in
// that order), checked against the double reference: output, dx, weight and bias gradients.
template <class T>
void check_against_reference(const support::ConvCase& cc, std::mt19937_64& rng) {
  INFO(cc.str());
  Conv2D<T> conv(cc.c, cc.k, cc.opts);
  support::fill(conv.weight(), rng);
  support::fill(conv.bias(), rng);
  Tensor<T> x({cc.n, cc.h, cc.w, cc.c});
  support::fill(x, rng);
  const Tensor<T> y = conv.forward(x);
  Tensor<T> dy(y.shape());
  support::fill(dy, rng);
  const Tensor<T> dx = conv.backward(dy);
  const ref::Conv p = cc.problem();
  const ref::Vec xr = ref::to_vec(x), wr = ref::to_vec(conv.weight());
  CHECK(ref::rel_err(y, ref::conv_forward(p, xr, wr, ref::to_vec(conv.bias()))) <= tol<T>());
  const ref::ConvGrads g = ref::conv_backward(p, xr, wr, ref::to_vec(dy));
  CHECK(ref::rel_err(dx, g.dx) <= tol<T>());
  CHECK(ref::rel_err(conv.weight_grad(), g.dw) <= tol<T>());
  CHECK(ref::rel_err(conv.bias_grad(), g.db) <= tol<T>());
}
}  // namespace

TEMPLATE_TEST_CASE("Conv2D forward and backward match the reference on 200 random shapes",
                   "[conv2d][random]", float, double) {
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 101 : 202);
  double worst = 0;
  for (int i = 0; i < 200; ++i) {
    const support::ConvCase cc = support::random_conv(rng);
    INFO("case " << i << ": " << cc.str());
    Conv2D<TestType> conv(cc.c, cc.k, cc.opts);
    support::fill(conv.weight(), rng);
    if (cc.opts.bias) support::fill(conv.bias(), rng);
    Tensor<TestType> x({cc.n, cc.h, cc.w, cc.c});
    support::fill(x, rng);
    const ref::Conv p = cc.problem();
    const ref::Vec xr = ref::to_vec(x), wr = ref::to_vec(conv.weight());
    const ref::Vec br = cc.opts.bias ? ref::to_vec(conv.bias()) : ref::Vec{};

    // Odd calls use the caller-buffer overloads, with buffers of the wrong shape to resize.
    Tensor<TestType> y({1, 1, 1, 1}), dx({2, 1, 1, 1});
    if (i % 2) {
      conv.forward(x, y);
    } else {
      y = conv.forward(x);
    }
    REQUIRE(y.shape() == fusedcnn::Shape<4>{cc.n, p.ho(), p.wo(), cc.k});
    const double ey = ref::rel_err(y, ref::conv_forward(p, xr, wr, br));

    Tensor<TestType> dy(y.shape());
    support::fill(dy, rng);
    if (i % 2) {
      conv.backward(dy, dx);
    } else {
      dx = conv.backward(dy);
    }
    const ref::ConvGrads g = ref::conv_backward(p, xr, wr, ref::to_vec(dy));
    const double edx = ref::rel_err(dx, g.dx), edw = ref::rel_err(conv.weight_grad(), g.dw);
    const double edb = cc.opts.bias ? ref::rel_err(conv.bias_grad(), g.db) : 0.0;
    CHECK(ey <= tol<TestType>());
    CHECK(edx <= tol<TestType>());
    CHECK(edw <= tol<TestType>());
    CHECK(edb <= tol<TestType>());
    worst = std::max({worst, ey, edx, edw, edb});
  }
  WARN("Conv2D<" << (sizeof(TestType) == 4 ? "float" : "double") << "> worst relative error " << worst);
}

TEMPLATE_TEST_CASE("Conv2D gradients accumulate over backward calls until zero_grad",
                   "[conv2d]", float, double) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20; ++i) {
    const support::ConvCase cc = support::random_conv(rng);
    INFO(cc.str());
    Conv2D<TestType> conv(cc.c, cc.k, cc.opts);
    Tensor<TestType> x({cc.n, cc.h, cc.w, cc.c});
    support::fill(x, rng);
    const Tensor<TestType> y = conv.forward(x);
    Tensor<TestType> dy(y.shape());
    support::fill(dy, rng);
    const ref::Conv p = cc.problem();
    const ref::ConvGrads g = ref::conv_backward(p, ref::to_vec(x), ref::to_vec(conv.weight()), ref::to_vec(dy));
    conv.backward(dy);
    conv.backward(dy);
    ref::Vec twice = g.dw;
    for (double& v : twice) v *= 2;
    CHECK(ref::rel_err(conv.weight_grad(), twice) <= tol<TestType>());
    if (cc.opts.bias) {
      ref::Vec db2 = g.db;
      for (double& v : db2) v *= 2;
      CHECK(ref::rel_err(conv.bias_grad(), db2) <= tol<TestType>());
    }
    conv.zero_grad();
    for (std::size_t j = 0; j < conv.weight_grad().size(); ++j) REQUIRE(conv.weight_grad().data()[j] == 0);
    conv.backward(dy);
    CHECK(ref::rel_err(conv.weight_grad(), g.dw) <= tol<TestType>());
  }
}

TEST_CASE("Conv2D on larger shapes exercises every kernel family", "[conv2d][families]") {
  // igemm wide/narrow tiles, the row family (also for the data gradient of few input
  // channels), depthwise and pointwise paths, several chunks; merged and unmerged gathers
  // (kw*C on both sides of the merge limit), the transposed weight-gradient tile, the
  // 8-channel row tile, a long one-tap GEMM, and many output channels on few pixels (the
  // weight gradient split over output-channel parts).
  const SquareShape shapes[] = {{2, 19, 23, 37, 70, 3, 1, 1}, {1, 31, 29, 3, 5, 3, 2, 1},
                          {2, 17, 41, 24, 24, 3, 1, 24}, {2, 16, 16, 64, 48, 1, 1, 1},
                          {1, 40, 37, 2, 2, 5, 1, 1},    {2, 13, 13, 12, 18, 3, 1, 6},
                          {2, 23, 21, 3, 40, 7, 2, 1},   {1, 17, 19, 2, 100, 3, 1, 1},
                          {2, 20, 22, 16, 16, 3, 1, 1},  {2, 18, 21, 8, 8, 3, 1, 1},
                          {2, 14, 15, 8, 7, 3, 1, 1},    {1, 9, 11, 48, 20, 3, 1, 1},
                          {1, 9, 11, 70, 20, 3, 1, 1},   {2, 10, 12, 256, 40, 1, 1, 1},
                          {1, 4, 5, 48, 200, 3, 1, 1},   {1, 30, 26, 5, 13, 5, 1, 1}};
  std::mt19937_64 rng(11);
  for (const SquareShape& s : shapes) check_against_reference<float>(s.conv_case(), rng);
}

TEMPLATE_TEST_CASE("Conv2D sees weight writes made through a pointer taken before its forward",
                   "[conv2d][families]", float, double) {
  // The igemm forward packs the HWIO weights panel block by panel block as it runs (nothing
  // packed is kept between calls), so a write through a pointer taken long before a forward
  // must show in the next one. Many channels on few pixels, ungrouped and grouped, stride 1
  // and 2, full and partial panels.
  const SquareShape shapes[] = {{1, 7, 9, 40, 64, 3, 1, 1},
                          {2, 6, 7, 32, 128, 3, 1, 2},
                          {1, 9, 8, 24, 96, 3, 2, 1},
                          {3, 4, 4, 64, 32, 1, 1, 1}};
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 31 : 32);
  for (const SquareShape& s : shapes) {
    const support::ConvCase cc = s.conv_case();
    INFO(cc.str());
    Conv2D<TestType> conv(s.c, s.k, cc.opts);
    TestType* w = conv.weight().data();
    Tensor<TestType> x({s.n, s.h, s.w, s.c});
    support::fill(x, rng);
    const ref::Conv p = cc.problem();
    for (int round = 0; round < 2; ++round) {
      if (round == 1)  // through the pointer taken before the first forward
        for (std::size_t i = 0; i < conv.weight().size(); i += 7) w[i] = -w[i] + TestType(0.25);
      const Tensor<TestType> y = conv.forward(x);
      const ref::Vec xr = ref::to_vec(x), wr = ref::to_vec(conv.weight());
      const ref::Vec yr = ref::conv_forward(p, xr, wr, ref::to_vec(conv.bias()));
      CHECK(ref::rel_err(y, yr) <= tol<TestType>());
    }
    Tensor<TestType> dy(conv.forward(x).shape());
    support::fill(dy, rng);
    const Tensor<TestType> dx = conv.backward(dy);
    const ref::ConvGrads g =
        ref::conv_backward(p, ref::to_vec(x), ref::to_vec(conv.weight()), ref::to_vec(dy));
    CHECK(ref::rel_err(dx, g.dx) <= tol<TestType>());
    CHECK(ref::rel_err(conv.weight_grad(), g.dw) <= tol<TestType>());
  }
}

TEMPLATE_TEST_CASE("Conv2D row family with strides that skip input rows and column phases",
                   "[conv2d][families]", float, double) {
  // Few channels (the row family): 1x1 stride 2 reads one row parity and one column phase,
  // stride 3 over a 2-tap kernel skips every third row, even dilation with stride 2 reads
  // even rows and phases only, and a stride past the kernel's reach with bottom padding. The
  // rows and phases no tap reads are never made planar; the weight gradient reads the same.
  const StridedCase cases[] = {{5, 15, 12, 1, 2, 1, 1, 2, 2, 1, 1, {1, 1, 1, 1}},
                               {2, 17, 19, 2, 3, 2, 2, 3, 3, 1, 1, {0, 2, 1, 0}},
                               {3, 14, 16, 1, 1, 3, 3, 2, 2, 2, 2, {2, 2, 2, 2}},
                               {2, 13, 11, 3, 2, 2, 1, 4, 3, 1, 1, {0, 3, 0, 1}}};
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 51 : 52);
  for (const StridedCase& s : cases) check_against_reference<TestType>(s.conv_case(), rng);
}

TEMPLATE_TEST_CASE("Conv2D row family on rows wider than a chunk and chunks across images",
                   "[conv2d][families]", float, double) {
  // The row family makes planar input rows per thread, in a window of the rows a chunk of
  // output rows reads. Rows of 257+ pixels make a chunk a single output row, so the window
  // holds exactly one output row's taps; short images put a chunk's rows in two images.
  // Dilation and strides spread the taps over more rows than the kernel has.
  const StridedCase cases[] = {{2, 5, 300, 2, 2, 3, 3, 1, 1, 1, 1, {1, 1, 1, 1}},
                               {1, 7, 270, 1, 3, 3, 3, 1, 1, 2, 1, {2, 2, 1, 1}},
                               {2, 9, 520, 3, 2, 3, 2, 2, 1, 1, 1, {1, 0, 1, 1}},
                               {7, 2, 9, 2, 4, 3, 3, 1, 1, 1, 1, {1, 1, 1, 1}},
                               {5, 4, 6, 1, 2, 2, 3, 3, 1, 2, 1, {1, 2, 1, 1}}};
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 61 : 62);
  for (const StridedCase& s : cases) {
    const support::ConvCase cc = s.conv_case();
    // the row family takes up to half a vector of output channels: all of these where the
    // build's vectors are wide enough (AVX2, AVX-512), fewer in the generic build
    if (2 * s.k <= fusedcnn::kernels::RowVec<TestType>::lanes)
      REQUIRE(fusedcnn::ops::use_rows<TestType>(
          fusedcnn::ops::make_geometry({s.n, s.h, s.w, s.c}, s.k, cc.opts)));
    check_against_reference<TestType>(cc, rng);
  }
}

TEMPLATE_TEST_CASE("Conv2D igemm data gradient of strided layers, one class of input pixels at a time",
                   "[conv2d][families]", float, double) {
  // Many channels (the igemm family): the data gradient runs each class of input pixels
  // (h + pt mod sh, w + pl mod sw) over only the taps that reach it. 3x3 stride 2 (classes of
  // 4, 2, 2 and 1 taps), a stride past a dilated kernel's taps (classes no tap reaches, whose
  // dx must still be written), unequal strides, grouped 5x5, and a height the stride does not
  // divide, so classes differ in size.
  const StridedCase cases[] = {{2, 15, 13, 40, 36, 3, 3, 2, 2, 1, 1, {1, 1, 1, 1}},
                               {1, 16, 17, 33, 48, 2, 2, 3, 3, 2, 1, {0, 2, 1, 0}},
                               {2, 11, 14, 36, 40, 3, 3, 2, 1, 1, 1, {1, 1, 1, 1}},
                               {1, 13, 12, 64, 64, 5, 5, 2, 3, 1, 1, {2, 2, 2, 2}, 2},
                               {2, 9, 10, 48, 40, 3, 2, 3, 2, 2, 2, {2, 0, 1, 1}}};
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 71 : 72);
  for (const StridedCase& s : cases) {
    const support::ConvCase cc = s.conv_case();
    const auto g = fusedcnn::ops::make_geometry({s.n, s.h, s.w, s.c}, s.k, cc.opts);
    const fusedcnn::ops::ConvPlan plan = fusedcnn::ops::plan_backward_data<TestType>(g);
    REQUIRE(!plan.by_rows);
    REQUIRE(!plan.by_strips);
    REQUIRE(!plan.by_depthwise);
    check_against_reference<TestType>(cc, rng);
  }
}

TEMPLATE_TEST_CASE("Conv2D strided and padded 1x1 layers",
                   "[conv2d][families]", float, double) {
  // Run as an igemm, a 1x1 kernel that strides or pads reads one input pixel (or padding) per
  // output pixel, and its weight gradient gathers the same pixels from the kept x (all of it,
  // lent, even when the forward's input was a temporary). Ungrouped and grouped, stride 2 and
  // 3, padding with stride 1 (the border outputs read only zeros), partial tiles.
  struct Case {
    std::size_t n, h, w, c, k, sh, sw, groups;
    fusedcnn::Padding pad;
  };
  const Case cases[] = {{2, 13, 11, 40, 48, 2, 2, 1, {}},
                        {1, 9, 14, 48, 64, 3, 2, 2, {1, 0, 2, 1}},
                        {2, 6, 7, 36, 40, 1, 1, 1, {1, 2, 0, 1}},
                        {3, 8, 9, 64, 72, 2, 3, 4, {0, 1, 1, 0}}};
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 61 : 62);
  for (const Case& s : cases) {
    fusedcnn::Conv2DOptions o;
    o.kernel = {1, 1};
    o.stride = {s.sh, s.sw};
    o.padding = s.pad;
    o.groups = s.groups;
    const auto g = fusedcnn::ops::make_geometry({s.n, s.h, s.w, s.c}, s.k, o);
    const auto plan = fusedcnn::ops::plan_forward<TestType>(g);
    REQUIRE(!(plan.by_rows || plan.by_depthwise || plan.by_strips || plan.by_dot));
    check_against_reference<TestType>({s.n, s.h, s.w, s.c, s.k, o}, rng);
    Conv2D<TestType> conv(s.c, s.k, o);
    conv.forward(Tensor<TestType>({s.n, s.h, s.w, s.c}, TestType(1)));
    CHECK(conv.saved_bytes() == s.n * s.h * s.w * s.c * sizeof(TestType));
  }
}

TEMPLATE_TEST_CASE("Conv2D strips: about one vector of output channels along unit-stride rows",
                   "[conv2d][families]", float, double) {
  // Output channels between half a vector and one (9-16 floats, 5-8 doubles on AVX-512; the
  // other builds have other widths, and these shapes then exercise their own families),
  // kernel widths 2-7, vertical stride and dilation, asymmetric padding (also wider than the
  // kernel), rows that end in a partial strip, and a row narrower than one strip; with about
  // one vector of input channels and unit strides the data gradient runs as strips too.
  struct Case {
    std::size_t n, h, w, c, k, kh, kw, sh, dh;
    fusedcnn::Padding pad;
  };
  const Case cases[] = {{2, 11, 37, 5, 12, 3, 3, 1, 1, {1, 1, 1, 1}},
                        {1, 13, 21, 16, 16, 3, 5, 2, 1, {2, 0, 1, 3}},
                        {2, 9, 40, 3, 7, 2, 7, 1, 2, {0, 1, 3, 3}},
                        {1, 8, 6, 9, 13, 3, 2, 1, 1, {1, 1, 0, 1}},
                        {3, 6, 33, 1, 6, 5, 4, 1, 1, fusedcnn::Padding::same()},
                        {1, 10, 19, 24, 15, 3, 3, 3, 2, {2, 2, 1, 1}},
                        {1, 12, 30, 12, 10, 3, 3, 1, 2, {2, 1, 4, 0}},
                        {2, 7, 18, 14, 9, 2, 4, 1, 1, {0, 0, 0, 5}}};
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 41 : 42);
  for (const Case& s : cases) {
    fusedcnn::Conv2DOptions o;
    o.kernel = {s.kh, s.kw};
    o.stride = {s.sh, 1};
    o.dilation = {s.dh, 1};
    o.padding = s.pad;
    check_against_reference<TestType>({s.n, s.h, s.w, s.c, s.k, o}, rng);
  }
}

TEMPLATE_TEST_CASE("Conv2D dot family: few output channels on many input channels",
                   "[conv2d][families]", float, double) {
  // Groups of at most kernels::dot_max_kb output channels (8 on AVX-512: half a vector of
  // floats, a whole one of doubles) with more than 16 input channels:
  // merged gathers (edge windows copied), unmerged ones (kw*C past the merge limit), strides,
  // dilation, asymmetric padding, a plain GEMM and a strided padded 1x1, groups (runs read
  // from an offset), every tile width from 1 to 8 output channels and runs that end in a
  // partial vector (kc = 17, 37, 70, ...). Layers where the dot tile would do more FMAs per
  // pixel than the igemm tile, and groups too wide for a build's vectors, run through the
  // other families.
  struct Case {
    std::size_t n, h, w, c, k, kh, kw, sh, sw, dh, dw;
    fusedcnn::Padding pad;
    std::size_t groups = 1;
  };
  const Case cases[] = {{2, 15, 17, 40, 6, 3, 3, 1, 1, 1, 1, fusedcnn::Padding::same()},
                        {1, 13, 11, 70, 3, 3, 3, 2, 2, 1, 1, {1, 1, 1, 1}},
                        {2, 9, 10, 37, 1, 1, 1, 1, 1, 1, 1, {}},
                        {1, 10, 12, 33, 8, 1, 1, 2, 2, 1, 1, {1, 0, 1, 1}},
                        {2, 11, 13, 48, 8, 3, 3, 1, 1, 1, 1, fusedcnn::Padding::same(), 2},
                        {1, 16, 14, 17, 5, 3, 2, 1, 2, 2, 1, {2, 1, 0, 3}},
                        {2, 12, 9, 20, 7, 2, 3, 1, 1, 1, 2, {0, 1, 2, 2}},
                        {1, 7, 29, 19, 2, 5, 5, 1, 1, 1, 1, {2, 2, 2, 2}},
                        {3, 6, 7, 100, 4, 3, 3, 1, 1, 1, 1, {1, 1, 1, 1}, 4}};
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 51 : 52);
  std::size_t by_dot = 0;
  for (const Case& s : cases) {
    fusedcnn::Conv2DOptions o;
    o.kernel = {s.kh, s.kw};
    o.stride = {s.sh, s.sw};
    o.dilation = {s.dh, s.dw};
    o.padding = s.pad;
    o.groups = s.groups;
    const support::ConvCase cc{s.n, s.h, s.w, s.c, s.k, o};
    const auto g = fusedcnn::ops::make_geometry({s.n, s.h, s.w, s.c}, s.k, o);
    by_dot += fusedcnn::ops::plan_forward<TestType>(g).by_dot;
    check_against_reference<TestType>(cc, rng);
  }
  if (fusedcnn::kernels::dot_max_kb<TestType> >= 4) CHECK(by_dot >= 5);
}

TEMPLATE_TEST_CASE("Conv2D Winograd family: 3x3 stride-1 layers of many channels",
                   "[conv2d][families][winograd]", float, double) {
  // F(2x2, 3x3) forward, data gradient (the correlation of dz with the turned weights,
  // padded 2 - p: negative past 2) and weight gradient (summed over the output's tiles):
  // odd output heights and widths (one-row tile rows, one-column tiles), chunks and blocks
  // that cross image boundaries (7- and 9-row images), every padding from 0 to 4 and
  // asymmetric sides, channel counts that end in a partial vector on both sides (and input
  // channels in blocks of every width for the weight-gradient kernel), a group's narrow last
  // panel, enough layers for several chunks per thread, and transformed weights that stream
  // from memory (the point GEMMs fetch the next panel ahead, and chunks grow), and weight-
  // gradient sums D that fill the L2 (in larger blocks: 120 -> 120 in double, 230 -> 120 in
  // float).
  struct Case {
    std::size_t n, h, w, c, k;
    fusedcnn::Padding pad;
  };
  const Case cases[] = {{2, 33, 31, 20, 35, fusedcnn::Padding::same()},
                        {3, 29, 30, 64, 64, {1, 1, 1, 1}},
                        {2, 32, 27, 33, 50, {0, 2, 2, 0}},
                        {1, 40, 38, 24, 24, fusedcnn::Padding::valid()},
                        {6, 9, 9, 40, 48, {2, 2, 2, 2}},
                        {16, 7, 8, 64, 56, {1, 1, 0, 1}},
                        {2, 25, 24, 17, 72, {1, 0, 1, 1}},
                        {1, 30, 33, 96, 9, {1, 1, 1, 1}},
                        {2, 12, 12, 40, 40, {3, 1, 4, 0}},
                        {2, 14, 13, 200, 190, {1, 1, 1, 1}},
                        {2, 16, 15, 120, 120, {1, 1, 1, 1}},
                        {2, 15, 16, 230, 120, {1, 1, 1, 1}}};
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 61 : 62);
  std::size_t by_winograd = 0, data_by_winograd = 0, weights_by_winograd = 0;
  for (const Case& s : cases) {
    fusedcnn::Conv2DOptions o;
    o.kernel = {3, 3};
    o.padding = s.pad;
    const auto g = fusedcnn::ops::make_geometry({s.n, s.h, s.w, s.c}, s.k, o);
    const bool forward = fusedcnn::ops::plan_forward<TestType>(g).by_winograd;
    by_winograd += forward;
    data_by_winograd += fusedcnn::ops::plan_backward_data<TestType>(g).by_winograd;
    weights_by_winograd += fusedcnn::ops::use_winograd_for_weights<TestType>(g, forward);
    check_against_reference<TestType>({s.n, s.h, s.w, s.c, s.k, o}, rng);
  }
  CHECK(by_winograd >= 7);
  CHECK(data_by_winograd >= 6);
  CHECK(weights_by_winograd >= 6);
}

TEMPLATE_TEST_CASE("Conv2D Winograd family with the weights transformed panel by panel",
                   "[conv2d][families][winograd]", float, double) {
  // Many channels over few tiles: the forward (and the data gradient, the correlation of dz
  // with the turned weights) transforms the weights one panel of output channels and one
  // block of input channels at a time as the point GEMMs use them, and adds the blocks'
  // products up. Two blocks of input channels (150, 256, 300, 384), a narrow last
  // panel (200, 100, 72, 130), tiles in one chunk and in two (chunks across images), odd
  // heights and widths, asymmetric padding. Which shapes take this path depends on the type
  // and on the build's tile; on AVX-512 there are three or more of each type, with two chunks
  // in at least one.
  struct Case {
    std::size_t n, h, w, c, k;
    fusedcnn::Padding pad;
  };
  const Case cases[] = {{8, 8, 5, 384, 72, fusedcnn::Padding::same()},
                        {3, 6, 6, 150, 200, fusedcnn::Padding::same()},
                        {3, 7, 9, 300, 100, {1, 0, 1, 1}},
                        {2, 11, 12, 256, 72, fusedcnn::Padding::same()},
                        {4, 13, 7, 160, 100, fusedcnn::Padding::same()},
                        {2, 10, 10, 256, 130, fusedcnn::Padding::same()}};
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 63 : 64);
  std::size_t by_panels = 0, chunked = 0, data_by_panels = 0;
  for (const Case& s : cases) {
    fusedcnn::Conv2DOptions o;
    o.kernel = {3, 3};
    o.padding = s.pad;
    const auto g = fusedcnn::ops::make_geometry({s.n, s.h, s.w, s.c}, s.k, o);
    const fusedcnn::ops::ConvPlan plan = fusedcnn::ops::plan_forward<TestType>(g);
    by_panels += plan.winograd_panels;
    chunked += plan.winograd_panels && plan.chunks > 1;
    data_by_panels += fusedcnn::ops::plan_backward_data<TestType>(g).winograd_panels;
    check_against_reference<TestType>({s.n, s.h, s.w, s.c, s.k, o}, rng);
  }
  CHECK(by_panels >= 1);
  CHECK(data_by_panels >= 1);
  if (fusedcnn::kernels::lanes<TestType> * sizeof(TestType) == 64) {
    CHECK(by_panels >= 3);
    CHECK(chunked >= 1);
  }
}
