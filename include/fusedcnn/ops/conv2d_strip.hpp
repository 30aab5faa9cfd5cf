// The strip family: convolutions of unit horizontal stride and dilation whose output channels
// fill about one vector (more than half of it: fewer go to the row family), run as strips of
// kernels::strip_r pixels of one output row (kernels/simd/strip_rxkw.hpp). The forward reads
// x; the data gradient of a unit-stride convolution is the same kind of pass over dz, with
// the kernel flipped left to right and its channels swapped. Each output row reads kh
// zero-padded copies of its source rows, kept in a per-thread ring; every strip is an
// igemm-style row-major tile for the epilogue, in row order within fixed chunks of whole
// output rows.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>

#include "fusedcnn/core/threading.hpp"
#include "fusedcnn/kernels/epilogues.hpp"
#include "fusedcnn/kernels/igemm.hpp"
#include "fusedcnn/kernels/tile.hpp"
#include "fusedcnn/ops/conv_geometry.hpp"

namespace fusedcnn::ops {

// Whether the strip family runs the forward of g.
template <class T>
constexpr bool use_strips(const ConvGeometry& g) noexcept {
  constexpr std::size_t L = kernels::lanes<T>;
  return g.groups == 1 && g.sw == 1 && g.dw == 1 && g.kw >= 2 &&
         g.kw <= kernels::strip_max_kw && g.k > L / 2 && g.k <= L && g.wo > 0 && g.ho > 0;
}

// Whether it runs the data gradient: unit strides, and about one vector of input channels.
template <class T>
constexpr bool use_strips_for_data(const ConvGeometry& g) noexcept {
  constexpr std::size_t L = kernels::lanes<T>;
  return g.groups == 1 && g.sh == 1 && g.sw == 1 && g.dw == 1 && g.kw >= 2 &&
         g.kw <= kernels::strip_max_kw && g.c > L / 2 && g.c <= L && g.wo > 0 && g.ho > 0;
}

// The strip family's plan over `rows` pixels of rows `width` long: chunks of whole rows
// (about 256 pixels).
inline ConvPlan plan_strips(std::size_t rows, std::size_t width) noexcept {
  ConvPlan p;
  p.by_strips = true;
  p.rows = rows;
  p.chunk_rows = rows_per_chunk(width) * width;
  p.chunks = (p.rows + p.chunk_rows - 1) / p.chunk_rows;
  return p;
}

// Packs HWIO weights for the forward as [kh][kw][C][L]: the HWIO order with output channels
// padded to one vector, each multiplied by scale[k] when scale is given (BN folding).
template <class T>
void pack_strip_weights(const ConvGeometry& g, const T* w, const T* scale, ConvWorkspace<T>& ws) {
  constexpr std::size_t L = kernels::lanes<T>;
  const std::size_t rows = g.taps() * g.c, K = g.k;
  T* out = detail::ensure_len(ws.packed, rows * L);
  for (std::size_t r = 0; r < rows; ++r, out += L) {
    for (std::size_t k = 0; k < K; ++k) out[k] = scale ? w[r * K + k] * scale[k] : w[r * K + k];
    for (std::size_t k = K; k < L; ++k) out[k] = T{0};
  }
}

// Packs HWIO weights for the data gradient as [kh][kw][K][L]: tap column b holds the kernel's
// column kw - 1 - b, each (k, c) block transposed, input channels padded to one vector.
template <class T>
void pack_strip_data_weights(const ConvGeometry& g, const T* w, ConvWorkspace<T>& ws) {
  constexpr std::size_t L = kernels::lanes<T>;
  const std::size_t C = g.c, K = g.k;
  T* out = detail::ensure_len(ws.packed, g.taps() * K * L);
  for (std::size_t a = 0; a < g.kh; ++a)
    for (std::size_t b = 0; b < g.kw; ++b) {
      const T* tap = w + (a * g.kw + (g.kw - 1 - b)) * C * K;
      for (std::size_t k = 0; k < K; ++k, out += L) {
        for (std::size_t c = 0; c < C; ++c) out[c] = tap[c * K + k];
        for (std::size_t c = C; c < L; ++c) out[c] = T{0};
      }
    }
}

namespace detail {

// One strip pass: out pixel (n, r, q) of nrows x width reads, for kernel row a, source row
// row0 + r * row_step + a * tap_step of src (n images of hs x wsrc pixels, cs channels) from
// column q + col0 on; rows and columns outside src read zeros.
struct StripPass {
  std::size_t n, nrows, width, cout;  // output
  std::size_t hs, wsrc, cs;           // source
  std::size_t kh, kw;
  std::ptrdiff_t row0, row_step, tap_step, col0;
};

// Strips whose window of R + KW - 1 source pixels lies inside the source row read it in
// place; the others, at the row's ends, read padded copies of just the ends (a strip pass
// copied each whole row before: a tenth of a 16-channel 3x3 layer's time). In padded columns
// (column q holds source column q + col0; zeros outside [q0, q1)), strips [lo, hi) read in
// place, the ones before from a left copy of columns [0, left), the ones after from a right
// copy of columns [right, end). When no strip fits in place, the left copy is the whole row.
struct StripEdges {
  std::size_t lo, hi, left, right, end;
  StripEdges(std::size_t strips, std::size_t R, std::size_t win, std::ptrdiff_t q0,
             std::ptrdiff_t q1) noexcept
      : lo(static_cast<std::size_t>(q0 + static_cast<std::ptrdiff_t>(R) - 1) / R), hi(lo),
        left(0), right(0), end((strips - 1) * R + win) {
    if (q1 >= static_cast<std::ptrdiff_t>(win))
      hi = std::max(lo, std::min(strips, (static_cast<std::size_t>(q1) - win) / R + 1));
    if (hi == lo) lo = hi = strips;  // nothing in place: one whole-row copy
    left = lo > 0 ? (lo - 1) * R + win : 0;
    right = hi < strips ? hi * R : end;
  }
  // Padded values a row's copies take: the left one, then the right one.
  std::size_t copied(std::size_t C) const noexcept { return (left + end - right) * C; }
};

// dst[j] for padded columns [from, to) of a source row `line` (cs channels each).
template <class T>
void copy_padded(const T* line, std::ptrdiff_t col0, std::ptrdiff_t q0, std::ptrdiff_t q1,
                 std::size_t C, std::ptrdiff_t from, std::ptrdiff_t to, T* dst) noexcept {
  const std::ptrdiff_t a = std::clamp(q0, from, to), b = std::clamp(q1, a, to);
  std::fill_n(dst, static_cast<std::size_t>(a - from) * C, T{0});
  if (b > a)  // a >= q0 here, so the source pointers stay inside the row
    std::copy(line + (a + col0) * static_cast<std::ptrdiff_t>(C),
              line + (b + col0) * static_cast<std::ptrdiff_t>(C), dst + (a - from) * C);
  std::fill_n(dst + (b - from) * C, static_cast<std::size_t>(to - b) * C, T{0});
}

// Runs the strip kernel over every strip of the pass; each goes to epi(TileInfo). The padded
// copies of a source row's ends (StripEdges) live in a per-thread ring of `span` slots (the
// rows one output row's taps reach), so that consecutive output rows reuse them and each
// source row is copied about once per chunk.
template <class T, class Epi>
void strip_driver(const StripPass& s, const ConvPlan& plan, const T* src, const T* w,
                  ConvWorkspace<T>& ws, Epi& epi) {
  constexpr std::size_t L = kernels::lanes<T>, R = kernels::strip_r;
  const std::size_t strips = (s.width + R - 1) / R, C = s.cs, win = R + s.kw - 1;
  // Whole vectors per row, so that the tile after the ring stays aligned for its stores.
  const std::size_t row_len = ((strips * R + s.kw - 1) * C + L - 1) / L * L;
  const std::size_t span = (s.kh - 1) * static_cast<std::size_t>(std::abs(s.tap_step)) + 1;
  const auto H = static_cast<std::ptrdiff_t>(s.hs), W = static_cast<std::ptrdiff_t>(s.wsrc);
  // Padded columns [q0, q1) hold source columns [q0 + col0, q1 + col0), the rest zeros.
  const std::ptrdiff_t q0 = std::max<std::ptrdiff_t>(0, -s.col0);
  const std::ptrdiff_t q1 = std::min<std::ptrdiff_t>(static_cast<std::ptrdiff_t>(row_len / C),
                                                     W - s.col0);
  const StripEdges e(strips, R, win, q0, q1);
  const std::size_t slot_len = (e.copied(C) + L - 1) / L * L;
  ensure_zeros(ws, row_len);
  const T* zero = ws.zeros.data();
  const ThreadScratch<T> scratch(ws.scratch, span * slot_len + R * L);
  const std::size_t ptrs = 3 * s.kh + span;  // copies, lines, at, and the ring's tags
  ws.rows.resize(thread_slots_len(::fusedcnn::detail::max_threads(), ptrs));
  const std::size_t per_chunk = plan.chunk_rows / s.width, out_rows = s.n * s.nrows;
  kernels::with_strip_kw(s.kw, [&]<std::size_t KW>() {
    ::fusedcnn::detail::parallel_for(plan.chunks, [&](std::size_t chunk) {
      const std::size_t tid = ::fusedcnn::detail::thread_index();
      T* ring = scratch.of(tid);
      T* tile = ring + span * slot_len;
      // each kernel row's end copies
      const T** copies = ws.rows.data() + thread_slot_offset(tid, ptrs);
      const T** lines = copies + s.kh;                  // its source row (null: padding)
      const T** at = lines + s.kh;                      // where the strip reads each
      const T** tag = at + s.kh;                        // the source row each slot holds
      std::fill_n(tag, span, nullptr);
      const std::size_t r0 = chunk * per_chunk, r1 = std::min(out_rows, r0 + per_chunk);
      for (std::size_t r = r0; r < r1; ++r) {
        const std::size_t n = r / s.nrows;
        const auto oh = static_cast<std::ptrdiff_t>(r % s.nrows);
        for (std::size_t a = 0; a < s.kh; ++a) {
          const std::ptrdiff_t h =
              s.row0 + oh * s.row_step + static_cast<std::ptrdiff_t>(a) * s.tap_step;
          if (h < 0 || h >= H || q1 <= q0) {
            copies[a] = lines[a] = nullptr;
            continue;
          }
          const T* line = src + (n * s.hs + static_cast<std::size_t>(h)) * s.wsrc * C;
          const std::size_t slot = static_cast<std::size_t>(h) % span;
          T* dst = ring + slot * slot_len;
          lines[a] = line;
          copies[a] = dst;
          if (tag[slot] == line) continue;
          tag[slot] = line;
          const auto left = static_cast<std::ptrdiff_t>(e.left);
          copy_padded(line, s.col0, q0, q1, C, 0, left, dst);
          copy_padded(line, s.col0, q0, q1, C, static_cast<std::ptrdiff_t>(e.right),
                      static_cast<std::ptrdiff_t>(e.end), dst + e.left * C);
        }
        for (std::size_t q = 0; q < strips; ++q) {
          const std::size_t w0 = q * R;
          for (std::size_t a = 0; a < s.kh; ++a) {
            if (!lines[a]) {
              at[a] = zero + w0 * C;
            } else if (q < e.lo) {
              at[a] = copies[a] + w0 * C;
            } else if (q >= e.hi) {
              at[a] = copies[a] + (e.left + w0 - e.right) * C;
            } else {
              at[a] = lines[a] + (static_cast<std::ptrdiff_t>(w0) + s.col0) *
                                     static_cast<std::ptrdiff_t>(C);
            }
          }
          kernels::strip<T, KW>(s.kh, C, at, w, tile);
          epi(kernels::TileInfo<T>{tile, L, std::min(R, s.width - w0), s.cout, r * s.width + w0,
                                   0, chunk, r0 * s.width});
        }
      }
    });
  });
}

}  // namespace detail

// Forward through the strips; every strip goes to epi(TileInfo).
template <class T, class Epi>
void strips_forward(const ConvGeometry& g, const ConvPlan& plan, const T* x, ConvWorkspace<T>& ws,
                    Epi& epi) {
  const auto sh = static_cast<std::ptrdiff_t>(g.sh), dh = static_cast<std::ptrdiff_t>(g.dh);
  const detail::StripPass s{g.n, g.ho, g.wo, g.k, g.h, g.w, g.c, g.kh, g.kw,
                            -static_cast<std::ptrdiff_t>(g.pt), sh, dh,
                            -static_cast<std::ptrdiff_t>(g.pl)};
  detail::strip_driver(s, plan, x, ws.packed.data(), ws, epi);
}

// Data gradient of a unit-stride convolution: input pixel (h, w) gathers dz at
// (h + pt - a*dh, w + pl - b) for every tap (a, b), a strip pass over dz with the kernel
// flipped left to right (pack_strip_data_weights). Overwrites dx.
template <class T>
void strips_backward_data(const ConvGeometry& g, const ConvPlan& plan, const T* dz, T* dx,
                          ConvWorkspace<T>& ws) {
  const detail::StripPass s{g.n, g.h, g.w, g.c, g.ho, g.wo, g.k, g.kh, g.kw,
                            static_cast<std::ptrdiff_t>(g.pt), 1,
                            -static_cast<std::ptrdiff_t>(g.dh),
                            static_cast<std::ptrdiff_t>(g.pl) - static_cast<std::ptrdiff_t>(g.kw - 1)};
  kernels::BiasActEpilogue<T, false> store{dx, g.c, nullptr};
  detail::strip_driver(s, plan, dz, ws.packed.data(), ws, store);
}

}  // namespace fusedcnn::ops
