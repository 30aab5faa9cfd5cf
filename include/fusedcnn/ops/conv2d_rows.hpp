// The row family's convolution drivers: forward, backward-data and backward-weights for
// groups with few output channels, vectorised over output pixels (kernels/rows.hpp).
//
// x is read as planar rows [padded row][channel][phase][wq] with the padding stored as
// zeros, so the kernels need no bounds checks and every stride and dilation reads contiguous
// pixels; each thread makes the rows its output rows need in a small window (PlanarWindow).
// dz is rewritten once per backward as [n*Ho][K][dz_len] zero-padded runs.
// Chunks are runs of whole output rows (a function of the shape alone), so per-chunk
// statistics and weight-gradient partials do not depend on the thread count.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

#include "fusedcnn/core/threading.hpp"
#include "fusedcnn/kernels/rows.hpp"
#include "fusedcnn/kernels/tile.hpp"
#include "fusedcnn/kernels/transpose.hpp"
#include "fusedcnn/ops/conv_geometry.hpp"

namespace fusedcnn::ops {

// Whether the row family runs this convolution: when a group's output channels fill at most
// half a vector, a channel-vectorised tile would leave most lanes empty. With many input
// channels per group the igemm tile still wins (its row pointers and packed panels amortise
// over a long reduction; measured 2x faster at 120 -> 6 channels), so the row family takes
// groups of up to 16 input channels.
template <class T>
constexpr bool use_rows(const ConvGeometry& g) noexcept {
  return g.kg() <= kernels::RowVec<T>::lanes / 2 && g.cg() <= 16 && g.wo > 0 && g.ho > 0;
}

// Whether the row family runs the data gradient: also when the input channels of a group are
// few (the data gradient's output columns), however many output channels it sums over, as in
// a 3-channel stem convolution, where the igemm tile would leave most lanes empty (at most
// 4 of them busy, for float and double alike).
template <class T>
constexpr bool use_rows_for_data(const ConvGeometry& g) noexcept {
  return use_rows<T>(g) ||
         (g.cg() <= 4 && g.kg() <= 128 && g.wo > 0 && g.ho > 0);
}

// The row family's plan over the output pixels of g.
template <class T>
ConvPlan plan_rows(const ConvGeometry& g) noexcept {
  constexpr std::size_t L = kernels::RowVec<T>::lanes;
  ConvPlan p;
  p.by_rows = true;
  const std::size_t vecs = (g.wo + L - 1) / L;
  p.row_nv = vecs >= 4 && kernels::row_max_nv<T> >= 4 ? 4 : vecs >= 2 ? 2 : 1;
  p.rows = g.pixels();
  p.chunk_rows = rows_per_chunk(g.wo) * g.wo;
  p.chunks = (p.rows + p.chunk_rows - 1) / p.chunk_rows;
  return p;
}

// Whether the row family's data gradient gathers (stride 1: a forward row convolution over
// zero-padded planar dz) rather than scatters.
inline bool rows_data_gathers(const ConvGeometry& g) noexcept { return g.sh == 1 && g.sw == 1; }

// Sizes of the planar buffers of one geometry.
struct RowsLayout {
  std::size_t hp;      // padded input rows
  std::size_t wq;      // elements per (channel, phase) run
  std::size_t chan;    // elements per channel: phases * wq
  std::size_t row;     // elements per planar row: C * chan
  std::size_t wo_pad;  // output pixels per row, rounded up to whole tiles
  std::size_t w_pad;   // input pixels per row, rounded up to whole tiles
  std::size_t dz_lp;   // zeros before each planar dz run (the stride-1 data gradient's left reach)
  std::size_t dz_len;  // elements per planar dz run: dz_lp zeros, Wo values, zeros
};

// Runs are whole vectors long and dz values start a vector in, so that with the buffers'
// vector alignment every channel run starts aligned: the weight gradient's dz loads and one
// tap column's input loads then never straddle two cache lines (a 1-float dz offset made
// every dz load a split load: the 8-channel weight gradient ran at 2/3 the speed).
template <class T>
RowsLayout rows_layout(const ConvGeometry& g, const ConvPlan& plan) noexcept {
  constexpr std::size_t L = kernels::RowVec<T>::lanes;
  const std::size_t px = plan.row_nv * L;
  auto whole = [](std::size_t n) { return (n + L - 1) / L * L; };
  RowsLayout l;
  l.hp = g.h + g.pt + g.pb;
  l.wo_pad = (g.wo + px - 1) / px * px;
  const std::size_t qmax = (g.kw - 1) * g.dw / g.sw;
  const std::size_t cols = (g.w + g.pl + g.pr + g.sw - 1) / g.sw;
  l.wq = whole(std::max(cols, l.wo_pad + qmax));
  l.chan = g.sw * l.wq;
  l.row = g.c * l.chan;
  l.w_pad = (g.w + px - 1) / px * px;
  const std::size_t reach = (g.kw - 1) * g.dw;
  l.dz_lp = rows_data_gathers(g) && reach > g.pl ? whole(reach - g.pl) : 0;
  l.dz_len = l.dz_lp + whole(std::max(l.wo_pad, g.pl + l.w_pad));
  return l;
}

namespace detail {

// off[b] for every tap column b: phase * wq + index offset within a channel's planar row.
inline const std::size_t* tap_offsets(const ConvGeometry& g, const RowsLayout& l,
                                      std::vector<std::size_t>& off) {
  off.resize(g.kw);
  for (std::size_t b = 0; b < g.kw; ++b) off[b] = (b * g.dw % g.sw) * l.wq + b * g.dw / g.sw;
  return off.data();
}

// interleave for the channel counts it is compiled for (1-4, 8); false otherwise.
template <class T>
bool interleave_any(std::size_t C, const T* src, std::size_t chan, std::size_t w,
                    T* dst) noexcept {
  switch (C) {
    case 1: return kernels::interleave<T, 1>(src, chan, w, dst), true;
    case 2: return kernels::interleave<T, 2>(src, chan, w, dst), true;
    case 3: return kernels::interleave<T, 3>(src, chan, w, dst), true;
    case 4: return kernels::interleave<T, 4>(src, chan, w, dst), true;
    case 8: return kernels::interleave<T, 8>(src, chan, w, dst), true;
    default: return false;
  }
}

// deinterleave for the channel counts it is compiled for (1-4, 8, 16); false otherwise.
template <class T>
bool deinterleave_any(std::size_t C, const T* src, std::size_t w, T* dst,
                      std::size_t chan) noexcept {
  switch (C) {
    case 1: return kernels::deinterleave<T, 1>(src, w, dst, chan), true;
    case 2: return kernels::deinterleave<T, 2>(src, w, dst, chan), true;
    case 3: return kernels::deinterleave<T, 3>(src, w, dst, chan), true;
    case 4: return kernels::deinterleave<T, 4>(src, w, dst, chan), true;
    case 8: return kernels::deinterleave<T, 8>(src, w, dst, chan), true;
    case 16: return kernels::deinterleave<T, 16>(src, w, dst, chan), true;
    default: return false;
  }
}

// Where the input columns of column phase ph go in its planar run: input columns w0,
// w0 + sw, ... (cnt of them) land at index at, at + 1, ...; the rest of the run is padding.
struct PhaseRun {
  std::size_t w0 = 0, cnt = 0, at = 0;
  PhaseRun() = default;
  PhaseRun(const ConvGeometry& g, std::size_t ph) noexcept
      : w0((ph + g.sw - g.pl % g.sw) % g.sw),
        cnt(w0 < g.w ? (g.w - w0 + g.sw - 1) / g.sw : 0),
        at(cnt ? (w0 + g.pl) / g.sw : 0) {}
};

// What planarize_row makes of each padded row, worked out once per call (divisions per
// row and phase cost more than a few-channel row's copy): the rows and column phases some
// tap reads (a stride past the kernel's reach skips the others, which are never made
// planar) and each phase's run. Row hp is read when its residue mod sh is one of a*dh's and
// it is not past the last output row's reach.
class RowsReads {
 public:
  explicit RowsReads(const ConvGeometry& g) noexcept : g_(g) {
    if (g.sh <= 64)
      for (std::size_t a = 0; a < g.kh; ++a) residues_ |= std::uint64_t{1} << (a * g.dh % g.sh);
    all_residues_ = g.sh > 64 || residues_ == (g.sh == 64 ? ~std::uint64_t{0}
                                                          : (std::uint64_t{1} << g.sh) - 1);
    if (g.sw <= 64)
      for (std::size_t b = 0; b < g.kw; ++b) phases_ |= std::uint64_t{1} << (b * g.dw % g.sw);
    last_row_ = (g.ho - 1) * g.sh + (g.kh - 1) * g.dh;
    for (std::size_t ph = 0; ph < std::min(g.sw, runs_.size()); ++ph) runs_[ph] = PhaseRun(g, ph);
  }
  bool row(std::size_t hp) const noexcept {
    return hp <= last_row_ && (all_residues_ || (residues_ >> (hp % g_.sh) & 1));
  }
  bool phase(std::size_t ph) const noexcept { return g_.sw > 64 || (phases_ >> ph & 1); }
  PhaseRun run(std::size_t ph) const noexcept {
    return ph < runs_.size() ? runs_[ph] : PhaseRun(g_, ph);
  }

 private:
  const ConvGeometry& g_;
  std::uint64_t residues_ = 0, phases_ = 0;  // bit r: residue / phase r is read
  bool all_residues_ = true;
  std::size_t last_row_ = 0;
  std::array<PhaseRun, 8> runs_{};  // the first phases' runs
};

// Writes padded row hp of image n of x (N,H,W,C) as its zero-padded planar row dst. Rows and
// column phases no tap reads are left as they are.
template <class T>
void planarize_row(const ConvGeometry& g, const RowsLayout& l, const RowsReads& reads,
                   const T* x, std::size_t n, std::size_t hp, T* dst) {
  if (!reads.row(hp)) return;
  if (hp < g.pt || hp - g.pt >= g.h) {
    std::fill_n(dst, l.row, T{0});
    return;
  }
  const T* src = x + (n * g.h + (hp - g.pt)) * g.w * g.c;
  if (g.sw == 1 && deinterleave_any(g.c, src, g.w, dst + g.pl, l.chan)) {
    // one phase, split into channel runs in registers: only the padding is left
    for (std::size_t c = 0; c < g.c; ++c) {
      std::fill_n(dst + c * l.chan, g.pl, T{0});
      std::fill(dst + c * l.chan + g.pl + g.w, dst + c * l.chan + l.wq, T{0});
    }
    return;
  }
  for (std::size_t c = 0; c < g.c; ++c)
    for (std::size_t ph = 0; ph < g.sw; ++ph) {
      if (!reads.phase(ph)) continue;
      // input columns w with (w + pl) % sw == ph land at index (w + pl) / sw of phase ph;
      // everything else in the run is padding
      T* run = dst + c * l.chan + ph * l.wq;
      const PhaseRun pr = reads.run(ph);
      const std::size_t step = g.sw * g.c;
      std::fill_n(run, pr.at, T{0});
      const T* s = src + pr.w0 * g.c + c;
      for (std::size_t i = 0; i < pr.cnt; ++i) run[pr.at + i] = s[i * step];
      std::fill(run + pr.at + pr.cnt, run + l.wq, T{0});
    }
}

// A thread's window of planar input rows (forward, weight gradient): the padded rows that a
// chunk of `out_rows` output rows reads, each in slot hp % size, made when an output row
// first needs it and kept while the chunk's passes (groups, output-channel blocks) read it
// again. The chunks of a thread come in order, so each input row is made about once per
// thread, into a buffer that stays in L1/L2, instead of all of x being written out planar
// and read back. Slot tags (per thread, in ws.window_tags at thread_slot_offset) say which
// row a slot holds, so reuse never depends on the order chunks run in.
template <class T>
class PlanarWindow {
 public:
  PlanarWindow(const ConvGeometry& g, const RowsLayout& l, const RowsReads& reads, const T* x,
               std::size_t size, T* rows, std::size_t* tags) noexcept
      : g_(g), l_(l), reads_(reads), x_(x), size_(size), rows_(rows), tags_(tags) {}

  // Slots for chunks of out_rows output rows: every row such a chunk reads (when it lies in
  // one image), so no two rows of one output row share a slot.
  static std::size_t size(const ConvGeometry& g, std::size_t out_rows) noexcept {
    return (out_rows - 1) * g.sh + (g.kh - 1) * g.dh + 1;
  }

  // The planar row of padded input row hp of image n, made if the window does not hold it.
  const T* row(std::size_t n, std::size_t hp) {
    // base_: a multiple of size_ near the rows asked for (lookups come per output row and
    // kernel row, in nearly rising order), so a slot is a subtraction, not a division
    if (hp < base_ || hp - base_ >= size_) base_ = hp - hp % size_;
    const std::size_t slot = hp - base_, tag = n * l_.hp + hp + 1;  // 0: empty
    T* dst = rows_ + slot * l_.row;
    if (tags_[slot] != tag) {
      planarize_row(g_, l_, reads_, x_, n, hp, dst);
      tags_[slot] = tag;
    }
    return dst;
  }

 private:
  const ConvGeometry& g_;
  const RowsLayout& l_;
  const RowsReads& reads_;
  const T* x_;
  std::size_t size_, base_ = 0;
  T* rows_;
  std::size_t* tags_;
};

// Writes output row r of dz (src: Wo pixels of K values) as its [K][dz_len] planar runs:
// dz_lp zeros, Wo values, zeros.
template <class T>
void planarize_dz_row(const ConvGeometry& g, const RowsLayout& l, const T* src, T* row) {
  for (std::size_t k = 0; k < g.k; ++k) {
    std::fill_n(row + k * l.dz_len, l.dz_lp, T{0});
    std::fill(row + k * l.dz_len + l.dz_lp + g.wo, row + (k + 1) * l.dz_len, T{0});
  }
  T* dst = row + l.dz_lp;
  if (deinterleave_any(g.k, src, g.wo, dst, l.dz_len)) return;
  for (std::size_t k = 0; k < g.k; ++k) {
    T* d = dst + k * l.dz_len;
    for (std::size_t i = 0; i < g.wo; ++i) d[i] = src[i * g.k + k];
  }
}

// Rewrites dz (N*Ho*Wo, K) as [N*Ho][K][dz_len] runs, an output row per parallel task.
template <class T>
void planarize_dz(const ConvGeometry& g, const RowsLayout& l, const T* dz, T* out) {
  ::fusedcnn::detail::parallel_for(g.n * g.ho, [&](std::size_t r) {
    planarize_dz_row(g, l, dz + r * g.wo * g.k, out + r * g.k * l.dz_len);
  });
}

// The planar dz straight from its producer: make_dz(p0, np, dst) writes the np pixels of dz
// from pixel p0 on to dst (NHWC), a chunk of whole output rows (about 256 pixels) at a time
// into a per-thread buffer that stays in L1, so dz itself is never written out and read back.
// When sums_wanted, each chunk's channel sums (for the bias gradient) go to
// sums_buf[chunk * K + k], in double; returns the number of chunks (a function of the shape
// alone).
template <class T, class MakeDz>
std::size_t planarize_dz_from(const ConvGeometry& g, const RowsLayout& l, MakeDz& make_dz,
                              T* out, Tensor<double, 1>& sums_buf, bool sums_wanted,
                              ConvWorkspace<T>& ws) {
  const std::size_t per_chunk = rows_per_chunk(g.wo), out_rows = g.n * g.ho;
  const std::size_t chunks = (out_rows + per_chunk - 1) / per_chunk;
  const ThreadScratch<T> scratch(ws.scratch, per_chunk * g.wo * g.k);
  if (sums_wanted && sums_buf.size() < chunks * g.k)
    sums_buf = Tensor<double, 1>({chunks * g.k});
  double* sums = sums_wanted ? sums_buf.data() : nullptr;
  ::fusedcnn::detail::parallel_for(chunks, [&](std::size_t ci) {
    T* buf = scratch.mine();
    const std::size_t r0 = ci * per_chunk, nr = std::min(out_rows, r0 + per_chunk) - r0;
    make_dz(r0 * g.wo, nr * g.wo, buf);
    if (sums) channel_sums(buf, nr * g.wo, g.k, sums + ci * g.k);
    for (std::size_t r = 0; r < nr; ++r)
      planarize_dz_row(g, l, buf + r * g.wo * g.k, out + (r0 + r) * g.k * l.dz_len);
  });
  return chunks;
}

// The planar dz: made anew by the weight gradient (`fresh`), reused by the data gradient
// that follows it in the same backward, which then forgets it.
template <class T>
const T* planar_dz(const ConvGeometry& g, const RowsLayout& l, const T* dz,
                   ConvWorkspace<T>& ws, bool fresh) {
  if (fresh || ws.planar_dz_of != dz || ws.planar_dz.size() < g.n * g.ho * g.k * l.dz_len) {
    planarize_dz(g, l, dz, ensure_len(ws.planar_dz, g.n * g.ho * g.k * l.dz_len));
    ws.planar_dz_of = dz;
  }
  return ws.planar_dz.data();
}

}  // namespace detail

// Packs HWIO weights per group as [group][tap][c][kg], output channel k scaled by scale[k]
// when given: the forward's layout, and the scattering data gradient's.
template <class T>
void pack_rows_weights(const ConvGeometry& g, const T* w, const T* scale, ConvWorkspace<T>& ws) {
  const std::size_t cg = g.cg(), kg = g.kg(), taps = g.taps(), K = g.k;
  T* out = detail::ensure_len(ws.packed, g.groups * taps * cg * kg);
  for (std::size_t gi = 0; gi < g.groups; ++gi)
    for (std::size_t t = 0; t < taps; ++t)
      for (std::size_t c = 0; c < cg; ++c)
        for (std::size_t kk = 0; kk < kg; ++kk) {
          const std::size_t k = gi * kg + kk;
          const T v = w[(t * cg + c) * K + k];
          *out++ = scale ? v * scale[k] : v;
        }
}

// Packs HWIO weights for the row family's data gradient: the stride-1 gather reads them as
// [group][tap][k][c] (the forward kernel's [term][output channel] order), the scatter as
// pack_rows_weights' [group][tap][c][k].
template <class T>
void pack_rows_data_weights(const ConvGeometry& g, const T* w, ConvWorkspace<T>& ws) {
  if (!rows_data_gathers(g)) return pack_rows_weights(g, w, static_cast<const T*>(nullptr), ws);
  const std::size_t cg = g.cg(), kg = g.kg(), taps = g.taps(), K = g.k;
  T* out = detail::ensure_len(ws.packed, g.groups * taps * kg * cg);
  for (std::size_t gi = 0; gi < g.groups; ++gi)
    for (std::size_t t = 0; t < taps; ++t)
      for (std::size_t k = 0; k < kg; ++k)
        for (std::size_t c = 0; c < cg; ++c) *out++ = w[(t * cg + c) * K + gi * kg + k];
}

// Forward through the row kernels. Each chunk's rows, for one group and block of <= 4
// channels, make one channel-major tile for epi(TileInfo): few, long epilogue calls (each
// costs a statistics update per channel). Rows are written densely one after another: a
// row's last vector may spill past its end, and the next row overwrites the spill.
template <class T, class Epi>
void rows_forward(const ConvGeometry& g, const ConvPlan& plan, const T* x, ConvWorkspace<T>& ws,
                  Epi& epi) {
  constexpr std::size_t L = kernels::RowVec<T>::lanes, KB = kernels::row_fwd_max_kb<T>;
  const RowsLayout l = rows_layout<T>(g, plan);
  const detail::RowsReads reads(g);
  const std::size_t* off = detail::tap_offsets(g, l, ws.offsets);
  const std::size_t cg = g.cg(), kg = g.kg(), px = plan.row_nv * L, nsrc = g.taps() * cg;
  const std::size_t per_chunk = plan.chunk_rows / g.wo, out_rows = g.n * g.ho;
  const std::size_t cs = (plan.chunk_rows + px + L - 1) / L * L;  // channel stride of a tile
  const std::size_t threads = ::fusedcnn::detail::max_threads();
  const std::size_t wrows = detail::PlanarWindow<T>::size(g, per_chunk);
  ws.rows.resize(thread_slots_len(threads, nsrc));
  const detail::ThreadScratch<T> scratch(ws.scratch, KB * cs + wrows * l.row);
  ws.window_tags.assign(thread_slots_len(threads, wrows), 0);
  ::fusedcnn::detail::parallel_for(plan.chunks, [&](std::size_t chunk) {
    const std::size_t tid = ::fusedcnn::detail::thread_index();
    const T** src = ws.rows.data() + thread_slot_offset(tid, nsrc);  // every (tap, c) of a row
    T* acc = scratch.of(tid);  // channel-major: (i, k) at acc[k*cs + i]
    detail::PlanarWindow<T> window(g, l, reads, x, wrows, acc + KB * cs,
                                   ws.window_tags.data() + thread_slot_offset(tid, wrows));
    const std::size_t r0 = chunk * per_chunk, r1 = std::min(out_rows, r0 + per_chunk);
    for (std::size_t gi = 0; gi < g.groups; ++gi)
      for (std::size_t kb0 = 0, kb = 0; kb0 < kg; kb0 += kb) {
        kb = kernels::row_fwd_kb<T>(kg - kb0);
        const T* w = ws.packed.data() + gi * g.taps() * cg * kg + kb0;
        auto run = [&]<std::size_t B, std::size_t NV>() {
          constexpr std::size_t step = NV * L;  // divides px: whole tiles stay inside wo_pad
          for (std::size_t r = r0, n = r0 / g.ho, ho = r0 % g.ho; r < r1; ++r) {
            for (std::size_t a = 0, j = 0; a < g.kh; ++a) {
              const T* row = window.row(n, ho * g.sh + a * g.dh) + gi * cg * l.chan;
              for (std::size_t b = 0; b < g.kw; ++b)
                for (std::size_t c = 0; c < cg; ++c) src[j++] = row + c * l.chan + off[b];
            }
            T* out = acc + (r - r0) * g.wo;
            for (std::size_t wo0 = 0; wo0 < g.wo; wo0 += step)
              kernels::row_fwd<T, B, NV>(src, nsrc, wo0, w, kg, out + wo0, cs);
            if (++ho == g.ho) ho = 0, ++n;
          }
        };
        kernels::with_row_fwd_tile<T>(kb, plan.row_nv, run);
        epi(kernels::TileInfo<T>{acc, 1, (r1 - r0) * g.wo, kb, r0 * g.wo, gi * kg + kb0, chunk,
                                 r0 * g.wo, cs});
      }
  });
}

namespace detail {
// The stride-1 data gradient as a forward row convolution over planar dz: input pixel (h, w)
// gathers dz at (h + pt - a*dh, w + pl - b*dw) for every tap (a, b) and output channel, in
// registers, so each dx element is written once. Weights come from pack_rows_data_weights.
template <class T>
void rows_backward_data_gather(const ConvGeometry& g, const ConvPlan& plan, const RowsLayout& l,
                               const T* dzp, T* dx, ConvWorkspace<T>& ws) {
  constexpr std::size_t L = kernels::RowVec<T>::lanes;
  const std::size_t cg = g.cg(), kg = g.kg(), taps = g.taps(), nsrc = taps * kg;
  const T* wt = ws.packed.data();  // [group][tap][k][c]
  ensure_zeros(ws, l.dz_len);
  const T* zero = ws.zeros.data();
  const ThreadScratch<T> scratch(ws.scratch, g.c * l.w_pad);
  ws.rows.resize(thread_slots_len(::fusedcnn::detail::max_threads(), nsrc));
  ::fusedcnn::detail::parallel_for(g.n * g.h, [&](std::size_t q) {
    const std::size_t tid = ::fusedcnn::detail::thread_index();
    T* buf = scratch.of(tid);  // [c][w_pad]
    const T** src = ws.rows.data() + thread_slot_offset(tid, nsrc);
    const std::size_t n = q / g.h, hp = q % g.h + g.pt;
    for (std::size_t gi = 0; gi < g.groups; ++gi) {
      for (std::size_t a = 0, j = 0; a < g.kh; ++a) {
        const std::size_t oa = a * g.dh;
        const bool ok = hp >= oa && hp - oa < g.ho;
        const T* row = ok ? dzp + ((n * g.ho + hp - oa) * g.k + gi * kg) * l.dz_len : nullptr;
        for (std::size_t b = 0; b < g.kw; ++b)
          for (std::size_t k = 0; k < kg; ++k)
            src[j++] = ok ? row + k * l.dz_len + l.dz_lp + g.pl - b * g.dw : zero;
      }
      for (std::size_t c0 = 0, cb = 0; c0 < cg; c0 += cb) {
        cb = kernels::row_fwd_kb<T>(cg - c0);
        const T* w = wt + gi * taps * kg * cg + c0;
        T* out = buf + (gi * cg + c0) * l.w_pad;
        auto run = [&]<std::size_t B, std::size_t NV>() {
          constexpr std::size_t step = NV * L;  // divides w_pad
          for (std::size_t w0 = 0; w0 < g.w; w0 += step)
            kernels::row_fwd<T, B, NV>(src, nsrc, w0, w, cg, out + w0, l.w_pad);
        };
        kernels::with_row_fwd_tile<T>(cb, plan.row_nv, run);
      }
    }
    T* dst = dx + q * g.w * g.c;
    if (interleave_any(g.c, buf, l.w_pad, g.w, dst)) return;
    for (std::size_t i = 0; i < g.w; ++i)
      for (std::size_t c = 0; c < g.c; ++c) dst[i * g.c + c] = buf[c * l.w_pad + i];
  });
}
}  // namespace detail

namespace detail {
// The data gradient for other strides: each input row (a parallel task) takes the output rows
// that read it and scatters their dz into a planar row scratch, then writes dx.
template <class T>
void rows_backward_data_scatter(const ConvGeometry& g, const ConvPlan& plan, const RowsLayout& l,
                                const T* dzp, T* dx, ConvWorkspace<T>& ws) {
  constexpr std::size_t L = kernels::RowVec<T>::lanes;
  const kernels::RowTaps taps{g.kh, g.kw, g.cg(), l.chan, tap_offsets(g, l, ws.offsets)};
  const std::size_t cg = g.cg(), kg = g.kg(), px = plan.row_nv * L;
  const ThreadScratch<T> scratch(ws.scratch, l.row);
  ::fusedcnn::detail::parallel_for(g.n * g.h, [&](std::size_t q) {
    T* buf = scratch.mine();
    std::fill_n(buf, l.row, T{0});
    const std::size_t n = q / g.h, hp = q % g.h + g.pt;
    for (std::size_t a = 0; a < g.kh; ++a) {
      const std::size_t oa = a * g.dh;
      if (hp < oa || (hp - oa) % g.sh != 0 || (hp - oa) / g.sh >= g.ho) continue;
      const std::size_t r = n * g.ho + (hp - oa) / g.sh;
      for (std::size_t gi = 0; gi < g.groups; ++gi) {
        const T* w = ws.packed.data() + gi * g.taps() * cg * kg;
        const T* src = dzp + (r * g.k + gi * kg) * l.dz_len + l.dz_lp;
        for (std::size_t c0 = 0; c0 < cg; c0 += kernels::row_max_kb) {
          const std::size_t cb = std::min(kernels::row_max_kb, cg - c0);
          for (std::size_t wo0 = 0; wo0 < g.wo; wo0 += px)
            kernels::with_row_tile<T>(cb, plan.row_nv, [&]<std::size_t CB, std::size_t NV>() {
              kernels::row_bwd_data<T, CB, NV>(taps, a, c0, src + wo0, l.dz_len, kg, w, kg,
                                               buf + gi * cg * l.chan + wo0);
            });
        }
      }
    }
    T* out = dx + q * g.w * g.c;
    // one phase: the channel runs back into pixels (in registers for 2, 4 and 8 channels)
    if (g.sw == 1 && interleave_any(g.c, buf + g.pl, l.chan, g.w, out)) return;
    for (std::size_t c = 0; c < g.c; ++c)
      for (std::size_t ph = 0; ph < g.sw; ++ph) {
        const std::size_t w0 = (ph + g.sw - g.pl % g.sw) % g.sw;
        if (w0 >= g.w) continue;
        const T* s = buf + c * l.chan + ph * l.wq + (w0 + g.pl) / g.sw;
        T* d = out + w0 * g.c + c;
        const std::size_t cnt = (g.w - w0 + g.sw - 1) / g.sw, step = g.sw * g.c;
        for (std::size_t i = 0; i < cnt; ++i) d[i * step] = s[i];
      }
  });
}
}  // namespace detail

namespace detail {
// The data gradient from a ready planar dz (dzp, layout l), gathering for stride 1 and
// scattering otherwise. Overwrites dx.
template <class T>
void rows_backward_data_planar(const ConvGeometry& g, const ConvPlan& plan, const RowsLayout& l,
                               const T* dzp, T* dx, ConvWorkspace<T>& ws) {
  if (rows_data_gathers(g))
    rows_backward_data_gather(g, plan, l, dzp, dx, ws);
  else
    rows_backward_data_scatter(g, plan, l, dzp, dx, ws);
}
}  // namespace detail

// Data gradient through the row kernels. Overwrites dx.
template <class T>
void rows_backward_data(const ConvGeometry& g, const ConvPlan& plan, const T* dz, T* dx,
                        ConvWorkspace<T>& ws) {
  const RowsLayout l = rows_layout<T>(g, plan);
  detail::rows_backward_data_planar(g, plan, l, detail::planar_dz(g, l, dz, ws, false), dx, ws);
  ws.planar_dz_of = nullptr;  // the next backward's dz may live at the same address
}

namespace detail {
// rows_backward_weights from a ready planar dz (dzp, layout l).
template <class T>
void rows_backward_weights_planar(const ConvGeometry& g, const RowsLayout& l, const T* x,
                                  const T* dzp, T* dw, ConvWorkspace<T>& ws) {
  const RowsReads reads(g);
  const std::size_t* off = tap_offsets(g, l, ws.offsets);
  const std::size_t cg = g.cg(), kg = g.kg(), K = g.k, taps = g.taps();
  // Chunks of whole output rows, ~P/16 pixels each within [256, 4096]: long enough that
  // zeroing and summing a chunk's lane sums stay a small part of its work, yet enough chunks
  // for the threads; a function of the shape alone.
  constexpr std::size_t L = kernels::RowVec<T>::lanes;
  const std::size_t out_rows = g.n * g.ho;
  const std::size_t chunk_px = std::clamp<std::size_t>(g.pixels() / 16, 256, 4096);
  const std::size_t per_chunk = std::max<std::size_t>(1, chunk_px / g.wo);
  const std::size_t wsize = taps * cg * K, nchunks = (out_rows + per_chunk - 1) / per_chunk;
  // A chunk goes in runs of output rows whose input rows and dz rows fit in L1 together:
  // every (tap row, channel, output block) call re-reads them.
  auto run_bytes = [&](std::size_t s) {
    return (PlanarWindow<T>::size(g, s) * l.row + s * K * l.dz_len) * sizeof(T);
  };
  std::size_t run = per_chunk;
  while (run > 1 && run_bytes(run) > 32768) --run;
  const std::size_t threads = ::fusedcnn::detail::max_threads();
  const std::size_t wrows = PlanarWindow<T>::size(g, per_chunk);
  T* partial = detail::ensure_len(ws.partial, nchunks * wsize);
  const ThreadScratch<T> lane_sums(ws.scratch, wsize * L + wrows * l.row);
  // per thread: the run's input rows for every kernel row, [kh][run], then its dz rows
  const std::size_t slots = (g.kh + 1) * run;
  ws.rows.resize(thread_slots_len(threads, slots));
  ws.window_tags.assign(thread_slots_len(threads, wrows), 0);
  ::fusedcnn::detail::parallel_for(nchunks, [&](std::size_t ci) {
    const std::size_t tid = ::fusedcnn::detail::thread_index();
    const T** xrows = ws.rows.data() + thread_slot_offset(tid, slots);
    const T** dr = xrows + g.kh * run;
    T* vs = lane_sums.of(tid);  // the chunk's sums, L lanes each
    PlanarWindow<T> window(g, l, reads, x, wrows, vs + wsize * L,
                           ws.window_tags.data() + thread_slot_offset(tid, wrows));
    std::fill_n(vs, wsize * L, T{0});
    const std::size_t c0 = ci * per_chunk, c1 = std::min(out_rows, c0 + per_chunk);
    // runs end at image boundaries too: the window then holds all of a run's rows at once, so
    // their pointers are looked up once per run and each channel is an offset from them
    for (std::size_t r0 = c0, nr = 0; r0 < c1; r0 += nr) {
      nr = std::min({c1, r0 + run, (r0 / g.ho + 1) * g.ho}) - r0;
      const std::size_t n = r0 / g.ho, ho0 = r0 % g.ho;
      for (std::size_t a = 0; a < g.kh; ++a)
        for (std::size_t i = 0; i < nr; ++i)
          xrows[a * run + i] = window.row(n, (ho0 + i) * g.sh + a * g.dh);
      for (std::size_t gi = 0; gi < g.groups; ++gi)
        for (std::size_t kb0 = 0; kb0 < kg; kb0 += kernels::row_max_kb) {
          const std::size_t kb = std::min(kernels::row_max_kb, kg - kb0);
          for (std::size_t i = 0; i < nr; ++i)
            dr[i] = dzp + ((r0 + i) * K + gi * kg + kb0) * l.dz_len + l.dz_lp;
          for (std::size_t a = 0; a < g.kh; ++a)
            for (std::size_t c = 0; c < cg; ++c)
              // up to three tap columns per call share the dz loads
              for (std::size_t b = 0; b < g.kw; b += 3) {
                const std::size_t tb = std::min<std::size_t>(3, g.kw - b);
                std::size_t o[3];
                for (std::size_t j = 0; j < tb; ++j) o[j] = off[b + j] + (gi * cg + c) * l.chan;
                T* sums = vs + (((a * g.kw + b) * cg + c) * K + gi * kg + kb0) * L;
                kernels::with_row_kb(kb, [&]<std::size_t KB>() {
                  auto call = [&]<std::size_t TB>() {
                    kernels::row_bwd_weights<T, KB, TB>(nr, xrows + a * run, o, dr, l.dz_len,
                                                        g.wo, sums, cg * K);
                  };
                  if (tb == 3) return call.template operator()<3>();
                  if (tb == 2) return call.template operator()<2>();
                  call.template operator()<1>();
                });
              }
        }
    }
    kernels::sum_lanes<T, L>(vs, wsize, partial + ci * wsize);
  });
  add_chunk_partials(partial, nchunks, wsize, dw);
}
}  // namespace detail

// Weight gradient through the row kernels: per chunk of output rows, every (tap, input
// channel, output-channel block) is one reduction; chunk partials are added in order.
template <class T>
void rows_backward_weights(const ConvGeometry& g, const T* x, const T* dz, T* dw,
                           ConvWorkspace<T>& ws) {
  const RowsLayout l = rows_layout<T>(g, plan_rows<T>(g));
  detail::rows_backward_weights_planar(g, l, x, detail::planar_dz(g, l, dz, ws, true), dw, ws);
}

// The whole backward of a convolution whose two gradients both run through the row kernels
// (backward_reads_planar_dz(g)), with dz formed by its producer while it is made planar
// (planarize_dz_from): dw and db (may be null) accumulate, and dx_out() (called once dz is
// formed, so dx may take the storage of what dz was made from) gives dx to overwrite; w are
// the HWIO weights. No NHWC dz is written or read.
template <class T, class MakeDz, class DxOut>
void rows_backward_with_dz(const ConvGeometry& g, const T* x, const T* w, MakeDz&& make_dz,
                           T* dw, T* db, DxOut&& dx_out, ConvWorkspace<T>& ws) {
  const ConvPlan plan = plan_rows<T>(g);
  const RowsLayout l = rows_layout<T>(g, plan);
  T* dzp = detail::ensure_len(ws.planar_dz, g.n * g.ho * g.k * l.dz_len);
  const std::size_t chunks =
      detail::planarize_dz_from(g, l, make_dz, dzp, ws.bias_partial, db != nullptr, ws);
  ws.planar_dz_of = nullptr;  // not the planar form of any dz buffer
  detail::rows_backward_weights_planar(g, l, x, static_cast<const T*>(dzp), dw, ws);
  if (db) detail::add_channel_sums(ws.bias_partial.data(), chunks, g.k, db);
  pack_rows_data_weights(g, w, ws);
  detail::rows_backward_data_planar(g, plan, l, static_cast<const T*>(dzp), dx_out(), ws);
}

}  // namespace fusedcnn::ops
