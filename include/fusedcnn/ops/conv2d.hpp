// Stateless 2-D convolution over NHWC activations and HWIO weights: geometry, weight packing,
// forward, backward-data and backward-weights, all as implicit GEMMs (no im2col buffer).
//
// Forward:  Z[p, k]  = sum_(t, c) X[row(p, t), c] * W[t, c, k]       M = N*Ho*Wo, K = taps*Cg
// Bwd data: dX[q, c] = sum_(t, k) dZ[row'(q, t), k] * W[t, c, k]     (a transposed convolution)
// Bwd wts:  dW[t, c, k] = sum_p X[row(p, t), c] * dZ[p, k]           (a GEMM over pixels)
// Forward and backward-data share the igemm micro-kernel; rows point at a zero row for padding.
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
  double flops() const noexcept {
    return 2.0 * static_cast<double>(pixels()) * static_cast<double>(k) *
           static_cast<double>(taps() * cg());
  }
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
  Tensor<T, 1> packed;             // weights packed into NR-wide panels
  Tensor<T, 1> zeros;              // the shared zero row padding points at
  Tensor<T, 1> partial;            // per-chunk weight-gradient partial sums
  Tensor<double, 1> bias_partial;  // per-chunk bias-gradient partial sums
  std::vector<const T*> rows;      // per-thread row pointers of one tile
};

// Tiles per reduction chunk of the forward/backward-data drivers: fixed, so per-chunk partial
// sums (the fused statistics epilogue) never depend on the thread count.
inline constexpr std::size_t igemm_tiles_per_chunk = 16;

namespace detail {

using kernels::IgemmTile;

template <class T>
void ensure_zeros(ConvWorkspace<T>& ws, std::size_t len) {
  if (ws.zeros.size() < len) ws.zeros = Tensor<T, 1>({len});
}

template <class T>
T* ensure_len(Tensor<T, 1>& t, std::size_t len) {
  if (t.size() < len) t = Tensor<T, 1>({len}, ::fusedcnn::detail::uninitialized);
  return t.data();
}

// Runs the igemm kernel over every MR-pixel tile of an M-row problem, every group and every
// NR-wide panel. Tiles are grouped in chunks of a fixed count, independent of the thread
// count, and epi(tile, m, n, p0, col0, chunk) learns its chunk so reductions stay
// deterministic. build(p0, m, rows) fills the tile's row pointers.
template <class T, class Build, class Epi>
void igemm_driver(std::size_t m_total, std::size_t taps, std::size_t kc, std::size_t groups,
                  std::size_t n_per_group, const T* packed, ConvWorkspace<T>& ws, Build&& build,
                  Epi&& epi) {
  constexpr std::size_t MR = IgemmTile<T>::mr, NR = IgemmTile<T>::nr;
  const std::size_t tiles = (m_total + MR - 1) / MR;
  const std::size_t nchunks = (tiles + igemm_tiles_per_chunk - 1) / igemm_tiles_per_chunk;
  const std::size_t panels = (n_per_group + NR - 1) / NR;
  const std::size_t panel_len = taps * kc * NR;
  const std::size_t per_thread = taps * MR;
  ws.rows.resize(::fusedcnn::detail::max_threads() * per_thread);
  ::fusedcnn::detail::parallel_for(nchunks, [&](std::size_t chunk) {
    const T** rows = ws.rows.data() + ::fusedcnn::detail::thread_index() * per_thread;
    const std::size_t tile_end = std::min(tiles, (chunk + 1) * igemm_tiles_per_chunk);
    for (std::size_t tile = chunk * igemm_tiles_per_chunk; tile < tile_end; ++tile) {
      const std::size_t p0 = tile * MR, m = std::min(MR, m_total - p0);
      build(p0, m, rows);
      for (std::size_t g = 0; g < groups; ++g) {
        for (std::size_t j = 0; j < panels; ++j) {
          const std::size_t col0 = j * NR, n = std::min(NR, n_per_group - col0);
          kernels::igemm<T>(taps, kc, rows, packed + (g * panels + j) * panel_len, g * kc, m, n,
                            [&](const T* t, std::size_t mm, std::size_t nn) {
                              epi(t, mm, nn, p0, g * n_per_group + col0, chunk);
                            });
        }
      }
    }
  });
}

}  // namespace detail

// Number of reduction chunks conv2d_forward uses for an M-row problem (for epilogue slots).
template <class T>
std::size_t forward_chunks(const ConvGeometry& g) noexcept {
  constexpr std::size_t MR = kernels::IgemmTile<T>::mr;
  const std::size_t tiles = (g.pixels() + MR - 1) / MR;
  return (tiles + igemm_tiles_per_chunk - 1) / igemm_tiles_per_chunk;
}

// Packs HWIO weights into panels [group][panel][tap][c][NR] for the forward kernel, each
// output channel k multiplied by scale[k] when scale is given (BN folding).
template <class T>
void pack_forward_weights(const ConvGeometry& g, const T* w, const T* scale,
                          ConvWorkspace<T>& ws) {
  constexpr std::size_t NR = kernels::IgemmTile<T>::nr;
  const std::size_t cg = g.cg(), kg = g.kg(), taps = g.taps();
  const std::size_t panels = (kg + NR - 1) / NR;
  T* out = detail::ensure_len(ws.packed, g.groups * panels * taps * cg * NR);
  for (std::size_t gi = 0; gi < g.groups; ++gi)
    for (std::size_t j = 0; j < panels; ++j)
      for (std::size_t t = 0; t < taps; ++t)
        for (std::size_t c = 0; c < cg; ++c) {
          const T* src = w + (t * cg + c) * g.k + gi * kg + j * NR;
          const std::size_t n = std::min(NR, kg - j * NR);
          for (std::size_t q = 0; q < NR; ++q)
            *out++ = q < n ? (scale ? src[q] * scale[gi * kg + j * NR + q] : src[q]) : T{0};
        }
}

// Packs HWIO weights transposed, [group][panel over c][tap][k][NR], for the data gradient.
template <class T>
void pack_backward_data_weights(const ConvGeometry& g, const T* w, ConvWorkspace<T>& ws) {
  constexpr std::size_t NR = kernels::IgemmTile<T>::nr;
  const std::size_t cg = g.cg(), kg = g.kg(), taps = g.taps();
  const std::size_t panels = (cg + NR - 1) / NR;
  T* out = detail::ensure_len(ws.packed, g.groups * panels * taps * kg * NR);
  for (std::size_t gi = 0; gi < g.groups; ++gi)
    for (std::size_t j = 0; j < panels; ++j)
      for (std::size_t t = 0; t < taps; ++t)
        for (std::size_t kk = 0; kk < kg; ++kk) {
          const std::size_t n = std::min(NR, cg - j * NR);
          for (std::size_t q = 0; q < NR; ++q)
            *out++ = q < n ? w[(t * cg + j * NR + q) * g.k + gi * kg + kk] : T{0};
        }
}

// Forward convolution of x with weights packed by pack_forward_weights; every output tile
// goes to epi(tile, m, n, p0, k0, chunk): rows p0.. of Z, channels k0.., stride NR.
template <class T, class Epi>
void conv2d_forward(const ConvGeometry& g, const T* x, ConvWorkspace<T>& ws, Epi&& epi) {
  constexpr std::size_t MR = kernels::IgemmTile<T>::mr;
  detail::ensure_zeros(ws, g.c);
  const T* zero = ws.zeros.data();
  const std::size_t taps = g.taps();
  auto build = [&](std::size_t p0, std::size_t m, const T** rows) {
    for (std::size_t i = 0; i < MR; ++i) {
      const std::size_t p = p0 + std::min(i, m - 1);  // short tile: repeat the last row
      const std::size_t wo = p % g.wo, ho = (p / g.wo) % g.ho, n = p / (g.wo * g.ho);
      for (std::size_t a = 0; a < g.kh; ++a) {
        const std::size_t hp = ho * g.sh + a * g.dh;  // row in the padded input
        const bool hin = hp >= g.pt && hp - g.pt < g.h;
        for (std::size_t b = 0; b < g.kw; ++b) {
          const std::size_t wp = wo * g.sw + b * g.dw;
          const bool in = hin && wp >= g.pl && wp - g.pl < g.w;
          rows[(a * g.kw + b) * MR + i] =
              in ? x + ((n * g.h + (hp - g.pt)) * g.w + (wp - g.pl)) * g.c : zero;
        }
      }
    }
  };
  detail::igemm_driver<T>(g.pixels(), taps, g.cg(), g.groups, g.kg(), ws.packed.data(), ws,
                          build, epi);
}

// Data gradient dx (N,H,W,C) from dz (N,Ho,Wo,K) and weights packed by
// pack_backward_data_weights. Overwrites dx.
template <class T>
void conv2d_backward_data(const ConvGeometry& g, const T* dz, T* dx, ConvWorkspace<T>& ws) {
  constexpr std::size_t MR = kernels::IgemmTile<T>::mr, NR = kernels::IgemmTile<T>::nr;
  detail::ensure_zeros(ws, g.k);
  const T* zero = ws.zeros.data();
  auto build = [&](std::size_t q0, std::size_t m, const T** rows) {
    for (std::size_t i = 0; i < MR; ++i) {
      const std::size_t q = q0 + std::min(i, m - 1);
      const std::size_t w = q % g.w, h = (q / g.w) % g.h, n = q / (g.w * g.h);
      for (std::size_t a = 0; a < g.kh; ++a) {
        // output row ho with ho*sh + a*dh == h + pt, if any
        const std::size_t hp = h + g.pt, oa = a * g.dh;
        const bool hok = hp >= oa && (hp - oa) % g.sh == 0 && (hp - oa) / g.sh < g.ho;
        for (std::size_t b = 0; b < g.kw; ++b) {
          const std::size_t wp = w + g.pl, ob = b * g.dw;
          const bool ok = hok && wp >= ob && (wp - ob) % g.sw == 0 && (wp - ob) / g.sw < g.wo;
          rows[(a * g.kw + b) * MR + i] =
              ok ? dz + ((n * g.ho + (hp - oa) / g.sh) * g.wo + (wp - ob) / g.sw) * g.k : zero;
        }
      }
    }
  };
  auto store = [&](const T* tile, std::size_t m, std::size_t n, std::size_t q0, std::size_t c0,
                   std::size_t) {
    for (std::size_t i = 0; i < m; ++i) {
      T* dst = dx + (q0 + i) * g.c + c0;
      for (std::size_t j = 0; j < n; ++j) dst[j] = tile[i * NR + j];
    }
  };
  detail::igemm_driver<T>(g.in_pixels(), g.taps(), g.kg(), g.groups, g.cg(), ws.packed.data(),
                          ws, build, store);
}

// Number of pixel chunks the weight gradient is split into: a function of the shape alone
// (so results do not depend on the thread count), at least 256 pixels each, and bounded so
// the partials stay under ~32 MiB of floats.
inline std::size_t weight_grad_chunks(const ConvGeometry& g) noexcept {
  const std::size_t wsize = g.taps() * g.cg() * g.k;
  const std::size_t by_pixels = (g.pixels() + 255) / 256;
  const std::size_t by_memory = std::max<std::size_t>(1, (std::size_t{8} << 20) / wsize);
  return std::max<std::size_t>(1, std::min({by_pixels, by_memory, std::size_t{64}}));
}

// Weight gradient: dw (HWIO) += sum over pixels of X rows times dZ. Partial sums over fixed
// pixel chunks are added in chunk order, so a given shape always gives the same bits.
template <class T>
void conv2d_backward_weights(const ConvGeometry& g, const T* x, const T* dz, T* dw,
                             ConvWorkspace<T>& ws) {
  const std::size_t cg = g.cg(), kg = g.kg(), taps = g.taps(), P = g.pixels();
  const std::size_t wsize = taps * cg * g.k;
  const std::size_t nchunks = weight_grad_chunks(g);
  const std::size_t per_chunk = (P + nchunks - 1) / nchunks;
  T* partial = detail::ensure_len(ws.partial, nchunks * wsize);
  ::fusedcnn::detail::parallel_for(nchunks, [&](std::size_t ci) {
    T* acc = partial + ci * wsize;
    std::fill_n(acc, wsize, T{0});
    const std::size_t pend = std::min(P, (ci + 1) * per_chunk);
    for (std::size_t p = ci * per_chunk; p < pend; ++p) {
      const std::size_t wo = p % g.wo, ho = (p / g.wo) % g.ho, n = p / (g.wo * g.ho);
      const T* dzp = dz + p * g.k;
      for (std::size_t a = 0; a < g.kh; ++a) {
        const std::size_t hp = ho * g.sh + a * g.dh;
        if (hp < g.pt || hp - g.pt >= g.h) continue;
        for (std::size_t b = 0; b < g.kw; ++b) {
          const std::size_t wp = wo * g.sw + b * g.dw;
          if (wp < g.pl || wp - g.pl >= g.w) continue;
          const T* xr = x + ((n * g.h + (hp - g.pt)) * g.w + (wp - g.pl)) * g.c;
          T* accr = acc + (a * g.kw + b) * cg * g.k;
          for (std::size_t gi = 0; gi < g.groups; ++gi)
            for (std::size_t c = 0; c < cg; ++c) {
              const T xv = xr[gi * cg + c];
              T* dst = accr + c * g.k + gi * kg;
              const T* src = dzp + gi * kg;
              for (std::size_t kk = 0; kk < kg; ++kk) dst[kk] += xv * src[kk];
            }
        }
      }
    }
  });
  constexpr std::size_t block = 1024;
  ::fusedcnn::detail::parallel_for((wsize + block - 1) / block, [&](std::size_t bi) {
    const std::size_t e1 = std::min(wsize, (bi + 1) * block);
    for (std::size_t e = bi * block; e < e1; ++e) {
      T s = partial[e];
      for (std::size_t ci = 1; ci < nchunks; ++ci) s += partial[ci * wsize + e];
      dw[e] += s;
    }
  });
}

// Bias gradient: db[k] += sum over pixels of dz[p, k], per fixed 256-pixel chunk in double,
// chunks added in order.
template <class T>
void conv2d_backward_bias(const ConvGeometry& g, const T* dz, T* db, ConvWorkspace<T>& ws) {
  const std::size_t P = g.pixels(), K = g.k, nchunks = (P + 255) / 256;
  if (ws.bias_partial.size() < nchunks * K) ws.bias_partial = Tensor<double, 1>({nchunks * K});
  double* part = ws.bias_partial.data();
  ::fusedcnn::detail::parallel_for(nchunks, [&](std::size_t ci) {
    double* acc = part + ci * K;
    std::fill_n(acc, K, 0.0);
    const std::size_t pend = std::min(P, (ci + 1) * 256);
    for (std::size_t p = ci * 256; p < pend; ++p)
      for (std::size_t k = 0; k < K; ++k) acc[k] += static_cast<double>(dz[p * K + k]);
  });
  for (std::size_t k = 0; k < K; ++k) {
    double s = 0;
    for (std::size_t ci = 0; ci < nchunks; ++ci) s += part[ci * K + k];
    db[k] += static_cast<T>(s);
  }
}

}  // namespace fusedcnn::ops
