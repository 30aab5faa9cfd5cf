// The shapes of one convolution, the scratch it reuses, and the plan that says which kernel
// family runs it and how its output rows are split into fixed reduction chunks.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <vector>

#include "fusedcnn/core/options.hpp"
#include "fusedcnn/core/tensor.hpp"
#include "fusedcnn/core/threading.hpp"
#include "fusedcnn/kernels/igemm.hpp"

namespace fusedcnn::ops {

// Everything about one convolution's shapes; padding already resolved to explicit sides.
struct ConvGeometry {
  std::size_t n = 0, h = 0, w = 0, c = 0;  // input
  std::size_t ho = 0, wo = 0, k = 0;       // output
  std::size_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
  std::size_t pt = 0, pb = 0, pl = 0, pr = 0;
  std::size_t groups = 1;

  std::size_t cg() const noexcept { return c / groups; }
  std::size_t kg() const noexcept { return k / groups; }
  std::size_t taps() const noexcept { return kh * kw; }
  std::size_t pixels() const noexcept { return n * ho * wo; }
  std::size_t in_pixels() const noexcept { return n * h * w; }
  Shape<4> in_shape() const noexcept { return {n, h, w, c}; }
  Shape<4> out_shape() const noexcept { return {n, ho, wo, k}; }
  Shape<4> weight_shape() const noexcept { return {kh, kw, cg(), k}; }
  // A 1x1, stride-1, unpadded convolution: a plain GEMM over pixels.
  bool pointwise() const noexcept {
    return kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt + pb + pl + pr == 0;
  }
  double flops() const noexcept {
    return 2.0 * static_cast<double>(pixels()) * static_cast<double>(k) *
           static_cast<double>(taps() * cg());
  }
  // Work of one pass, in the units of detail::serial_work_limit: FMAs, plus the activations
  // moved (each costs about as much as 8 FMAs).
  double work() const noexcept {
    return flops() / 2 + 8.0 * static_cast<double>(in_pixels() * c + pixels() * k);
  }
  // Whether a pass is small enough to run on one thread.
  bool serial() const noexcept { return work() < ::fusedcnn::detail::serial_work_limit; }
};

namespace detail {
// Padding {before, after} along one axis for the given mode; TensorFlow's rule for `same`.
inline std::array<std::size_t, 2> resolve_padding(PaddingMode mode, std::size_t before,
                                                  std::size_t after, std::size_t in,
                                                  std::size_t extent, std::size_t stride) {
  switch (mode) {
    case PaddingMode::valid:
      return {0, 0};
    case PaddingMode::same: {
      const std::size_t out = (in + stride - 1) / stride;
      const std::size_t need = (out ? out - 1 : 0) * stride + extent;
      const std::size_t total = need > in ? need - in : 0;
      return {total / 2, total - total / 2};
    }
    case PaddingMode::explicit_sides:
      break;
  }
  return {before, after};
}

// Output extent along one axis; 0 when the dilated kernel does not fit the padded input.
inline std::size_t out_extent(std::size_t in, std::size_t before, std::size_t after,
                              std::size_t extent, std::size_t stride) {
  const std::size_t padded = in + before + after;
  return padded < extent ? 0 : (padded - extent) / stride + 1;
}
}  // namespace detail

// Geometry of x (N,H,W,C) convolved to `out_channels`. Options are assumed valid (nn/ checks
// them first); ho or wo is 0 when the kernel does not fit.
inline ConvGeometry make_geometry(const Shape<4>& x, std::size_t out_channels,
                                  const Conv2DOptions& o) {
  ConvGeometry g;
  g.n = x[0], g.h = x[1], g.w = x[2], g.c = x[3], g.k = out_channels;
  g.kh = o.kernel[0], g.kw = o.kernel[1];
  g.sh = o.stride[0], g.sw = o.stride[1];
  g.dh = o.dilation[0], g.dw = o.dilation[1];
  g.groups = o.groups;
  const std::size_t eh = g.dh * (g.kh - 1) + 1, ew = g.dw * (g.kw - 1) + 1;
  const auto [pt, pb] =
      detail::resolve_padding(o.padding.mode, o.padding.top, o.padding.bottom, g.h, eh, g.sh);
  const auto [pl, pr] =
      detail::resolve_padding(o.padding.mode, o.padding.left, o.padding.right, g.w, ew, g.sw);
  g.pt = pt, g.pb = pb, g.pl = pl, g.pr = pr;
  g.ho = detail::out_extent(g.h, pt, pb, eh, g.sh);
  g.wo = detail::out_extent(g.w, pl, pr, ew, g.sw);
  return g;
}

// Scratch a convolution reuses from call to call (owned by the layer, never by the op).
template <class T>
struct ConvWorkspace {
  Tensor<T, 1> packed;             // weights packed for the kernel family of the plan
  // igemm family: the HWIO weights (and per-output-channel scale) its drivers pack panel
  // block by panel block as they go, each thread into its slice of `packed`, and the block
  // each thread's slice holds.
  const T* weights = nullptr;
  const T* scale = nullptr;
  std::vector<std::size_t> packed_block;
  Tensor<T, 1> zeros;              // the shared zero row padding points at
  Tensor<T, 1> partial;            // per-chunk weight-gradient partial sums
  Tensor<double, 1> bias_partial;  // per-chunk bias-gradient partial sums
  std::vector<const T*> rows;      // per-thread row pointers of one tile
  Tensor<T, 1> windows;            // per-thread copies of gather windows that cross padding
  Tensor<T, 1> dz_panels;          // per-thread weight-gradient dz panels of a pixel block
  // Row family only: the planar copy of dz, per-thread row scratch (and windows of planar
  // input rows); tap offsets (and the taps of one pixel class in the strided igemm data
  // gradient).
  Tensor<T, 1> planar_dz, scratch;
  const T* planar_dz_of = nullptr;  // the dz planar_dz was made from (one backward)
  std::vector<std::size_t> offsets;
  std::vector<std::size_t> window_tags;  // row family: the input row each window slot holds
  // Winograd family: the transformed weights, and per-thread transformed tiles, products,
  // output rows and weight-gradient sums.
  Tensor<T, 1> transformed, tile_scratch;
};

// Per-thread data that threads write all the time sits whole pages apart. A line of padding
// is not enough: the L2 prefetchers fetch lines next to the ones a core touches, up to the
// end of their page, and so kept taking lines of the other thread's data (a 2-channel
// forward on 2 threads ran 1.4x its 1-thread speed with rows and window tags a line apart,
// 2.0x with them a page apart).
inline constexpr std::size_t thread_gap_bytes = 4096;

// n values of E rounded up to whole pages, and a page more: the stride of such data.
template <class E>
constexpr std::size_t thread_padded(std::size_t n) noexcept {
  constexpr std::size_t page = thread_gap_bytes / sizeof(E);
  return (n + page - 1) / page * page + page;
}

// Per-thread slots of a workspace vector of pointer-sized values (row pointers, window
// tags) for n each: thread tid's start at thread_slot_offset(tid, n) in a vector of
// thread_slots_len(threads, n), thread_padded apart with a page before the first, so no
// thread's slots are near another's or near whatever the heap put next to the vector.
inline constexpr std::size_t slot_page = thread_gap_bytes / sizeof(void*);
inline std::size_t thread_slots(std::size_t n) noexcept { return thread_padded<void*>(n); }
inline std::size_t thread_slots_len(std::size_t threads, std::size_t n) noexcept {
  return threads * thread_slots(n) + slot_page;
}
inline std::size_t thread_slot_offset(std::size_t tid, std::size_t n) noexcept {
  return slot_page + tid * thread_slots(n);
}

// Rows of `width` pixels per reduction chunk of the row and strip families: about 256
// pixels, whole rows.
inline std::size_t rows_per_chunk(std::size_t width) noexcept {
  return std::max<std::size_t>(1, (256 + width - 1) / std::max<std::size_t>(1, width));
}

// Tiles per chunk of a tiled pass (igemm, dot) of `tiles` tiles whose work items are
// (column block, chunk) pairs over `blocks` column blocks: 16, or fewer when the pass has few
// tiles and few blocks, so that it still comes in about 32 items for the threads to share
// (a 120 -> 6 channel layer of 52 tiles in chunks of 16 was 4 items, 2 and 2 with the last
// one short: the 2-thread forward ran 1.4x its 1-thread speed). A function of the shape
// alone, so per-chunk partial sums (the fused statistics epilogue) never depend on the
// thread count.
inline constexpr std::size_t max_tiles_per_chunk = 16;
inline std::size_t tiles_per_chunk(std::size_t tiles, std::size_t blocks) noexcept {
  constexpr std::size_t items = 32;
  const std::size_t chunks = (items + blocks - 1) / blocks;
  return std::clamp<std::size_t>((tiles + chunks - 1) / chunks, 1, max_tiles_per_chunk);
}

// How one convolution pass is run: by the igemm, dot or Winograd family (register tile
// `tile`), the row family (`row_nv` vectors of pixels per tile), the strip or the depthwise
// drivers, and its rows grouped in reduction chunks: chunk c holds rows [c * chunk_rows,
// (c + 1) * chunk_rows), a function of the shape alone.
struct ConvPlan {
  bool by_rows = false;
  bool by_depthwise = false;
  bool by_strips = false;
  bool by_dot = false;
  bool by_winograd = false;
  bool winograd_panels = false;  // Winograd, weights transformed panel by panel as they are used
  kernels::TileShape tile{};
  std::size_t row_nv = 0;
  std::size_t rows = 0;        // M: output pixels (forward) or input pixels (backward-data)
  std::size_t chunk_rows = 0;  // rows per chunk
  std::size_t chunks = 0;
};

namespace detail {

// Calls f.template operator()<M>(c0) over channel blocks [c0, c0 + M) covering [0, cg)
// exactly, M from {MR, 8, 4, 2, 1}, so the kernel never reads past a group's channels.
template <std::size_t MR, class F>
void for_exact_blocks(std::size_t cg, F&& f) {
  std::size_t c0 = 0;
  while (c0 < cg) {
    const std::size_t rem = cg - c0;
    if (rem >= MR) {
      f.template operator()<MR>(c0);
      c0 += MR;
    } else if (MR > 8 && rem >= 8) {
      f.template operator()<(MR > 8 ? 8 : 1)>(c0);
      c0 += MR > 8 ? 8 : 1;
    } else if (MR > 4 && rem >= 4) {
      f.template operator()<(MR > 4 ? 4 : 1)>(c0);
      c0 += MR > 4 ? 4 : 1;
    } else if (MR > 2 && rem >= 2) {
      f.template operator()<(MR > 2 ? 2 : 1)>(c0);
      c0 += MR > 2 ? 2 : 1;
    } else {
      f.template operator()<1>(c0);
      c0 += 1;
    }
  }
}

// Grows the shared zero row to at least len elements.
template <class T>
void ensure_zeros(ConvWorkspace<T>& ws, std::size_t len) {
  if (ws.zeros.size() < len) ws.zeros = Tensor<T, 1>({len});
}

// Grows t to at least len elements (contents not kept) and returns its data.
template <class T>
T* ensure_len(Tensor<T, 1>& t, std::size_t len) {
  if (t.size() < len) t = Tensor<T, 1>({len}, ::fusedcnn::detail::uninitialized);
  return t.data();
}

// Per-thread scratch of n values for each thread in buf, thread_padded apart.
template <class T>
class ThreadScratch {
 public:
  ThreadScratch(Tensor<T, 1>& buf, std::size_t n)
      : stride_(n ? thread_padded<T>(n) : 0),
        base_(ensure_len(buf, ::fusedcnn::detail::max_threads() * stride_)) {}
  // Thread tid's values (tid as detail::thread_index gives it).
  T* of(std::size_t tid) const noexcept { return base_ + tid * stride_; }
  // The calling thread's values.
  T* mine() const noexcept { return of(::fusedcnn::detail::thread_index()); }

 private:
  std::size_t stride_;
  T* base_;
};

// dw[e] += sum over chunks of partial[chunk][e], chunks added in order (so the result does
// not depend on which thread made which partial), in parallel over blocks of elements.
template <class T>
void add_chunk_partials(const T* partial, std::size_t nchunks, std::size_t len, T* dw) {
  constexpr std::size_t block = 1024;
  ::fusedcnn::detail::parallel_for((len + block - 1) / block, [&](std::size_t bi) {
    const std::size_t e1 = std::min(len, (bi + 1) * block);
    for (std::size_t e = bi * block; e < e1; ++e) {
      T s = partial[e];
      for (std::size_t ci = 1; ci < nchunks; ++ci) s += partial[ci * len + e];
      dw[e] += s;
    }
  });
}

// s[k] = sum over the n pixels of v (n x K, NHWC) of channel k, in double. Fewer than 32
// channels are summed as super-rows of K * (64 / K) values (independent accumulators, whole
// vectors), folded per channel after.
template <class T>
void channel_sums(const T* v, std::size_t n, std::size_t K, double* s) noexcept {
  std::fill_n(s, K, 0.0);
  const std::size_t R = K < 32 ? K * (64 / K) : 0, S = R ? n * K / R : 0;
  if (S) {
    double acc[64] = {};
    for (std::size_t i = 0; i < S; ++i) {
      FUSEDCNN_IVDEP
      for (std::size_t j = 0; j < R; ++j) acc[j] += static_cast<double>(v[i * R + j]);
    }
    for (std::size_t k = 0; k < K; ++k)
      for (std::size_t j = k; j < R; j += K) s[k] += acc[j];
  }
  for (std::size_t i = S * R / K; i < n; ++i) {
    FUSEDCNN_IVDEP
    for (std::size_t k = 0; k < K; ++k) s[k] += static_cast<double>(v[i * K + k]);
  }
}

// db[k] += sum over chunks of part[chunk * K + k] (channel_sums of fixed chunks), chunks
// added in order in double, so the result does not depend on the thread count.
template <class T>
void add_channel_sums(const double* part, std::size_t chunks, std::size_t K, T* db) noexcept {
  for (std::size_t k = 0; k < K; ++k) {
    double t = 0.0;
    for (std::size_t ci = 0; ci < chunks; ++ci) t += part[ci * K + k];
    db[k] += static_cast<T>(t);
  }
}

}  // namespace detail
}  // namespace fusedcnn::ops
