// Row pointers of the forward gather (for each output pixel and tap, where in x the kernel
// reads its contraction run; shared by the forward igemm and the weight gradient) and of the
// transposed gather of the data gradient (where in dz, for each input pixel and tap).
//
// With one group and unit horizontal dilation, the kw taps of one kernel row read kw*C
// consecutive values of x (NHWC), and the HWIO weights of that kernel row are kw*C
// consecutive rows too: the gather merges them into one run (taps = kh, kc = kw*C). That
// cuts the pointers built and chased per FMA by kw, which is what bounds few-channel
// convolutions (C = 3 stems, C = 8..16 layers). A pixel whose window crosses the left or
// right padding gets its runs copied, zero-filled, into a scratch window instead.
#pragma once

#include <algorithm>
#include <cstddef>

#include "fusedcnn/core/threading.hpp"
#include "fusedcnn/ops/conv_geometry.hpp"

namespace fusedcnn::ops {

// Longest merged run: kw*C values (a window row in scratch stays small; more channels gain
// little as the pointer cost is already spread over many FMAs).
inline constexpr std::size_t gather_merge_limit = 192;

// The contraction as the kernel sees it: taps runs of kc values per output pixel.
struct GatherShape {
  std::size_t taps, kc;
  bool merged;
  // Scratch values one pixel may need for its copied (edge) windows.
  std::size_t window_len(const ConvGeometry& g) const noexcept { return merged ? g.kh * kc : 0; }
};

inline GatherShape forward_gather_shape(const ConvGeometry& g) noexcept {
  if (g.groups == 1 && g.dw == 1 && g.kw > 1 && g.kw * g.c <= gather_merge_limit)
    return {g.kh, g.kw * g.c, true};
  return {g.taps(), g.cg(), false};
}

// dst = the kw runs of C values at columns first - lead + b (b < kw) of a row of `width`
// columns, zeros for the columns outside it (first - lead may be negative, so both stay
// unsigned until compared).
template <class T>
void copy_window(const T* row, std::size_t first, std::size_t lead, std::size_t width,
                 std::size_t kw, std::size_t C, T* dst) {
  // Columns b0..b1-1 of the window lie in the row: one copy between two zero fills.
  const std::size_t b0 = std::min(kw, lead > first ? lead - first : 0);
  const std::size_t b1 = std::max(b0, std::min(kw, lead + width > first ? lead + width - first : 0));
  std::fill_n(dst, b0 * C, T{0});
  if (b1 > b0) std::copy_n(row + (first + b0 - lead) * C, (b1 - b0) * C, dst + b0 * C);
  std::fill_n(dst + b1 * C, (kw - b1) * C, T{0});
}

// Per-thread scratch for the copied edge windows of a gather: `slots` pixel slots of `len`
// values per thread (none when the gather is not merged).
template <class T>
class GatherWindows {
 public:
  GatherWindows(ConvWorkspace<T>& ws, std::size_t slots, std::size_t len)
      : len_(len), per_thread_(slots ? thread_padded<T>(slots * len) : 0) {
    if (per_thread_)
      base_ = detail::ensure_len(ws.windows, ::fusedcnn::detail::max_threads() * per_thread_);
  }
  // The calling thread's windows from pixel slot j on.
  T* at(std::size_t j) const noexcept {
    return base_ ? base_ + ::fusedcnn::detail::thread_index() * per_thread_ + j * len_
                 : nullptr;
  }

 private:
  T* base_ = nullptr;
  std::size_t len_, per_thread_;
};

// Fills rows[t * ld + i] for slots i < `slots` with the run tap t of output pixel
// p0 + min(i, m - 1) reads (a short tile repeats its last pixel). Padding reads `zero` (at
// least kc long); merged edge windows are copied to win + i * s.window_len(g). Pixels go a
// stretch of one output row at a time: which kernel rows read padding changes only with the
// row, and within it the pixels whose windows lie inside x read runs a fixed stride apart,
// written a kernel row at a time in loops the compiler vectorises (pointer by pointer, the
// gather of a 3-channel stem cost a sixth of its forward).
template <class T>
void gather_rows(const ConvGeometry& g, const GatherShape& s, const T* x, const T* zero,
                 std::size_t p0, std::size_t m, std::size_t slots, const T** rows,
                 std::size_t ld, T* win) {
  // Locals, so the stores through rows and win cannot make the compiler reload them.
  const std::size_t C = g.c, H = g.h, W = g.w, Ho = g.ho, Wo = g.wo, kh = g.kh, kw = g.kw;
  const std::size_t sh = g.sh, sw = g.sw, dh = g.dh, dw = g.dw, pt = g.pt, pl = g.pl;
  const std::size_t kc = s.kc, wlen = s.window_len(g), row_len = W * C, step = dh * row_len;
  const bool merged = s.merged;
  const std::size_t per_row = merged ? 1 : kw;  // runs per kernel row
  // Output columns [lo, hi) read no padding column.
  const std::size_t span = (kw - 1) * dw, lo = (pl + sw - 1) / sw;
  const std::size_t hi = pl + W > span ? std::max(lo, (pl + W - 1 - span) / sw + 1) : lo;
  const std::size_t pstride = sw * C;  // between the runs of neighbouring inside pixels
  std::size_t wo = p0 % Wo, ho = (p0 / Wo) % Ho, n = p0 / (Wo * Ho);
  for (std::size_t i = 0; i < m;) {
    const std::size_t e = std::min(m, i + (Wo - wo));  // pixels i..e-1 are in this row
    // Kernel rows [a0, a1) read input rows, from `first` on; the rest read padding.
    const std::size_t h0 = ho * sh, ceil_div = dh - 1;
    const std::size_t a0 = std::min(kh, h0 >= pt ? 0 : (pt - h0 + ceil_div) / dh);
    const std::size_t a1 =
        std::max(a0, std::min(kh, h0 >= pt + H ? 0 : (pt + H - h0 + ceil_div) / dh));
    const T* first = a1 > a0 ? x + (n * H + (h0 + a0 * dh - pt)) * row_len : nullptr;
    for (std::size_t t = 0; t < kh * per_row; ++t)
      if (t < a0 * per_row || t >= a1 * per_row) std::fill(rows + t * ld + i, rows + t * ld + e, zero);
    // Pixels [j0, j1) of the stretch read inside x only.
    const std::size_t j0 = i + std::min(e - i, lo > wo ? lo - wo : 0);
    const std::size_t j1 = std::max(j0, i + std::min(e - i, hi > wo ? hi - wo : 0));
    const T* row = first;
    for (std::size_t a = a0; a < a1; ++a, row += step) {
      const T* run = row + ((wo + (j0 - i)) * sw - pl) * C;  // pixel j0's, when j0 < j1
      for (std::size_t b = 0; b < per_row && j0 < j1; ++b) {
        const T** o = rows + (a * per_row + b) * ld;
        const T* r = run + b * dw * C;
        for (std::size_t j = j0; j < j1; ++j) o[j] = r + (j - j0) * pstride;
      }
      for (std::size_t j = i; j < e; ++j) {  // the edge pixels, one by one
        if (j == j0) j = j1;
        if (j >= e) break;
        const std::size_t wp0 = (wo + (j - i)) * sw;  // first column in the padded input
        const T** o = rows + a * per_row * ld + j;
        if (merged) {  // the window crosses the padding: copy it with zeros
          T* w = win + j * wlen + a * kc;
          o[0] = w;
          copy_window(row, wp0, pl, W, kw, C, w);
          continue;
        }
        for (std::size_t b = 0; b < kw; ++b) {
          const std::size_t wp = wp0 + b * dw;
          o[b * ld] = wp >= pl && wp - pl < W ? row + (wp - pl) * C : zero;
        }
      }
    }
    wo += e - i, i = e;
    if (wo == Wo) {
      wo = 0;
      if (++ho == Ho) ho = 0, ++n;
    }
  }
  for (std::size_t t = 0; t < s.taps; ++t)
    for (std::size_t i = m; i < slots; ++i) rows[t * ld + i] = rows[t * ld + m - 1];
}

// The contraction runs of the forward: a plain GEMM (1x1, unit stride, no padding) reads one
// pixel's channels, any other convolution the gather's runs.
inline GatherShape forward_run_shape(const ConvGeometry& g) noexcept {
  return g.pointwise() ? GatherShape{1, g.cg(), false} : forward_gather_shape(g);
}

// The forward's row pointers for tiles of output pixels (the igemm and dot families): the run
// shape, the zero row that padding reads and the per-thread edge windows (a slot per pixel
// of a chunk), set up once per pass.
template <class T>
class ForwardRows {
 public:
  ForwardRows(const ConvGeometry& g, const T* x, ConvWorkspace<T>& ws, std::size_t chunk_rows)
      : g_(g),
        shape_(forward_run_shape(g)),
        x_(x),
        chunk_rows_(chunk_rows),
        zero_(zero_row(ws, std::max(g.c, shape_.kc))),  // grouped runs read at group * kc
        windows_(ws, chunk_rows, shape_.window_len(g)) {}

  const GatherShape& shape() const noexcept { return shape_; }

  // rows[t * slots + i] for i < slots: the runs of output pixel p0 + min(i, m - 1).
  void fill(std::size_t p0, std::size_t m, std::size_t slots, const T** rows) const {
    if (g_.pointwise()) {  // output pixel p reads input pixel p
      for (std::size_t i = 0; i < slots; ++i) rows[i] = x_ + (p0 + std::min(i, m - 1)) * g_.c;
      return;
    }
    gather_rows(g_, shape_, x_, zero_, p0, m, slots, rows, slots,
                windows_.at(p0 % chunk_rows_));
  }

 private:
  static const T* zero_row(ConvWorkspace<T>& ws, std::size_t len) {
    detail::ensure_zeros(ws, len);
    return ws.zeros.data();
  }

  const ConvGeometry& g_;
  GatherShape shape_;
  const T* x_;
  std::size_t chunk_rows_;
  const T* zero_;
  GatherWindows<T> windows_;
};

// The data gradient's gather. With one group and unit horizontal stride and dilation, input
// column w is read by output columns w + pl - b of kernel column b: the kw taps of a kernel
// row are kw*K consecutive values of dz in reverse b order, so they merge into one run when
// the weights are packed with the kernel columns reversed (pack_backward_data_weights).
inline GatherShape backward_data_gather_shape(const ConvGeometry& g) noexcept {
  if (g.groups == 1 && g.sw == 1 && g.dw == 1 && g.kw > 1 && g.kw * g.k <= gather_merge_limit)
    return {g.kh, g.kw * g.k, true};
  return {g.taps(), g.kg(), false};
}

// Fills rows[t * ld + i] for slots i < `slots` with the dz run tap t of input pixel
// q0 + min(i, m - 1) gathers (`zero` where no output pixel read it), as gather_rows does for
// the forward; merged taps run over kernel columns kw - 1 down to 0.
template <class T>
void gather_rows_transposed(const ConvGeometry& g, const GatherShape& s, const T* dz,
                            const T* zero, std::size_t q0, std::size_t m, std::size_t slots,
                            const T** rows, std::size_t ld, T* win) {
  const std::size_t K = g.k, H = g.h, W = g.w, Ho = g.ho, Wo = g.wo, kh = g.kh, kw = g.kw;
  const std::size_t sh = g.sh, sw = g.sw, dh = g.dh, dw = g.dw, pt = g.pt, pl = g.pl;
  const std::size_t kc = s.kc, wlen = s.window_len(g), row_len = Wo * K;
  const bool merged = s.merged;
  std::size_t w = q0 % W, h = (q0 / W) % H, n = q0 / (W * H);
  for (std::size_t i = 0; i < m; ++i) {
    const std::size_t hp = h + pt, wp = w + pl;
    for (std::size_t a = 0; a < kh; ++a) {
      // output row ho with ho*sh + a*dh == hp, if any
      const std::size_t oa = a * dh;
      const T** out = rows + (merged ? a : a * kw) * ld + i;
      const bool hok = hp >= oa && (hp - oa) % sh == 0 && (hp - oa) / sh < Ho;
      if (!hok) {
        for (std::size_t b = 0; b < (merged ? 1 : kw); ++b) out[b * ld] = zero;
        continue;
      }
      const T* row = dz + (n * Ho + (hp - oa) / sh) * row_len;
      if (merged) {  // output columns wp - kw + 1 .. wp
        if (wp + 1 >= kw && wp < Wo) {
          out[0] = row + (wp + 1 - kw) * K;
          continue;
        }
        out[0] = win + i * wlen + a * kc;  // partly outside the output: copy with zeros
        copy_window(row, wp, kw - 1, Wo, kw, K, win + i * wlen + a * kc);
        continue;
      }
      for (std::size_t b = 0; b < kw; ++b) {
        const std::size_t ob = b * dw;
        const bool ok = wp >= ob && (wp - ob) % sw == 0 && (wp - ob) / sw < Wo;
        out[b * ld] = ok ? row + (wp - ob) / sw * K : zero;
      }
    }
    if (++w == W) {
      w = 0;
      if (++h == H) h = 0, ++n;
    }
  }
  for (std::size_t t = 0; t < s.taps; ++t)
    for (std::size_t i = m; i < slots; ++i) rows[t * ld + i] = rows[t * ld + m - 1];
}

// Classes of input pixels for the data gradient of a strided convolution: pixel (h, w) is
// reached only through the taps (a, b) with a*dh = h + pt (mod sh) and b*dw = w + pl
// (mod sw), so the pixels of one class (h + pt mod sh, w + pl mod sw) share their taps, and
// a gather over one class leaves out the taps that would only read padding zeros: all but
// one in sh*sw of them.
struct PixelClass {
  std::size_t rh, rw;  // the class: h + pt = rh, w + pl = rw (mod sh, sw)
  std::size_t h0, w0;  // its first row and column of x
  std::size_t hc, wc;  // its rows and columns
  std::size_t pixels(const ConvGeometry& g) const noexcept { return g.n * hc * wc; }
  // Input pixel r of the class (in (n, row, column) order), as an index into x.
  std::size_t pixel(const ConvGeometry& g, std::size_t r) const noexcept {
    const std::size_t n = r / (hc * wc), i = r / wc % hc, j = r % wc;
    return (n * g.h + h0 + i * g.sh) * g.w + w0 + j * g.sw;
  }
};

inline PixelClass pixel_class(const ConvGeometry& g, std::size_t rh, std::size_t rw) noexcept {
  PixelClass pc{rh, rw, (rh + g.sh - g.pt % g.sh) % g.sh, (rw + g.sw - g.pl % g.sw) % g.sw, 0, 0};
  pc.hc = pc.h0 < g.h ? (g.h - 1 - pc.h0) / g.sh + 1 : 0;
  pc.wc = pc.w0 < g.w ? (g.w - 1 - pc.w0) / g.sw + 1 : 0;
  return pc;
}

// The taps (a * kw + b) through which the class's pixels are read, in tap order, into taps;
// returns how many.
inline std::size_t class_taps(const ConvGeometry& g, const PixelClass& pc,
                              std::size_t* taps) noexcept {
  std::size_t n = 0;
  for (std::size_t a = 0; a < g.kh; ++a)
    for (std::size_t b = 0; b < g.kw; ++b)
      if (a * g.dh % g.sh == pc.rh && b * g.dw % g.sw == pc.rw) taps[n++] = a * g.kw + b;
  return n;
}

// Fills rows[t * ld + i] for slots i < `slots` with the dz run of tap taps[t] (t < ntaps)
// that input pixel r0 + min(i, m - 1) of class pc gathers, `zero` where that tap's output
// pixel lies outside dz.
template <class T>
void gather_rows_class(const ConvGeometry& g, const PixelClass& pc, const std::size_t* taps,
                       std::size_t ntaps, const T* dz, const T* zero, std::size_t r0,
                       std::size_t m, std::size_t slots, const T** rows, std::size_t ld) {
  const std::size_t K = g.k, Ho = g.ho, Wo = g.wo, sh = g.sh, sw = g.sw;
  for (std::size_t i = 0; i < m; ++i) {
    const std::size_t r = r0 + i, n = r / (pc.hc * pc.wc);
    const std::size_t hp = pc.h0 + (r / pc.wc % pc.hc) * sh + g.pt;  // row in padded x
    const std::size_t wp = pc.w0 + (r % pc.wc) * sw + g.pl;
    for (std::size_t t = 0; t < ntaps; ++t) {
      const std::size_t oa = taps[t] / g.kw * g.dh, ob = taps[t] % g.kw * g.dw;
      const bool ok = hp >= oa && (hp - oa) / sh < Ho && wp >= ob && (wp - ob) / sw < Wo;
      rows[t * ld + i] = ok ? dz + ((n * Ho + (hp - oa) / sh) * Wo + (wp - ob) / sw) * K : zero;
    }
  }
  for (std::size_t t = 0; t < ntaps; ++t)
    for (std::size_t i = m; i < slots; ++i) rows[t * ld + i] = rows[t * ld + m - 1];
}

}  // namespace fusedcnn::ops
