// Stateless 2-D convolution over NHWC activations and HWIO weights: geometry, weight packing,
// forward, backward-data and backward-weights, all as implicit GEMMs (no im2col buffer).
//
// Forward:  Z[p, k]  = sum_(t, c) X[row(p, t), c] * W[t, c, k]       M = N*Ho*Wo, K = taps*Cg
// Bwd data: dX[q, c] = sum_(t, k) dZ[row'(q, t), k] * W[t, c, k]     (a transposed convolution)
// Bwd wts:  dW[t, c, k] = sum_p X[row(p, t), c] * dZ[p, k]           (a GEMM over pixels)
// Forward and backward-data share the igemm micro-kernel; rows point at a zero row for padding.
// Depthwise convolutions go to their own drivers (ops/conv2d_depthwise.hpp) and other groups
// with few output channels to the row family (ops/conv2d_rows.hpp); 3x3, stride-1 layers of
// many channels go to the Winograd family (ops/conv2d_winograd.hpp).
// The plan records the choice, made from the shape alone, and every entry point below
// dispatches on it.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

#include "fusedcnn/core/options.hpp"
#include "fusedcnn/core/tensor.hpp"
#include "fusedcnn/core/threading.hpp"
#include "fusedcnn/kernels/epilogues.hpp"
#include "fusedcnn/kernels/igemm.hpp"
#include "fusedcnn/kernels/tile.hpp"
#include "fusedcnn/kernels/transpose.hpp"
#include "fusedcnn/ops/conv2d_depthwise.hpp"
#include "fusedcnn/ops/conv2d_dot.hpp"
#include "fusedcnn/ops/conv2d_gather.hpp"
#include "fusedcnn/ops/conv2d_rows.hpp"
#include "fusedcnn/ops/conv2d_strip.hpp"
#include "fusedcnn/ops/conv2d_winograd.hpp"
#include "fusedcnn/ops/conv_geometry.hpp"

namespace fusedcnn::ops {

// Panels per column block: a block's panels (about 256 KiB, at least one panel) are packed
// by each thread that runs one of the block's items, into that thread's own slice of
// ws.packed, straight from the HWIO weights; they stay in its L2 while every tile of the
// block's chunks passes over them. The weights are read once per forward (once per thread
// sharing a block), never written out whole and read back.
inline constexpr std::size_t igemm_block_bytes = 256 * 1024;

// The column blocks of all_panels panels of panel_len values each: as many as the cache
// budget needs, with the panels spread evenly over them (4 panels at 3 per block were blocks
// of 3 and 1, and the thread given the second idled). Block b holds panels [first(b),
// first(b + 1)): the longer blocks come last, with a group's last, often narrow, panel (73
// channels as blocks of 32 + 32 and 9 columns left one thread a fifth of the work; as 32 and
// 32 + 9, the threads are within a third of each other).
struct IgemmBlocks {
  std::size_t count, most, panels;  // most: panels in the longest block
  std::size_t first(std::size_t b) const noexcept { return b * panels / count; }
};
template <class T>
constexpr IgemmBlocks igemm_blocks(std::size_t all_panels, std::size_t panel_len) noexcept {
  const std::size_t most = std::max<std::size_t>(1, igemm_block_bytes / (panel_len * sizeof(T)));
  const std::size_t count = (all_panels + most - 1) / most;
  return {count, (all_panels + count - 1) / count, all_panels};
}

// The plan for an M-row GEMM whose groups have n_per_group output columns and a reduction of
// `reduction` values; its work items are (column block, chunk) pairs.
template <class T>
ConvPlan plan_igemm(std::size_t rows, std::size_t n_per_group, std::size_t groups,
                    std::size_t reduction) noexcept {
  ConvPlan p;
  p.tile = kernels::pick_tile<T>(n_per_group);
  p.rows = rows;
  const std::size_t nr = p.tile.nr, tiles = (rows + p.tile.mr - 1) / p.tile.mr;
  const std::size_t blocks =
      igemm_blocks<T>(groups * ((n_per_group + nr - 1) / nr), reduction * nr).count;
  p.chunk_rows = tiles_per_chunk(tiles, blocks) * p.tile.mr;
  p.chunks = (rows + p.chunk_rows - 1) / p.chunk_rows;
  return p;
}

// The forward convolution's plan: rows are output pixels, columns output channels.
template <class T>
ConvPlan plan_forward(const ConvGeometry& g) noexcept {
  if (use_depthwise(g)) return plan_depthwise(g);
  if (use_rows<T>(g)) return plan_rows<T>(g);
  if (use_strips<T>(g)) return plan_strips(g.pixels(), g.wo);
  if (use_dot<T>(g)) return plan_dot<T>(g);
  if (use_winograd<T>(g)) return plan_winograd<T>(winograd_forward_shape(g));
  if (use_winograd_panels<T>(g)) return plan_winograd_panels<T>(winograd_forward_shape(g));
  return plan_igemm<T>(g.pixels(), g.kg(), g.groups, g.taps() * g.cg());
}

namespace detail {

// Asks for the cache lines of `count` rows, values [off, off + len) of each, to be loaded.
template <class T>
inline void prefetch_rows(const T* const* rows, std::size_t count, std::size_t off,
                          std::size_t len) noexcept {
  constexpr std::size_t line = 64 / sizeof(T);
  for (std::size_t i = 0; i < count; ++i)
    for (std::size_t e = 0; e < len; e += line) kernels::prefetch(rows[i] + off + e);
}

// Rows of at most this many bytes are fetched ahead by the GEMM driver itself.
inline constexpr std::size_t short_row_bytes = 256;

// Runs the igemm kernel over every tile of the plan, every group and every NR-wide panel.
// Work items are (column block, chunk) pairs, so a chunk's row pointers are built once per
// block and the block's panels meet all of the chunk's tiles while they are in cache; many
// channels on few pixels still split across threads. For any one channel, tiles reach
// epi(TileInfo) in row order within a chunk, whatever the thread count. pack(q, dst) writes
// panel q (taps * kc * NR values); build(p0, m, rows) fills a tile's row pointers.
template <class T, std::size_t MR, std::size_t NR, class Pack, class Build, class Epi>
void igemm_driver(const ConvPlan& plan, std::size_t taps, std::size_t kc, std::size_t groups,
                  std::size_t n_per_group, Pack& pack, ConvWorkspace<T>& ws, Build& build,
                  Epi& epi) {
  const std::size_t panels = (n_per_group + NR - 1) / NR, all_panels = groups * panels;
  const std::size_t panel_len = taps * kc * NR;
  const IgemmBlocks bl = igemm_blocks<T>(all_panels, panel_len);
  const std::size_t blocks = bl.count;
  const std::size_t tiles = (plan.chunk_rows + MR - 1) / MR, tile_len = taps * MR;
  const std::size_t threads = ::fusedcnn::detail::max_threads();
  const std::size_t per_thread = tiles * tile_len, block_len = bl.most * panel_len;
  ws.rows.resize(thread_slots_len(threads, per_thread));
  const ThreadScratch<T> packed(ws.packed, block_len);
  ws.packed_block.assign(threads, blocks);  // no thread holds a block yet
  // Block-major items: a static split then gives each thread whole column blocks over every
  // chunk (each block packed once), and a short last chunk does not leave one thread idle
  // when blocks outnumber chunks.
  ::fusedcnn::detail::parallel_for(plan.chunks * blocks, [&](std::size_t item) {
    const std::size_t chunk = item % plan.chunks, blk = item / plan.chunks;
    const std::size_t tid = ::fusedcnn::detail::thread_index();
    const T** rows = ws.rows.data() + thread_slot_offset(tid, per_thread);
    T* block = packed.of(tid);
    const std::size_t q0 = bl.first(blk), q1 = bl.first(blk + 1);
    if (ws.packed_block[tid] != blk) {
      for (std::size_t q = q0; q < q1; ++q) pack(q, block + (q - q0) * panel_len);
      ws.packed_block[tid] = blk;
    }
    const std::size_t chunk_p0 = chunk * plan.chunk_rows;
    const std::size_t end = std::min(plan.rows, chunk_p0 + plan.chunk_rows);
    for (std::size_t p0 = chunk_p0, ti = 0; p0 < end; p0 += MR, ++ti)
      build(p0, std::min(MR, end - p0), rows + ti * tile_len,
            std::integral_constant<std::size_t, MR>{});
    // Panel q over tile ti (rows from p0).
    auto run = [&](std::size_t q, std::size_t ti, std::size_t p0) {
      const std::size_t g = q / panels, col0 = (q % panels) * NR;
      const std::size_t n = std::min(NR, n_per_group - col0), m = std::min(MR, end - p0);
      // One-tap GEMMs (1x1 convolutions) read each row once, in runs too short for the
      // hardware prefetcher when they are a few cache lines: the first panel fetches the
      // next tile's rows ahead. Longer rows, MR of which at once would fill the line-fill
      // buffers and stall, are fetched into the L2 by the kernel itself, a line per c step,
      // when the next tile's rows are one contiguous run (8 x 40x53, 96 -> 13 channels:
      // 0.8x the time; 4 x 56x56, 256 -> 64: 0.94x).
      const T* const* next = rows + (ti + 1) * tile_len;
      const T* const* tile_rows = rows + ti * tile_len;
      const T* panel = block + (q - q0) * panel_len;
      using Sink = kernels::TileSink<T, NR, Epi>;
      if (taps == 1 && q == q0 && p0 + MR < end) {
        if (kc * sizeof(T) <= short_row_bytes) {
          prefetch_rows(next, MR, g * kc, kc);
        } else if (next[MR - 1] == next[0] + (MR - 1) * groups * kc) {
          kernels::igemm<T, MR, NR>(
              taps, kc, tile_rows, panel, g * kc, m, n,
              kernels::FetchAhead<Sink, T>{
                  Sink{epi, p0, g * n_per_group + col0, chunk, chunk_p0}, next[0] + g * kc});
          return;
        }
      }
      kernels::igemm<T, MR, NR>(taps, kc, tile_rows, panel, g * kc, m, n,
                                Sink{epi, p0, g * n_per_group + col0, chunk, chunk_p0});
    };
    // A one-tap GEMM (1x1) takes every panel of a tile before the next tile: the tile's rows
    // stay in L1 across the panels and its output rows are written whole and in order (one
    // thread, 1x1 64->256: forward -3 %, training forward -13 %). Deeper gathers keep the
    // panel outermost: their tiles gain nothing from it.
    if (taps == 1) {
      for (std::size_t p0 = chunk_p0, ti = 0; p0 < end; p0 += MR, ++ti)
        for (std::size_t q = q0; q < q1; ++q) run(q, ti, p0);
    } else {
      for (std::size_t q = q0; q < q1; ++q)
        for (std::size_t p0 = chunk_p0, ti = 0; p0 < end; p0 += MR, ++ti) run(q, ti, p0);
    }
  });
}

// HWIO rows the forward packing fetches ahead of the one it copies: rows K values apart are
// a stride the hardware prefetcher follows late, and a deep panel (a 3x3 layer of 512
// channels reads 4608 of them) then waits on memory row by row.
inline constexpr std::size_t pack_ahead = 16;

// Packs panel q of the forward weights: NR output channels of one group over every (tap,
// input channel) row, each channel k multiplied by scale[k] when scale is given (BN
// folding), zero past the group's last channel. Rows are runs of contiguous HWIO columns;
// a whole row is a copy of fixed length the compiler does in registers (a call to memmove
// per 128-byte row was a twentieth of a 7x7x512 training step).
template <class T, std::size_t NR>
void pack_forward_panel(const ConvGeometry& g, const T* w, const T* scale, std::size_t q,
                        T* __restrict dst) noexcept {
  const std::size_t kg = g.kg(), panels = (kg + NR - 1) / NR, gi = q / panels;
  const std::size_t k0 = gi * kg + (q % panels) * NR, n = std::min(NR, gi * kg + kg - k0);
  const T* __restrict sc = scale ? scale + k0 : nullptr;
  const std::size_t rows = g.taps() * g.cg();
  for (std::size_t r = 0; r < rows; ++r, dst += NR) {
    const T* __restrict src = w + r * g.k + k0;
    if (r + pack_ahead < rows) {
      kernels::prefetch(src + pack_ahead * g.k);
      if (NR * sizeof(T) > 64) kernels::prefetch(src + pack_ahead * g.k + n - 1);
    }
    if (n == NR && sc) {
      for (std::size_t j = 0; j < NR; ++j) dst[j] = src[j] * sc[j];
    } else if (n == NR) {
      std::memcpy(dst, src, NR * sizeof(T));  // a loop here would become a call to memmove
    } else {
      for (std::size_t j = 0; j < n; ++j) dst[j] = sc ? src[j] * sc[j] : src[j];
      for (std::size_t j = n; j < NR; ++j) dst[j] = T{0};
    }
  }
}

// Packs panel q of the data gradient's weights, transposed: nr input channels of one group
// (columns) over every (tap, output channel) row, [tap][kk][nr], zero past the group's last
// channel. HWIO rows (t, c) are contiguous runs over kk: blocks of 16 kk of every row are
// transposed into 16 panel rows (kernels/transpose.hpp), which stay in L1 while every
// column passes. A merged gather reads the kernel columns of a row in reverse, so their taps
// are stored reversed. Given `taps` (ntaps of them), only those taps are packed, slot s
// holding taps[s].
template <class T>
void pack_backward_data_panel(const ConvGeometry& g, std::size_t nr, bool reversed, const T* w,
                              std::size_t q, T* panel, const std::size_t* taps = nullptr,
                              std::size_t ntaps = 0) noexcept {
  constexpr std::size_t kb = 16;
  const std::size_t cg = g.cg(), kg = g.kg(), panels = (cg + nr - 1) / nr, gi = q / panels;
  const std::size_t c0 = (q % panels) * nr, n = std::min(nr, cg - c0);
  const std::size_t slots = taps ? ntaps : g.taps();
  if (n < nr) std::fill_n(panel, slots * kg * nr, T{0});
  for (std::size_t s = 0; s < slots; ++s) {
    const std::size_t t = taps ? taps[s] : s, a = t / g.kw, b = t % g.kw;
    const std::size_t slot = reversed ? a * g.kw + (g.kw - 1 - b) : s;
    const T* rows = w + (t * cg + c0) * g.k + gi * kg;
    for (std::size_t k0 = 0; k0 < kg; k0 += kb) {
      const std::size_t len = std::min(kb, kg - k0);
      kernels::transpose(rows + k0, g.k, n, len, panel + (slot * kg + k0) * nr, nr);
    }
  }
}

}  // namespace detail

// Prepares the forward's weights for the plan's family: the row, strip, dot and depthwise
// families pack them all here (each output channel k multiplied by scale[k] when scale is
// given: BN folding); the igemm family records where they are and packs them block by block
// on its way (detail::igemm_driver), the Winograd family transforms them on its way.
template <class T>
void pack_forward_weights(const ConvGeometry& g, const ConvPlan& plan, const T* w,
                          const T* scale, ConvWorkspace<T>& ws) {
  if (plan.by_depthwise) return pack_depthwise_weights(g, w, scale, ws);
  if (plan.by_rows) return pack_rows_weights(g, w, scale, ws);
  if (plan.by_strips) return pack_strip_weights(g, w, scale, ws);
  if (plan.by_dot) return pack_dot_weights(g, w, scale, ws);
  ws.weights = w;
  ws.scale = scale;
}

// Forward convolution of x with weights packed by pack_forward_weights for this plan; every
// output tile goes to epi(TileInfo).
template <class T, class Epi>
void conv2d_forward(const ConvGeometry& g, const ConvPlan& plan, const T* x,
                    ConvWorkspace<T>& ws, Epi&& epi) {
  if (plan.by_rows) return rows_forward(g, plan, x, ws, epi);
  if (plan.by_depthwise) return depthwise_forward(g, plan, x, ws, epi);
  if (plan.by_strips) return strips_forward(g, plan, x, ws, epi);
  if (plan.by_dot) return dot_forward(g, plan, x, ws, epi);
  if (plan.by_winograd) return winograd_forward(g, plan, x, ws, epi);
  const ForwardRows<T> fwd_rows(g, x, ws, plan.chunk_rows);
  const GatherShape& gs = fwd_rows.shape();
  auto build = [&](std::size_t p0, std::size_t m, const T** rows, auto mr) {
    fwd_rows.fill(p0, m, decltype(mr)::value, rows);
  };
  kernels::with_tile<T>(plan.tile, [&]<std::size_t MR, std::size_t NR>() {
    auto pack = [&, w = ws.weights, scale = ws.scale](std::size_t q, T* dst) {
      detail::pack_forward_panel<T, NR>(g, w, scale, q, dst);
    };
    detail::igemm_driver<T, MR, NR>(plan, gs.taps, gs.kc, g.groups, g.kg(), pack, ws, build,
                                    epi);
  });
}

// The data-gradient plan: rows are input pixels, columns input channels.
template <class T>
ConvPlan plan_backward_data(const ConvGeometry& g) noexcept {
  if (use_depthwise(g)) return plan_depthwise(g);
  if (use_rows_for_data<T>(g)) return plan_rows<T>(g);
  if (use_strips_for_data<T>(g)) return plan_strips(g.in_pixels(), g.w);
  if (use_winograd_for_data<T>(g)) return plan_winograd<T>(winograd_data_shape(g));
  if (use_winograd_panels_for_data<T>(g))
    return plan_winograd_panels<T>(winograd_data_shape(g));
  return plan_igemm<T>(g.in_pixels(), g.cg(), g.groups, g.taps() * g.kg());
}

// Whether both gradients of g run through the row kernels, which read dz only in planar
// form: a producer of dz can then form it there (rows_backward_with_dz).
template <class T>
bool backward_reads_planar_dz(const ConvGeometry& g) noexcept {
  return !use_depthwise(g) && use_rows<T>(g) && plan_backward_data<T>(g).by_rows;
}

// Prepares the data gradient's weights for the plan's family (transposed: columns are input
// channels, contraction over output channels); the igemm family packs them on its way.
template <class T>
void pack_backward_data_weights(const ConvGeometry& g, const ConvPlan& plan, const T* w,
                                ConvWorkspace<T>& ws) {
  if (plan.by_depthwise) return pack_depthwise_weights(g, w, static_cast<const T*>(nullptr), ws);
  if (plan.by_rows) return pack_rows_data_weights(g, w, ws);
  if (plan.by_strips) return pack_strip_data_weights(g, w, ws);
  ws.weights = w;
  ws.scale = nullptr;
}

namespace detail {
// The igemm data gradient of a strided convolution, one class of input pixels at a time
// (PixelClass): each class gathers and packs only its own taps, so no FMA multiplies the
// padding zeros the other taps would read; its rows go back to their pixels of dx. A class
// no tap reaches gets zeros.
template <class T>
void backward_data_by_classes(const ConvGeometry& g, const ConvPlan& plan, const T* dz, T* dx,
                              ConvWorkspace<T>& ws) {
  ensure_zeros(ws, g.k);
  const T* zero = ws.zeros.data();
  ws.offsets.resize(g.taps());
  std::size_t* taps = ws.offsets.data();
  for (std::size_t rh = 0; rh < g.sh; ++rh)
    for (std::size_t rw = 0; rw < g.sw; ++rw) {
      const PixelClass pc = pixel_class(g, rh, rw);
      const std::size_t rows = pc.pixels(g), ntaps = class_taps(g, pc, taps);
      if (rows == 0) continue;
      auto row_of = [&](std::size_t r) { return dx + pc.pixel(g, r) * g.c; };
      if (ntaps == 0) {
        for (std::size_t r = 0; r < rows; ++r) std::fill_n(row_of(r), g.c, T{0});
        continue;
      }
      ConvPlan part = plan_igemm<T>(rows, g.cg(), g.groups, ntaps * g.kg());
      part.tile = plan.tile;
      kernels::MappedStoreEpilogue<T, decltype(row_of)> store{row_of};
      auto build = [&](std::size_t r0, std::size_t m, const T** rp, auto mr) {
        gather_rows_class(g, pc, taps, ntaps, dz, zero, r0, m, decltype(mr)::value, rp,
                          decltype(mr)::value);
      };
      kernels::with_tile<T>(part.tile, [&]<std::size_t MR, std::size_t NR>() {
        auto pack = [&, w = ws.weights](std::size_t q, T* dst) {
          pack_backward_data_panel(g, NR, false, w, q, dst, taps, ntaps);
        };
        igemm_driver<T, MR, NR>(part, ntaps, g.kg(), g.groups, g.cg(), pack, ws, build, store);
      });
    }
}
}  // namespace detail

// Data gradient dx (N,H,W,C) from dz (N,Ho,Wo,K), as a transposed convolution through the
// same igemm kernel: input pixel q gathers, per tap, the output pixel that read it (if any).
// Overwrites dx.
template <class T>
void conv2d_backward_data(const ConvGeometry& g, const ConvPlan& plan, const T* dz, T* dx,
                          ConvWorkspace<T>& ws) {
  if (plan.by_depthwise) return depthwise_backward_data(g, dz, ws.packed.data(), dx);
  if (plan.by_rows) return rows_backward_data(g, plan, dz, dx, ws);
  if (plan.by_strips) return strips_backward_data(g, plan, dz, dx, ws);
  if (plan.by_winograd) return winograd_backward_data(g, plan, dz, dx, ws);
  if (g.sh * g.sw > 1) return detail::backward_data_by_classes(g, plan, dz, dx, ws);
  const bool gemm = g.pointwise();
  const GatherShape gs = gemm ? GatherShape{1, g.kg(), false} : backward_data_gather_shape(g);
  detail::ensure_zeros(ws, std::max(g.k, gs.kc));
  const T* zero = ws.zeros.data();
  const GatherWindows<T> windows(ws, plan.chunk_rows, gs.window_len(g));  // a slot per pixel
  auto build = [&](std::size_t q0, std::size_t m, const T** rows, auto mr) {
    constexpr std::size_t MR = decltype(mr)::value;
    if (gemm) {  // dX = dZ W^T, a plain GEMM: input pixel q was read by output pixel q only
      for (std::size_t i = 0; i < MR; ++i) rows[i] = dz + (q0 + std::min(i, m - 1)) * g.k;
      return;
    }
    gather_rows_transposed(g, gs, dz, zero, q0, m, MR, rows, MR,
                           windows.at(q0 % plan.chunk_rows));
  };
  kernels::BiasActEpilogue<T, false> store{dx, g.c, nullptr};
  const bool reversed = gs.merged;
  kernels::with_tile<T>(plan.tile, [&]<std::size_t MR, std::size_t NR>() {
    auto pack = [&, w = ws.weights](std::size_t q, T* dst) {
      detail::pack_backward_data_panel(g, NR, reversed, w, q, dst);
    };
    detail::igemm_driver<T, MR, NR>(plan, gs.taps, gs.kc, g.groups, g.cg(), pack, ws, build,
                                    store);
  });
}

// Number of pixel chunks the weight gradient is split into: a function of the shape alone
// (so results do not depend on the thread count), bounded so the partials stay under ~32 MiB
// of floats. Each chunk's partial is a pass over a weight-sized buffer (zeroed, written,
// added): at 256 pixels a chunk that is a third of the time of its 256 FMAs per weight.
// Chunks take 1024 pixels when there are at least 8 of them, or when groups of at least
// four weight-gradient tiles of output channels split their columns into parallel parts
// instead; only few pixels with narrow groups keep 256 for the parallelism (56x56x64 3x3
// at batch 4 spent 8 % of its training step on 49 partials).
template <class T>
std::size_t weight_grad_chunks(const ConvGeometry& g) noexcept {
  const std::size_t wsize = g.taps() * g.cg() * g.k;
  const std::size_t px =
      g.kg() >= 4 * kernels::DwTile<T>::nr || g.pixels() >= 8 * 1024 ? 1024 : 256;
  const std::size_t by_pixels = (g.pixels() + px - 1) / px;
  const std::size_t by_memory = std::max<std::size_t>(1, (std::size_t{8} << 20) / wsize);
  return std::max<std::size_t>(1, std::min({by_pixels, by_memory, std::size_t{64}}));
}

// Weight gradient: dw (HWIO) += sum over pixels of X rows times dZ, as register-blocked
// outer products (kernels/dw). Partial sums over fixed pixel chunks are added in chunk
// order, so a given shape always gives the same bits, whatever the thread count.
template <class T>
void conv2d_backward_weights(const ConvGeometry& g, const T* x, const T* dz, T* dw,
                             ConvWorkspace<T>& ws) {
  if (use_depthwise(g)) return depthwise_backward_weights(g, x, dz, dw, ws);
  if (use_rows<T>(g)) return rows_backward_weights(g, x, dz, dw, ws);
  if (use_winograd_for_weights<T>(g, plan_forward<T>(g).by_winograd))
    return winograd_backward_weights(g, x, dz, dw, ws);
  constexpr std::size_t block = 256;  // pixels per block of row pointers: 9 taps = 18 KiB
  const std::size_t cg = g.cg(), kg = g.kg(), taps = g.taps(), P = g.pixels(), K = g.k;
  const std::size_t wsize = taps * cg * K;
  const std::size_t nchunks = weight_grad_chunks<T>(g);
  const std::size_t per_chunk = (P + nchunks - 1) / nchunks;
  // One chunk adds straight into dw (the same bits as a partial added after when the chunk
  // is a single block of pixels): no weight-sized pass.
  T* partial = nchunks == 1 ? nullptr : detail::ensure_len(ws.partial, nchunks * wsize);
  // The gather of the forward, kernel rows merged where it can (conv2d_gather.hpp).
  const GatherShape gs = forward_gather_shape(g);
  detail::ensure_zeros(ws, std::max(g.c, gs.kc));
  const T* zero = ws.zeros.data();
  const std::size_t per_thread = gs.taps * block;
  ws.rows.resize(thread_slots_len(::fusedcnn::detail::max_threads(), per_thread));
  const GatherWindows<T> windows(ws, block, gs.window_len(g));  // a slot per pixel of a block
  constexpr std::size_t MR = kernels::DwTile<T>::mr, NR = kernels::DwTile<T>::nr;
  // Few chunks (many channels on few pixels) also split the output channels into column
  // parts, each its own work item writing its own columns: parallel, and still a function of
  // the shape alone.
  const std::size_t kparts =
      nchunks >= 8 ? 1 : std::min((kg + 2 * NR - 1) / (2 * NR), (8 + nchunks - 1) / nchunks);
  const std::size_t kstep = ((kg + kparts - 1) / kparts + NR - 1) / NR * NR;
  // Each NR columns of dz of a pixel block are copied into a contiguous per-thread panel
  // before their tiles run: dz rows are K values apart, and at K = 256..512 floats a block's
  // rows fall into a few L1 sets, so every tile re-read them from L2; a panel is read by
  // taps * C / MR tiles.
  const detail::ThreadScratch<T> panels(ws.dz_panels, kg > kernels::lanes<T> ? block * NR : 0);
  ::fusedcnn::detail::parallel_for(nchunks * kparts, [&](std::size_t item) {
    const std::size_t ci = item / kparts, kb0 = item % kparts * kstep;
    if (kb0 >= kg) return;
    const std::size_t kb1 = std::min(kg, kb0 + kstep);
    T* acc = partial ? partial + ci * wsize : dw;
    if (partial)
      for (std::size_t r = 0; r < taps * cg; ++r)
        for (std::size_t gi = 0; gi < g.groups; ++gi)
          std::fill(acc + r * K + gi * kg + kb0, acc + r * K + gi * kg + kb1, T{0});
    const std::size_t tid = ::fusedcnn::detail::thread_index();
    const T** rows = ws.rows.data() + thread_slot_offset(tid, per_thread);
    const std::size_t pend = std::min(P, (ci + 1) * per_chunk);
    for (std::size_t b0 = ci * per_chunk; b0 < pend; b0 += block) {
      const std::size_t np = std::min(block, pend - b0);
      gather_rows(g, gs, x, zero, b0, np, np, rows, block, windows.at(0));
      // Merged runs hold kw*C channels: the HWIO rows of one kernel row, in order.
      const std::size_t rc = gs.merged ? gs.kc : cg;
      if (kg <= kernels::lanes<T>) {  // at most one vector of output channels: transposed tiles
        constexpr std::size_t TC = kernels::DwtTile<T>::c, TK = kernels::DwtTile<T>::kb;
        for (std::size_t t = 0; t < gs.taps; ++t)
          for (std::size_t gi = 0; gi < g.groups; ++gi)
            for (std::size_t c0 = 0; c0 < rc; c0 += TC)
              for (std::size_t k0 = kb0; k0 < kb1; k0 += TK)
                kernels::dwt<T>(np, rows + t * block, gi * cg + c0, std::min(TC, rc - c0),
                                dz + b0 * K + gi * kg + k0, K, std::min(TK, kb1 - k0),
                                acc + (t * rc + c0) * K + gi * kg + k0, K);
        continue;
      }
      T* panel = panels.of(tid);
      for (std::size_t gi = 0; gi < g.groups; ++gi)
        for (std::size_t k0 = kb0; k0 < kb1; k0 += NR) {
          const std::size_t n = std::min(NR, kb1 - k0);
          for (std::size_t p = 0; p < np; ++p)
            std::copy_n(dz + (b0 + p) * K + gi * kg + k0, n, panel + p * NR);
          for (std::size_t t = 0; t < gs.taps; ++t)
            detail::for_exact_blocks<MR>(rc, [&]<std::size_t M>(std::size_t c0) {
              // The next tile's rows of dw (K values apart, in no stream a prefetcher
              // follows) are fetched while this one runs: once dw outgrows L2 (9.4 MB at
              // 7x7x512) each tile's adds otherwise wait on its misses.
              T* out = acc + (t * rc + c0) * K + gi * kg + k0;
              if (t * rc + c0 + 2 * M <= gs.taps * rc)
                for (std::size_t i = 0; i < M; ++i)
                  for (std::size_t e = 0; e < n; e += 64 / sizeof(T))
                    kernels::prefetch_write(out + (M + i) * K + e);
              kernels::dw<T, M, NR>(np, rows + t * block, gi * cg + c0, panel, NR, n, out, K);
            });
        }
    }
  });
  if (partial) detail::add_chunk_partials(partial, nchunks, wsize, dw);
}

// Bias gradient: db[k] += sum over pixels of dz[p, k] in double: channel_sums of fixed
// chunks of pixels (256 rows of whole vectors), in parallel, the chunks added in order.
template <class T>
void conv2d_backward_bias(const ConvGeometry& g, const T* dz, T* db, ConvWorkspace<T>& ws) {
  const std::size_t P = g.pixels(), K = g.k;
  const std::size_t per = K < 32 ? 256 * (64 / K) : 256, chunks = (P + per - 1) / per;
  if (ws.bias_partial.size() < chunks * K) ws.bias_partial = Tensor<double, 1>({chunks * K});
  double* part = ws.bias_partial.data();
  ::fusedcnn::detail::parallel_for(chunks, [&](std::size_t ci) {
    const std::size_t p0 = ci * per;
    detail::channel_sums(dz + p0 * K, std::min(P, p0 + per) - p0, K, part + ci * K);
  });
  detail::add_channel_sums(part, chunks, K, db);
}

}  // namespace fusedcnn::ops
