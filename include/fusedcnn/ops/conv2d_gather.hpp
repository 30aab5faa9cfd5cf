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

// Fills rows[t * ld + i] for slots i < `slots` with the run tap t of output pixel
// p0 + min(i, m - 1) reads (a short tile repeats its last pixel). Padding reads `zero` (at
// least kc long); merged edge windows are copied to win + i * s.window_len(g).
template <class T>
void gather_rows(const ConvGeometry& g, const GatherShape& s, const T* x, const T* zero,
                 std::size_t p0, std::size_t m, std::size_t slots, const T** rows,
                 std::size_t ld, T* win) {
  std::size_t wo = p0 % g.wo, ho = (p0 / g.wo) % g.ho, n = p0 / (g.wo * g.ho);
  const std::size_t C = g.c;
  for (std::size_t i = 0; i < m; ++i) {
    const std::size_t wp0 = wo * g.sw;  // first column in the padded input
    for (std::size_t a = 0; a < g.kh; ++a) {
      const std::size_t hp = ho * g.sh + a * g.dh;
      const bool hin = hp >= g.pt && hp - g.pt < g.h;
      const T* row = hin ? x + (n * g.h + (hp - g.pt)) * g.w * C : nullptr;
      if (s.merged) {
        const T* run = zero;
        if (hin) {
          if (wp0 >= g.pl && wp0 + g.kw <= g.pl + g.w) {
            run = row + (wp0 - g.pl) * C;
          } else {  // the window crosses the padding: copy it with zeros
            T* dst = win + i * s.window_len(g) + a * s.kc;
            for (std::size_t b = 0; b < g.kw; ++b, dst += C) {
              const std::size_t wp = wp0 + b;
              if (wp >= g.pl && wp - g.pl < g.w)
                std::copy_n(row + (wp - g.pl) * C, C, dst);
              else
                std::fill_n(dst, C, T{0});
            }
            run = win + i * s.window_len(g) + a * s.kc;
          }
        }
        rows[a * ld + i] = run;
        continue;
      }
      for (std::size_t b = 0; b < g.kw; ++b) {
        const std::size_t wp = wp0 + b * g.dw;
        const bool in = hin && wp >= g.pl && wp - g.pl < g.w;
        rows[(a * g.kw + b) * ld + i] = in ? row + (wp - g.pl) * C : zero;
      }
    }
    if (++wo == g.wo) {
      wo = 0;
      if (++ho == g.ho) ho = 0, ++n;
    }
  }
  for (std::size_t t = 0; t < s.taps; ++t)
    for (std::size_t i = m; i < slots; ++i) rows[t * ld + i] = rows[t * ld + m - 1];
}

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
  std::size_t w = q0 % g.w, h = (q0 / g.w) % g.h, n = q0 / (g.w * g.h);
  const std::size_t K = g.k;
  for (std::size_t i = 0; i < m; ++i) {
    const std::size_t hp = h + g.pt, wp = w + g.pl;
    for (std::size_t a = 0; a < g.kh; ++a) {
      // output row ho with ho*sh + a*dh == hp, if any
      const std::size_t oa = a * g.dh;
      const bool hok = hp >= oa && (hp - oa) % g.sh == 0 && (hp - oa) / g.sh < g.ho;
      const T* row = hok ? dz + (n * g.ho + (hp - oa) / g.sh) * g.wo * K : nullptr;
      if (s.merged) {  // output columns wp - kw + 1 .. wp
        const T* run = zero;
        if (hok) {
          if (wp + 1 >= g.kw && wp < g.wo) {
            run = row + (wp + 1 - g.kw) * K;
          } else {  // partly outside the output: copy with zeros
            T* dst = win + i * s.window_len(g) + a * s.kc;
            for (std::size_t b = 0; b < g.kw; ++b, dst += K) {
              const std::size_t col = wp + b;  // wp - (kw - 1) + b, kept unsigned
              if (col + 1 >= g.kw && col + 1 - g.kw < g.wo)
                std::copy_n(row + (col + 1 - g.kw) * K, K, dst);
              else
                std::fill_n(dst, K, T{0});
            }
            run = win + i * s.window_len(g) + a * s.kc;
          }
        }
        rows[a * ld + i] = run;
        continue;
      }
      for (std::size_t b = 0; b < g.kw; ++b) {
        const std::size_t ob = b * g.dw;
        const bool ok = hok && wp >= ob && (wp - ob) % g.sw == 0 && (wp - ob) / g.sw < g.wo;
        rows[(a * g.kw + b) * ld + i] = ok ? row + (wp - ob) / g.sw * K : zero;
      }
    }
    if (++w == g.w) {
      w = 0;
      if (++h == g.h) h = 0, ++n;
    }
  }
  for (std::size_t t = 0; t < s.taps; ++t)
    for (std::size_t i = m; i < slots; ++i) rows[t * ld + i] = rows[t * ld + m - 1];
}

}  // namespace fusedcnn::ops
