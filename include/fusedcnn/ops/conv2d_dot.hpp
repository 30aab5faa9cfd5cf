// The dot family's forward: groups with few output channels (kernels::dot_max_kb: 8 on
// AVX-512) and more input channels than the row family takes, run through kernels/dot.hpp,
// vectorised over the contraction. Row pointers come from the forward gather
// (conv2d_gather.hpp's ForwardRows), as for the igemm family; a chunk's sums go to the
// epilogue as one row-major tile per group, chunks being fixed runs of output pixels. The
// gradients stay with the igemm family.
#pragma once

#include <algorithm>
#include <cstddef>

#include "fusedcnn/core/threading.hpp"
#include "fusedcnn/kernels/dot.hpp"
#include "fusedcnn/kernels/tile.hpp"
#include "fusedcnn/kernels/transpose.hpp"
#include "fusedcnn/ops/conv2d_gather.hpp"
#include "fusedcnn/ops/conv2d_rows.hpp"
#include "fusedcnn/ops/conv_geometry.hpp"

namespace fusedcnn::ops {

// Whether the dot family runs the forward of g (plan_forward asks the strips first): groups
// with few output channels that the row family (few input channels) leaves, when the dot
// tile does fewer FMAs per output pixel. It does kg per vector of every run, and summing the
// lanes of kg sums costs about 5 more; the igemm narrow tile does taps * cg (one vector of
// output channels, kg of its lanes busy), each at about 1/0.7 the dot's speed for floats,
// 1/0.8 for doubles. With one run per pixel (1x1 layers) the igemm reads each row once, a
// few lines at a time, and its FMAs run at only 1/0.9 (floats) and 1/1.1 (doubles) the dot's.
// (Measured crossovers, 8 output channels: 3x3 from 20-24 float input channels on; 1x1 from
// 96-128 float and 256-512 double ones, 32-64 floats at 4 outputs with AVX2; 120 -> 6
// channels at 3x3: 2.1x faster.)
template <class T>
constexpr bool use_dot(const ConvGeometry& g) noexcept {
  constexpr std::size_t L = kernels::RowVec<T>::lanes;
  if (g.kg() > kernels::dot_max_kb<T> || use_rows<T>(g) || g.wo == 0 || g.ho == 0) return false;
  const GatherShape s = forward_run_shape(g);
  const std::size_t speed = s.taps == 1 ? (sizeof(T) == 4 ? 9 : 11) : (sizeof(T) == 4 ? 7 : 8);
  const std::size_t steps = s.taps * ((s.kc + L - 1) / L);
  return 10 * g.kg() * (steps + 5) < speed * g.taps() * g.cg();
}

// The dot forward's plan: its work items are whole chunks (a tile takes all of a group's
// output channels, so there is one column block).
template <class T>
ConvPlan plan_dot(const ConvGeometry& g) noexcept {
  ConvPlan p;
  p.by_dot = true;
  p.tile = {kernels::dot_mr<T>(g.kg()), g.kg()};
  p.rows = g.pixels();
  const std::size_t tiles = (p.rows + p.tile.mr - 1) / p.tile.mr;
  p.chunk_rows = tiles_per_chunk(tiles, 1) * p.tile.mr;
  p.chunks = (p.rows + p.chunk_rows - 1) / p.chunk_rows;
  return p;
}

// Values per (output channel, run) of the packed weights: whole vectors.
template <class T>
std::size_t dot_run_len(const GatherShape& s) noexcept {
  constexpr std::size_t L = kernels::RowVec<T>::lanes;
  return (s.kc + L - 1) / L * L;
}

// Packs HWIO weights for the dot forward as [group][k][run][kcp], zero past each run's kc
// values, output channel k multiplied by scale[k] when scale is given (BN folding). A merged
// run (one group) is a kernel row's kw * C consecutive HWIO rows.
template <class T>
void pack_dot_weights(const ConvGeometry& g, const T* w, const T* scale, ConvWorkspace<T>& ws) {
  const GatherShape s = forward_run_shape(g);
  const std::size_t kg = g.kg(), kcp = dot_run_len<T>(s), K = g.k;
  T* out = detail::ensure_len(ws.packed, g.groups * kg * s.taps * kcp);
  for (std::size_t gi = 0; gi < g.groups; ++gi)
    for (std::size_t kk = 0; kk < kg; ++kk) {
      const std::size_t k = gi * kg + kk;
      const T sc = scale ? scale[k] : T{1};
      for (std::size_t t = 0; t < s.taps; ++t, out += kcp) {
        for (std::size_t c = 0; c < s.kc; ++c) out[c] = w[(t * s.kc + c) * K + k] * sc;
        std::fill(out + s.kc, out + kcp, T{0});
      }
    }
}

// Forward through the dot kernel. A chunk's tiles are summed into one row-major tile per
// group for epi(TileInfo): few, long epilogue calls (each costs a statistics update per
// channel, and a tile of 4 pixels made the fused training forward of a 120 -> 6 channel layer
// slower than the conv and batch-norm layers run apart).
template <class T, class Epi>
void dot_forward(const ConvGeometry& g, const ConvPlan& plan, const T* x, ConvWorkspace<T>& ws,
                 Epi& epi) {
  constexpr std::size_t L = kernels::RowVec<T>::lanes;
  const ForwardRows<T> fwd_rows(g, x, ws, plan.chunk_rows);
  const GatherShape& s = fwd_rows.shape();
  const std::size_t kg = g.kg(), kcp = dot_run_len<T>(s), per_group = kg * s.taps * kcp;
  kernels::with_dot_kb<T>(kg, [&]<std::size_t KB, std::size_t MR>() {
    ws.rows.resize(thread_slots_len(::fusedcnn::detail::max_threads(), s.taps * MR));
    ::fusedcnn::detail::parallel_for(plan.chunks, [&](std::size_t chunk) {
      const std::size_t tid = ::fusedcnn::detail::thread_index();
      const T** rows = ws.rows.data() + thread_slot_offset(tid, s.taps * MR);
      const std::size_t c0 = chunk * plan.chunk_rows;
      const std::size_t c1 = std::min(plan.rows, c0 + plan.chunk_rows);
      alignas(64) T vs[MR * KB * L];
      T out[max_tiles_per_chunk * MR * KB];  // the chunk's outputs of one group, row-major
      for (std::size_t gi = 0; gi < g.groups; ++gi) {  // each group gathers its tiles again
        for (std::size_t p0 = c0; p0 < c1; p0 += MR) {
          fwd_rows.fill(p0, std::min(MR, c1 - p0), MR, rows);
          kernels::dot_mrxkb<T, MR, KB>(s.taps, s.kc, kcp, rows, gi * s.kc,
                                        ws.packed.data() + gi * per_group, vs);
          kernels::sum_lanes<T, L>(vs, MR * KB, out + (p0 - c0) * KB);
        }
        epi(kernels::TileInfo<T>{out, KB, c1 - c0, KB, c0, gi * kg, chunk, c0});
      }
    });
  });
}

}  // namespace fusedcnn::ops
