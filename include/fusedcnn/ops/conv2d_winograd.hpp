// The Winograd family's forward: 3x3, stride-1 convolutions of many channels as F(2x2, 3x3)
// (kernels/winograd.hpp), 16 GEMMs of transformed tiles through the igemm micro-kernel, 16
// multiply-adds per 2x2 output tile and channel pair where the direct convolution does 36.
//
// A chunk is a fixed run of whole output rows (about 48 tiles of 2x2 pixels): its input tiles
// are transformed into V[xi][tile][c] (in L2), each point's GEMM against the transformed
// weights U[xi][panel][c][NR] (one panel, C * NR values, stays in L1 over the chunk's tiles)
// writes M[xi][tile][k], and the output transform writes the chunk's pixels, whole rows, to a
// row-major tile that goes to the epilogue at once: bias, BN and statistics epilogues see
// exactly what the direct families give them. The weights are transformed on every forward
// (they may have changed), panel by panel over the threads. The gradients stay with the
// igemm family.
#pragma once

#include <algorithm>
#include <cstddef>

#include "fusedcnn/core/threading.hpp"
#include "fusedcnn/kernels/igemm.hpp"
#include "fusedcnn/kernels/rows.hpp"
#include "fusedcnn/kernels/tile.hpp"
#include "fusedcnn/kernels/winograd.hpp"
#include "fusedcnn/ops/conv_geometry.hpp"

namespace fusedcnn::ops {

// Whether the Winograd family runs the forward of g (plan_forward asks the small-channel
// families first): a 3x3, stride-1, undilated, ungrouped convolution whose saved
// multiply-adds pay for the transforms. Costs per (input, output) channel pair, in
// multiply-adds: the direct convolution does 9 per output pixel; F(2x2, 3x3) does 16 per
// 2x2 tile, its GEMMs of depth C running at about 1/1.15 the direct one's speed, plus about 3
// per transformed value of each tile (16 (C + K) of them) and 40 per transformed weight (16,
// read and written once per forward, usually from memory).
template <class T>
constexpr bool use_winograd(const ConvGeometry& g) noexcept {
  if (g.kh != 3 || g.kw != 3 || g.sh != 1 || g.sw != 1 || g.dh != 1 || g.dw != 1 ||
      g.groups != 1 || g.ho == 0 || g.wo == 0 || g.c < 8 || g.k < 8)
    return false;
  const double pairs = static_cast<double>(g.c) * static_cast<double>(g.k);
  const double tiles = static_cast<double>(g.n * ((g.ho + 1) / 2) * ((g.wo + 1) / 2));
  const double direct = 9.0 * static_cast<double>(g.pixels()) * pairs;
  const double wino = 16.0 * tiles * (1.15 * pairs + 3.0 * static_cast<double>(g.c + g.k)) +
                      16.0 * 40.0 * pairs;
  return wino < 0.85 * direct;
}

namespace detail {
// Tile rows a chunk of `rc` output rows can hold: rc / 2, and one more for each image
// boundary inside it (an image with an odd number of rows ends on a one-row tile row).
inline std::size_t winograd_tile_rows(const ConvGeometry& g, std::size_t rc) noexcept {
  return rc / 2 + (rc + g.ho - 1) / g.ho + 1;
}
}  // namespace detail

// The Winograd forward's plan: chunks of whole tile rows, as many tiles as fill the GEMM
// tile's rows best, up to 64, in at least 8 chunks when there are rows enough, for the
// threads to share. Each chunk reads all the transformed weights: beyond 1 MiB (half the L2)
// they come from memory every time, and chunks take up to 128 tiles, in at least 2 chunks
// (14x14, 256 -> 256 channels: chunks of 14 tiles 3.4 ms, of 98 tiles 2.7 ms).
template <class T>
ConvPlan plan_winograd(const ConvGeometry& g) noexcept {
  ConvPlan p;
  p.by_winograd = true;
  p.tile = kernels::pick_tile<T>(g.k);
  p.rows = g.pixels();
  const std::size_t tw = (g.wo + 1) / 2, out_rows = g.n * g.ho, mr = p.tile.mr, nr = p.tile.nr;
  const bool big = kernels::winograd::points * g.c * ((g.k + nr - 1) / nr * nr) * sizeof(T) >
                   (std::size_t{1} << 20);
  const std::size_t most = big ? 128 : 64, least_chunks = big ? 2 : 8;
  std::size_t best = 1;
  double best_fill = 0;
  for (std::size_t r = 1; r == 1 || r * tw <= most; ++r) {
    if (r > 1 && (out_rows + 2 * r - 1) / (2 * r) < least_chunks) break;
    const std::size_t tiles = r * tw;
    const double fill = static_cast<double>(tiles) / static_cast<double>((tiles + mr - 1) / mr * mr);
    if (fill >= best_fill - 0.02) best = r, best_fill = std::max(fill, best_fill);
  }
  p.chunk_rows = 2 * best * g.wo;
  p.chunks = (p.rows + p.chunk_rows - 1) / p.chunk_rows;
  return p;
}

namespace detail {
// Where the point GEMMs' tiles go: MR rows of M (all of them: rows past the chunk's tiles
// repeat a valid tile and land in M's spare rows), NR-wide columns from k0.
template <class T, std::size_t NR>
struct WinogradSink {
  T* m;
  std::size_t ld, t0, k0;

  template <class V, std::size_t MR, std::size_t NV>
  void registers(const typename V::R (&acc)[MR][NV], std::size_t, std::size_t) const noexcept {
#pragma GCC unroll 32
    for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (std::size_t v = 0; v < NV; ++v) V::store(m + (t0 + i) * ld + k0 + v * V::lanes, acc[i][v]);
  }
  void operator()(const T* tile, std::size_t m_rows, std::size_t) const noexcept {
    for (std::size_t i = 0; i < m_rows; ++i) std::copy_n(tile + i * NR, NR, m + (t0 + i) * ld + k0);
  }
};

// Values of T rounded up to whole 64-byte lines.
template <class T>
constexpr std::size_t whole_lines(std::size_t n) noexcept {
  constexpr std::size_t per = 64 / sizeof(T);
  return (n + per - 1) / per * per;
}

// U[xi][q][c][NR] for panel q: the transformed HWIO weights of output channels q*NR.. (times
// scale[k] when given), zero past the last channel.
template <class T, std::size_t NR>
void winograd_weights_panel(const ConvGeometry& g, const T* w, const T* scale, std::size_t q,
                            std::size_t panels, T* u) {
  using V = kernels::RowVec<T>;
  const std::size_t C = g.c, K = g.k;
  const T one = T{1};
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t j = 0; j < NR; j += V::lanes) {
      const std::size_t col = q * NR + j;
      const auto mask = V::first(col < K ? K - col : 0);
      const typename V::R s = scale ? V::load(mask, scale + col) : V::bcast(&one);
      kernels::winograd::weight_tile<V>(w + c * K + col, C * K, mask, s,
                                        u + (q * C + c) * NR + j, panels * C * NR);
    }
}
}  // namespace detail

// Forward convolution of x by the Winograd family (ws.weights, ws.scale as
// pack_forward_weights recorded them); every chunk's output goes to epi(TileInfo) as one
// row-major tile of whole rows.
template <class T, class Epi>
void winograd_forward(const ConvGeometry& g, const ConvPlan& plan, const T* x,
                      ConvWorkspace<T>& ws, Epi& epi) {
  using V = kernels::RowVec<T>;
  constexpr std::size_t XI = kernels::winograd::points, L = V::lanes;
  const std::size_t C = g.c, K = g.k, wo = g.wo, ho = g.ho;
  const std::size_t rc = plan.chunk_rows / wo, tw = (wo + 1) / 2, out_rows = g.n * ho;
  kernels::with_tile<T>(plan.tile, [&]<std::size_t MR, std::size_t NR>() {
    const std::size_t P = (K + NR - 1) / NR, KP = P * NR;
    const std::size_t tmax = (detail::winograd_tile_rows(g, rc) * tw + MR - 1) / MR * MR;
    T* u = detail::ensure_len(ws.transformed, XI * P * C * NR);
    ::fusedcnn::detail::parallel_for(P, [&](std::size_t q) {
      detail::winograd_weights_panel<T, NR>(g, ws.weights, ws.scale, q, P, u);
    });
    // Point strides of V and M: whole lines and one more, so that the 16 points of a tile
    // are not 4 KiB apart, where loads wait on unrelated stores of the same page offset.
    const std::size_t vp = detail::whole_lines<T>(tmax * C) + 64 / sizeof(T);
    const std::size_t mp = tmax * KP + 64 / sizeof(T);
    const std::size_t v_len = XI * vp, m_len = XI * mp;
    const detail::ThreadScratch<T> scratch(ws.tile_scratch, v_len + m_len + rc * wo * KP);
    const std::size_t threads = ::fusedcnn::detail::max_threads();
    ws.rows.resize(thread_slots_len(threads, XI * tmax));
    ::fusedcnn::detail::parallel_for(plan.chunks, [&](std::size_t chunk) {
      const std::size_t tid = ::fusedcnn::detail::thread_index();
      T* vbuf = scratch.of(tid);
      T* mbuf = vbuf + v_len;
      T* out = mbuf + m_len;
      const T** rows = ws.rows.data() + thread_slot_offset(tid, XI * tmax);
      const std::size_t r0 = chunk * rc, r1 = std::min(out_rows, r0 + rc);
      // Calls f(first output row, rows in it (1 or 2), index) for each tile row of the chunk.
      auto tile_rows = [&](auto&& f) {
        for (std::size_t r = r0, idx = 0; r < r1; ++idx) {
          const std::size_t oy = r % ho, nr = std::min<std::size_t>({2, r1 - r, ho - oy});
          f(r, nr, idx);
          r += nr;
        }
      };
      std::size_t nt = 0;
      tile_rows([&](std::size_t r, std::size_t, std::size_t idx) {
        const std::size_t img = r / ho, oy = r % ho;
        const T* in[4];
        for (std::size_t i = 0; i < 4; ++i) {
          const long iy = static_cast<long>(oy + i) - static_cast<long>(g.pt);
          in[i] = iy >= 0 && iy < static_cast<long>(g.h)
                      ? x + (img * g.h + static_cast<std::size_t>(iy)) * g.w * C
                      : nullptr;
        }
        for (std::size_t c = 0; c < C; c += L) {
          const T* inc[4];
          for (std::size_t i = 0; i < 4; ++i) inc[i] = in[i] ? in[i] + c : nullptr;
          kernels::winograd::input_row<V>(inc, -static_cast<long>(g.pl), g.w, C, tw,
                                          V::first(C - c), vbuf + idx * tw * C + c, vp, C);
        }
        nt = (idx + 1) * tw;
      });
      for (std::size_t xi = 0; xi < XI; ++xi)
        for (std::size_t t = 0; t < tmax; ++t)
          rows[xi * tmax + t] = vbuf + xi * vp + std::min(t, nt - 1) * C;
      for (std::size_t xi = 0; xi < XI; ++xi)
        for (std::size_t q = 0; q < P; ++q)
          for (std::size_t t0 = 0; t0 < nt; t0 += MR)
            kernels::igemm<T, MR, NR>(1, C, rows + xi * tmax + t0, u + (xi * P + q) * C * NR, 0,
                                      MR, std::min(NR, K - q * NR),
                                      detail::WinogradSink<T, NR>{mbuf + xi * mp, KP, t0, q * NR});
      tile_rows([&](std::size_t r, std::size_t nr, std::size_t idx) {
        for (std::size_t s = 0; s < tw; ++s) {
          const T* m = mbuf + (idx * tw + s) * KP;
          T* top = out + ((r - r0) * wo + 2 * s) * KP;
          T* const dst[2] = {top, nr == 2 ? top + wo * KP : nullptr};
          const std::size_t cols = std::min<std::size_t>(2, wo - 2 * s);
          for (std::size_t k = 0; k < K; k += L) {
            T* const dk[2] = {dst[0] + k, dst[1] ? dst[1] + k : nullptr};
            kernels::winograd::output_tile<V>(m + k, mp, dk, cols, KP, V::first(K - k));
          }
        }
      });
      epi(kernels::TileInfo<T>{out, KP, (r1 - r0) * wo, K, r0 * wo, 0, chunk, r0 * wo});
    });
  });
}

}  // namespace fusedcnn::ops
