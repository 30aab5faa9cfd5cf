// Depthwise convolution (groups == in_channels == out_channels): each channel convolved with
// its own kernel, vectorised over channels, which are contiguous in NHWC. There is no GEMM
// here: every output element is taps multiply-adds, so the passes are memory-bound and the
// drivers only make sure each pixel's channels stream through once.
//
// Weights stay in HWIO order, [tap][1][C]: row t holds every channel's tap t, contiguous.
// Chunks are fixed runs of output pixels (statistics epilogue) or of input pixels, so results
// do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cstddef>

#include "fusedcnn/core/threading.hpp"
#include "fusedcnn/kernels/config.hpp"
#include "fusedcnn/kernels/tile.hpp"
#include "fusedcnn/ops/conv_geometry.hpp"

namespace fusedcnn::ops {

// Whether the depthwise drivers run g: one channel per group, enough channels to fill vectors.
inline constexpr bool use_depthwise(const ConvGeometry& g) noexcept {
  return g.groups == g.c && g.groups == g.k && g.c >= 8 && g.wo > 0 && g.ho > 0;
}

// Output pixels per epilogue tile: about 4096 elements of accumulators (16 KiB in float).
inline std::size_t depthwise_tile_pixels(std::size_t C) noexcept {
  return std::clamp<std::size_t>(4096 / C, 1, 16);
}

// The depthwise plan: chunks of 256 output pixels.
inline ConvPlan plan_depthwise(const ConvGeometry& g) noexcept {
  ConvPlan p;
  p.by_depthwise = true;
  p.rows = g.pixels();
  p.chunk_rows = 256;
  p.chunks = (p.rows + 255) / 256;
  return p;
}

// Copies HWIO depthwise weights ([tap][1][C]) to ws.packed, channel c scaled by scale[c]
// when given.
template <class T>
void pack_depthwise_weights(const ConvGeometry& g, const T* w, const T* scale,
                            ConvWorkspace<T>& ws) {
  const std::size_t C = g.c, taps = g.taps();
  T* out = detail::ensure_len(ws.packed, taps * C);
  for (std::size_t t = 0; t < taps; ++t)
    for (std::size_t c = 0; c < C; ++c) out[t * C + c] = scale ? w[t * C + c] * scale[c] : w[t * C + c];
}

namespace detail {
// acc[c] += w[c] * x[c] for c < C: the whole depthwise inner loop.
template <class T>
inline void dw_madd(T* __restrict acc, const T* __restrict w, const T* __restrict x,
                    std::size_t C) noexcept {
  FUSEDCNN_IVDEP
  for (std::size_t c = 0; c < C; ++c) acc[c] += w[c] * x[c];
}

// The input pixel that output pixel p reads at tap (a, b), or null in the padding.
template <class T>
inline const T* dw_source(const ConvGeometry& g, const T* x, std::size_t n, std::size_t ho,
                          std::size_t wo, std::size_t a, std::size_t b) noexcept {
  const std::size_t hp = ho * g.sh + a * g.dh, wp = wo * g.sw + b * g.dw;
  if (hp < g.pt || hp - g.pt >= g.h || wp < g.pl || wp - g.pl >= g.w) return nullptr;
  return x + ((n * g.h + (hp - g.pt)) * g.w + (wp - g.pl)) * g.c;
}
}  // namespace detail

// Forward: tiles of up to depthwise_tile_pixels output pixels (row-major, ld = C) go to
// epi(TileInfo) in pixel order within each chunk. w is HWIO, scaled per channel by scale
// (BN folding) when given, through ws.packed.
template <class T, class Epi>
void depthwise_forward(const ConvGeometry& g, const ConvPlan& plan, const T* x,
                       ConvWorkspace<T>& ws, Epi& epi) {
  const std::size_t C = g.c, mt = depthwise_tile_pixels(C), taps = g.taps();
  const T* w = ws.packed.data();
  const detail::ThreadScratch<T> scratch(ws.scratch, mt * C);
  ::fusedcnn::detail::parallel_for(plan.chunks, [&](std::size_t chunk) {
    T* acc = scratch.mine();
    const std::size_t c0 = chunk * plan.chunk_rows, c1 = std::min(plan.rows, c0 + plan.chunk_rows);
    for (std::size_t p0 = c0; p0 < c1; p0 += mt) {
      const std::size_t m = std::min(mt, c1 - p0);
      std::fill_n(acc, m * C, T{0});
      for (std::size_t i = 0; i < m; ++i) {
        const std::size_t p = p0 + i, wo = p % g.wo, ho = (p / g.wo) % g.ho, n = p / (g.wo * g.ho);
        for (std::size_t t = 0; t < taps; ++t)
          if (const T* src = detail::dw_source(g, x, n, ho, wo, t / g.kw, t % g.kw))
            detail::dw_madd(acc + i * C, w + t * C, src, C);
      }
      epi(kernels::TileInfo<T>{acc, C, m, C, p0, 0, chunk, c0});
    }
  });
}

// Data gradient: dx[q, c] = sum over taps of w[t, c] * dz[p(q, t), c], gathered per input
// pixel q (the output pixel that read q at tap t, if any). Overwrites dx.
template <class T>
void depthwise_backward_data(const ConvGeometry& g, const T* dz, const T* w, T* dx) {
  const std::size_t C = g.c;
  ::fusedcnn::detail::parallel_for((g.in_pixels() + 255) / 256, [&](std::size_t chunk) {
    const std::size_t q1 = std::min(g.in_pixels(), (chunk + 1) * 256);
    for (std::size_t q = chunk * 256; q < q1; ++q) {
      T* out = dx + q * C;
      std::fill_n(out, C, T{0});
      const std::size_t wi = q % g.w, hi = (q / g.w) % g.h, n = q / (g.w * g.h);
      const std::size_t hp = hi + g.pt, wp = wi + g.pl;
      for (std::size_t a = 0; a < g.kh; ++a) {
        const std::size_t oa = a * g.dh;
        if (hp < oa || (hp - oa) % g.sh != 0 || (hp - oa) / g.sh >= g.ho) continue;
        for (std::size_t b = 0; b < g.kw; ++b) {
          const std::size_t ob = b * g.dw;
          if (wp < ob || (wp - ob) % g.sw != 0 || (wp - ob) / g.sw >= g.wo) continue;
          const std::size_t p = (n * g.ho + (hp - oa) / g.sh) * g.wo + (wp - ob) / g.sw;
          detail::dw_madd(out, w + (a * g.kw + b) * C, dz + p * C, C);
        }
      }
    }
  });
}

// Weight gradient: dw[t, c] += sum over output pixels of x[row(p, t), c] * dz[p, c], in
// fixed 256-pixel chunk partials added in chunk order.
template <class T>
void depthwise_backward_weights(const ConvGeometry& g, const T* x, const T* dz, T* dw,
                                ConvWorkspace<T>& ws) {
  const std::size_t C = g.c, taps = g.taps(), wsize = taps * C, P = g.pixels();
  const std::size_t nchunks = (P + 255) / 256;
  T* partial = detail::ensure_len(ws.partial, nchunks * wsize);
  ::fusedcnn::detail::parallel_for(nchunks, [&](std::size_t ci) {
    T* acc = partial + ci * wsize;
    std::fill_n(acc, wsize, T{0});
    const std::size_t p1 = std::min(P, (ci + 1) * 256);
    for (std::size_t p = ci * 256; p < p1; ++p) {
      const std::size_t wo = p % g.wo, ho = (p / g.wo) % g.ho, n = p / (g.wo * g.ho);
      for (std::size_t t = 0; t < taps; ++t)
        if (const T* src = detail::dw_source(g, x, n, ho, wo, t / g.kw, t % g.kw))
          detail::dw_madd(acc + t * C, dz + p * C, src, C);
    }
  });
  detail::add_chunk_partials(partial, nchunks, wsize, dw);
}

}  // namespace fusedcnn::ops
