// The Winograd family: the forward, the data gradient and the weight gradient of 3x3,
// stride-1 convolutions of many channels as F(2x2, 3x3) (kernels/winograd.hpp), 16 GEMMs of
// transformed tiles through the igemm and weight-gradient micro-kernels, 16 multiply-adds
// per 2x2 output tile and channel pair where the direct convolution does 36. The data
// gradient is itself such a correlation, of dz with the weights turned by 180 degrees.
//
// A chunk is a fixed run of whole output rows (tiles of 2x2 pixels; plan_winograd): its tiles
// are transformed into V[xi][tile][c] (in L2), each point's GEMM against the transformed
// weights U[xi][panel][c][NR] (one panel, C * NR values, stays in L1 over the chunk's tiles)
// writes M[xi][tile][k], and the output transform writes the chunk's pixels, whole rows, to a
// row-major tile that goes to the epilogue at once: bias, BN and statistics epilogues see
// exactly what the direct families give them. The weights are transformed on every call
// (they may have changed), panel by panel over the threads. Where they are too many for
// that (many channels over few tiles, like ResNet's 7x7, 512 -> 512), the panel-by-panel
// driver transforms each panel's weights as its point GEMMs use them and never writes them
// out whole (winograd_panel_driver). The weight gradient runs on the same tiles
// (winograd_backward_weights).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "fusedcnn/core/threading.hpp"
#include "fusedcnn/kernels/epilogues.hpp"
#include "fusedcnn/kernels/igemm.hpp"
#include "fusedcnn/kernels/rows.hpp"
#include "fusedcnn/kernels/tile.hpp"
#include "fusedcnn/kernels/transpose.hpp"
#include "fusedcnn/kernels/winograd.hpp"
#include "fusedcnn/ops/conv_geometry.hpp"

namespace fusedcnn::ops {

// A 3x3, stride-1 correlation as the Winograd driver sees it: input (n, h, w, c), output
// (n, ho, wo, k); output pixel (y, x) reads input rows y - pt .. y - pt + 2 and columns
// x - pl .. x - pl + 2 (outside the input: zeros). The forward is g itself; the data gradient
// is the correlation of dz with the weights turned by 180 degrees and transposed, whose
// padding 2 - pt (negative past 2: rows of dz that no input pixel reads) gives back h x w.
struct WinogradShape {
  std::size_t n, h, w, c, ho, wo, k;
  long pt, pl;
  std::size_t tiles() const noexcept { return n * ((ho + 1) / 2) * ((wo + 1) / 2); }
};
inline WinogradShape winograd_forward_shape(const ConvGeometry& g) noexcept {
  return {g.n, g.h, g.w, g.c, g.ho, g.wo, g.k, static_cast<long>(g.pt), static_cast<long>(g.pl)};
}
inline WinogradShape winograd_data_shape(const ConvGeometry& g) noexcept {
  return {g.n, g.ho, g.wo, g.k, g.h, g.w, g.c, 2 - static_cast<long>(g.pt),
          2 - static_cast<long>(g.pl)};
}

// Whether the Winograd family runs a correlation of shape s (the planners ask the
// small-channel families first): the saved multiply-adds pay for the transforms, weights
// costing weight_cost a channel pair (winograd_saves). Costs per
// (input, output) channel pair, in multiply-adds: the direct convolution does 9 per output
// pixel; F(2x2, 3x3) does 16 per 2x2 tile, its GEMMs of depth c running at about 1/1.15 the
// direct one's speed, plus about 3 per transformed value of each tile (16 (c + k) of them)
// and 40 per transformed weight (16, read and written once per call, usually from memory).
// (Measured, float, 1 thread: 8 x 7x7, 512 -> 512 channels breaks even and is left to the
// igemm; 2 x 14x14, 256 -> 256 runs in 0.69 of the direct time, 4 x 56x56, 64 -> 64 in 0.6.)
inline bool winograd_saves(const WinogradShape& s, double weight_cost) noexcept {
  if (s.ho == 0 || s.wo == 0 || s.c < 8 || s.k < 8) return false;
  const double pairs = static_cast<double>(s.c) * static_cast<double>(s.k);
  const double tiles = static_cast<double>(s.tiles());
  const double direct = 9.0 * static_cast<double>(s.n * s.ho * s.wo) * pairs;
  const double wino = 16.0 * tiles * (1.15 * pairs + 3.0 * static_cast<double>(s.c + s.k)) +
                      weight_cost * pairs;
  return wino < 0.85 * direct;
}
inline bool winograd_pays(const WinogradShape& s) noexcept {
  return winograd_saves(s, 16.0 * 40.0);
}

// The convolutions the family can run: 3x3, stride 1, undilated, ungrouped.
inline bool winograd_geometry(const ConvGeometry& g) noexcept {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 &&
         g.groups == 1;
}

// Whether the Winograd family runs the forward of g.
template <class T>
bool use_winograd(const ConvGeometry& g) noexcept {
  return winograd_geometry(g) && winograd_pays(winograd_forward_shape(g));
}

// Whether it runs the data gradient of g.
template <class T>
bool use_winograd_for_data(const ConvGeometry& g) noexcept {
  return winograd_geometry(g) && winograd_pays(winograd_data_shape(g));
}

// Whether the forward's transformed weights of s, 16 C K values (K in whole tile panels),
// pass the L2's 2 MiB, so that they come from memory wherever they are read.
template <class T>
bool winograd_weights_spill(const WinogradShape& s) noexcept {
  const std::size_t nr = kernels::pick_tile<T>(s.k).nr, kp = (s.k + nr - 1) / nr * nr;
  return kernels::winograd::points * s.c * kp * sizeof(T) > (std::size_t{2} << 20);
}

// Tiles at most in one chunk of the panel-by-panel Winograd (plan_winograd_panels): their
// transformed values, 16 c a tile, within 2 MiB, up to 128 tiles. Each thread reads them all
// for each of its panels, so beyond that they come from the L3 (7x7, 512 -> 512, 4 x 9x9
// in chunks of 50 tiles: 0.9x the time of one chunk of 100; 256 -> 256, 8 x 7x7 in chunks
// of 64 tiles: 1.15x the time of one chunk of 128).
template <class T>
constexpr std::size_t winograd_panel_tiles(std::size_t c) noexcept {
  const std::size_t per_tile = kernels::winograd::points * c * sizeof(T);
  return std::clamp<std::size_t>((std::size_t{2} << 20) / per_tile, 1, 128);
}

// Whether F(2x2, 3x3) pays with the weights transformed panel by panel as the point GEMMs
// use them (winograd_panel_driver), never written out whole: for many channels over few
// tiles, where writing and reading 16 C K transformed weights costs more than it saves.
// Costs as in winograd_pays, but the weights cost about 300 a channel pair for each chunk
// of tiles, the price of reading them from memory with a stride of K. (Measured, float,
// 1 thread, 7x7, 512 -> 512: 4 images 0.84 of the direct time, 8 images 0.86, 1 image
// 1.0-1.1.)
template <class T>
bool winograd_panels_pay(const WinogradShape& s) noexcept {
  const double tiles = static_cast<double>(s.tiles());
  const double chunks = std::ceil(tiles / static_cast<double>(winograd_panel_tiles<T>(s.c)));
  return winograd_saves(s, 300.0 * chunks);
}

// Whether the panel-by-panel Winograd runs the correlation s: where the Winograd family's
// own choice does not pay, and its transformed weights would not fit in the L2 (beside
// weights that stay in the caches, the direct families keep their lead).
template <class T>
bool winograd_panels_fit(const WinogradShape& s) noexcept {
  return winograd_weights_spill<T>(s) && !winograd_pays(s) && winograd_panels_pay<T>(s);
}

// Whether it runs the forward of g.
template <class T>
bool use_winograd_panels(const ConvGeometry& g) noexcept {
  return winograd_geometry(g) && winograd_panels_fit<T>(winograd_forward_shape(g));
}

// The same for the data gradient of g.
template <class T>
bool use_winograd_panels_for_data(const ConvGeometry& g) noexcept {
  return winograd_geometry(g) && winograd_panels_fit<T>(winograd_data_shape(g));
}

namespace detail {
// Tile rows a chunk of `rc` output rows can hold: rc / 2, and one more for each image
// boundary inside it (an image with an odd number of rows ends on a one-row tile row).
inline std::size_t winograd_tile_rows(const WinogradShape& s, std::size_t rc) noexcept {
  return rc / 2 + (rc + s.ho - 1) / s.ho + 1;
}
}  // namespace detail

// The Winograd plan: chunks of whole tile rows, as many tiles as fill the GEMM tile's rows
// best, in at least 8 chunks when there are rows enough, for the threads to share. A chunk's
// transformed tiles and products (16 (c + k) values a tile) stay within 1 MiB, half the L2,
// and 64 tiles. Each chunk reads all the transformed weights: past 2 MiB they come from
// memory every time, and chunks take up to 128 tiles, in at least 2 chunks, even though
// their products then spill from the L2. (Float, 1 thread, ms by tiles per chunk: 14x14,
// 256 -> 256: 14: 3.4, 28: 2.9, 98: 2.7; double, 28x28, 128 -> 128: 14: 6.1, 28: 6.4,
// 126: 7.1.)
template <class T>
ConvPlan plan_winograd(const WinogradShape& s) noexcept {
  ConvPlan p;
  p.by_winograd = true;
  p.tile = kernels::pick_tile<T>(s.k);
  p.rows = s.n * s.ho * s.wo;
  const std::size_t tw = (s.wo + 1) / 2, out_rows = s.n * s.ho, mr = p.tile.mr, nr = p.tile.nr;
  const std::size_t kp = (s.k + nr - 1) / nr * nr, mib = std::size_t{1} << 20;
  const std::size_t per_tile = kernels::winograd::points * (s.c + kp) * sizeof(T);
  const bool streamed = winograd_weights_spill<T>(s);
  const std::size_t most = streamed ? 128 : std::clamp<std::size_t>(mib / per_tile, 1, 64);
  const std::size_t least_chunks = streamed ? 2 : 8;
  std::size_t best = 1;
  double best_use = 0;
  for (std::size_t r = 1; r == 1 || r * tw <= most; ++r) {
    const std::size_t chunks = (out_rows + 2 * r - 1) / (2 * r);
    if (r > 1 && chunks < least_chunks) break;
    const std::size_t tiles = r * tw;
    const double fill = static_cast<double>(tiles) / static_cast<double>((tiles + mr - 1) / mr * mr);
    // the share of its chunks' rows the output fills: a short last chunk leaves threads idle
    // (4 x 14x14, 256 -> 256 as chunks of 36 and 20 rows: 2 threads 1.51x faster than one;
    // as 28 and 28: 1.68x)
    const double balance = static_cast<double>(out_rows) / static_cast<double>(chunks * 2 * r);
    const double use = fill * balance;
    if (use >= best_use - 0.02) best = r, best_use = std::max(use, best_use);
  }
  p.chunk_rows = 2 * best * s.wo;
  p.chunks = (p.rows + p.chunk_rows - 1) / p.chunk_rows;
  return p;
}

// The panel-by-panel Winograd plan: chunks of whole tile rows, at most winograd_panel_tiles
// tiles each and as even as they come; the threads share each chunk's panels of output
// channels.
template <class T>
ConvPlan plan_winograd_panels(const WinogradShape& s) noexcept {
  ConvPlan p;
  p.by_winograd = true;
  p.winograd_panels = true;
  p.tile = kernels::pick_tile<T>(s.k);
  p.rows = s.n * s.ho * s.wo;
  const std::size_t tw = (s.wo + 1) / 2, out_rows = s.n * s.ho;
  const std::size_t tile_rows = (out_rows + 1) / 2;
  const std::size_t per_chunk = std::max<std::size_t>(1, winograd_panel_tiles<T>(s.c) / tw);
  const std::size_t chunks = (tile_rows + per_chunk - 1) / per_chunk;
  p.chunk_rows = 2 * ((tile_rows + chunks - 1) / chunks) * s.wo;
  p.chunks = (p.rows + p.chunk_rows - 1) / p.chunk_rows;
  return p;
}

namespace detail {
// Where the point GEMMs' tiles go: MR rows of M (all of them: rows past the chunk's tiles
// repeat a valid tile and land in M's spare rows), NR-wide columns from k0; with Add, added
// to what M holds (the point GEMMs of a later block of input channels).
template <class T, std::size_t NR, bool Add = false>
struct WinogradSink {
  T* m;
  std::size_t ld, t0, k0;

  template <class V, std::size_t MR, std::size_t NV>
  void registers(const typename V::R (&acc)[MR][NV], std::size_t, std::size_t) const noexcept {
#pragma GCC unroll 32
    for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (std::size_t v = 0; v < NV; ++v) {
        T* p = m + (t0 + i) * ld + k0 + v * V::lanes;
        V::store(p, Add ? V::add(V::load(p), acc[i][v]) : acc[i][v]);
      }
  }
  void operator()(const T* tile, std::size_t m_rows, std::size_t) const noexcept {
    for (std::size_t i = 0; i < m_rows; ++i)
      for (std::size_t j = 0; j < NR; ++j) {
        T& e = m[(t0 + i) * ld + k0 + j];
        e = Add ? e + tile[i * NR + j] : tile[i * NR + j];
      }
  }
};

// Transformed weights past this size come from memory for every chunk: the point GEMMs then
// fetch the next panel while they run (the first tile pass over a panel otherwise waits on
// it: 14x14, 256 -> 256, a 4 MiB U, 0.95x the time on 1 thread, 0.89x on 2; 56x56, 64 -> 64,
// 256 KiB, gains nothing and loses 1-2 %).
inline constexpr std::size_t winograd_fetch_bytes = std::size_t{512} << 10;

// Values of T rounded up to whole 64-byte lines.
template <class T>
constexpr std::size_t whole_lines(std::size_t n) noexcept {
  constexpr std::size_t per = 64 / sizeof(T);
  return (n + per - 1) / per * per;
}

// The stride between the 16 points of a buffer of n values a point: whole lines and one
// more, so that the points of a tile are not 4 KiB apart, where loads wait on unrelated
// stores of the same page offset (56x56x64: the input transform took 0.45 ms, not 0.72).
template <class T>
constexpr std::size_t point_stride(std::size_t n) noexcept {
  return whole_lines<T>(n) + 64 / sizeof(T);
}

// Input channels [c0, c0 + len) of panel q of the forward's transformed weights: output
// channels q*NR.. of the HWIO weights, times scale[k] when given, zero past the last one;
// channel c0 + i of point xi goes to u + xi * ld_point + i * NR.
template <class T, std::size_t NR>
void winograd_forward_block(const ConvGeometry& g, const T* w, const T* scale, std::size_t q,
                            std::size_t c0, std::size_t len, T* u, std::size_t ld_point) {
  using V = kernels::RowVec<T>;
  const std::size_t C = g.c, K = g.k, k0 = q * NR, n = std::min(NR, K - k0);
  const T one = T{1};
  for (std::size_t i = 0; i < len; ++i)
    for (std::size_t j = 0; j < NR; j += V::lanes) {
      const auto mask = V::first(j < n ? n - j : 0);
      const typename V::R sv = scale ? V::load(mask, scale + k0 + j) : V::bcast(&one);
      kernels::winograd::weight_tile<V>(w + (c0 + i) * K + k0 + j, C * K, mask, sv,
                                        u + i * NR + j, ld_point);
    }
}

// Panel q of the forward's transformed weights U[xi][q][c][NR] (panels of `panels`).
template <class T, std::size_t NR>
void winograd_forward_panel(const ConvGeometry& g, const T* w, const T* scale, std::size_t q,
                            std::size_t panels, T* u) {
  winograd_forward_block<T, NR>(g, w, scale, q, 0, g.c, u + q * g.c * NR, panels * g.c * NR);
}

// Output channels [k0, k0 + len) (the contraction) of panel q of the data gradient's
// transformed weights: input channels q*NR.. (the columns), taps turned by 180 degrees.
// Blocks of 32 output channels of each tap are transposed into `tmp` (9 x 32 x NR values),
// tap t at slot 8 - t, and transformed from there; channel k0 + i of point xi goes to
// u + xi * ld_point + i * NR. (Blocks of 16 read a 64-byte run from each 2 KiB weight row of
// 512 -> 512 channels: the training step of 4 x 7x7 took 1.03x the time.)
template <class T, std::size_t NR>
void winograd_data_block(const ConvGeometry& g, const T* w, std::size_t q, std::size_t k0,
                         std::size_t len, T* tmp, T* u, std::size_t ld_point) {
  using V = kernels::RowVec<T>;
  constexpr std::size_t kb = 32;
  const std::size_t c0 = q * NR, n = std::min(NR, g.c - c0);
  const T one = T{1};
  for (std::size_t b = 0; b < len; b += kb) {
    const std::size_t bl = std::min(kb, len - b);
    if (n < NR) std::fill_n(tmp, 9 * kb * NR, T{0});
    for (std::size_t t = 0; t < 9; ++t)
      kernels::transpose(w + (t * g.c + c0) * g.k + k0 + b, g.k, n, bl, tmp + (8 - t) * kb * NR,
                         NR);
    for (std::size_t kk = 0; kk < bl; ++kk)
      for (std::size_t j = 0; j < NR; j += V::lanes)
        kernels::winograd::weight_tile<V>(tmp + kk * NR + j, kb * NR, V::first(NR - j),
                                          V::bcast(&one), u + (b + kk) * NR + j, ld_point);
  }
}

// Panel q of the data gradient's transformed weights U[xi][q][k][NR] (panels of `panels`).
template <class T, std::size_t NR>
void winograd_data_panel(const ConvGeometry& g, const T* w, std::size_t q, std::size_t panels,
                         T* tmp, T* u) {
  winograd_data_block<T, NR>(g, w, q, 0, g.k, tmp, u + q * g.k * NR, panels * g.k * NR);
}

// Calls f(r, rows, idx) for each tile row of output rows [r0, r1) of s (flattened over the
// images, so a run may cross from one image into the next): r its first output row, rows
// its height (1 at an image's odd last row or at r1, else 2), idx its index from 0.
template <class F>
void for_each_tile_row(const WinogradShape& s, std::size_t r0, std::size_t r1, F&& f) {
  for (std::size_t r = r0, idx = 0; r < r1; ++idx) {
    const std::size_t rows = std::min<std::size_t>({2, r1 - r, s.ho - r % s.ho});
    f(r, rows, idx);
    r += rows;
  }
}

// B^T d B for the tile row of s starting at flattened output row r (image r / ho), every
// vector of channels: tile t's point xi goes to v + xi * ld_point + t * c.
template <class T>
void transform_input_row(const WinogradShape& s, const T* x, std::size_t r, T* v,
                         std::size_t ld_point) {
  using V = kernels::RowVec<T>;
  const std::size_t img = r / s.ho, tw = (s.wo + 1) / 2;
  const long oy = static_cast<long>(r % s.ho);
  const T* in[4];
  for (std::size_t i = 0; i < 4; ++i) {
    const long iy = oy + static_cast<long>(i) - s.pt;
    in[i] = iy >= 0 && iy < static_cast<long>(s.h)
                ? x + (img * s.h + static_cast<std::size_t>(iy)) * s.w * s.c
                : nullptr;
  }
  for (std::size_t c = 0; c < s.c; c += V::lanes) {
    const T* inc[4];
    for (std::size_t i = 0; i < 4; ++i) inc[i] = in[i] ? in[i] + c : nullptr;
    kernels::winograd::input_row<V>(inc, -s.pl, s.w, s.c, tw, V::first(s.c - c), v + c,
                                    ld_point, s.c);
  }
}

// A^T M A for the tiles of output rows [r0, r1) of s, `n` channels: tile t's point xi at
// m + xi * ld_point + t * ld, output pixel p of the rows at out + p * ld.
template <class T>
void transform_output_rows(const WinogradShape& s, std::size_t r0, std::size_t r1, const T* m,
                           std::size_t ld_point, std::size_t ld, std::size_t n, T* out) {
  using V = kernels::RowVec<T>;
  const std::size_t wo = s.wo, tw = (wo + 1) / 2;
  for_each_tile_row(s, r0, r1, [&](std::size_t r, std::size_t nr, std::size_t idx) {
    for (std::size_t t = 0; t < tw; ++t) {
      const T* mt = m + (idx * tw + t) * ld;
      T* top = out + ((r - r0) * wo + 2 * t) * ld;
      T* const dst[2] = {top, nr == 2 ? top + wo * ld : nullptr};
      const std::size_t cols = std::min<std::size_t>(2, wo - 2 * t);
      for (std::size_t k = 0; k < n; k += V::lanes) {
        T* const dk[2] = {dst[0] + k, dst[1] ? dst[1] + k : nullptr};
        kernels::winograd::output_tile<V>(mt + k, ld_point, dk, cols, ld, V::first(n - k));
      }
    }
  });
}

// Runs the correlation s of x by the Winograd family: transform(q, u) writes panel q of the
// transformed weights U[xi][q][c][NR] (any thread, panels in parallel); every chunk's output
// goes to epi(TileInfo) as one row-major tile of whole rows.
template <class T, std::size_t MR, std::size_t NR, class Transform, class Epi>
void winograd_driver(const WinogradShape& s, const ConvPlan& plan, const T* x,
                     ConvWorkspace<T>& ws, Transform&& transform, Epi& epi) {
  constexpr std::size_t XI = kernels::winograd::points;
  const std::size_t C = s.c, K = s.k, wo = s.wo;
  const std::size_t rc = plan.chunk_rows / wo, tw = (wo + 1) / 2, out_rows = s.n * s.ho;
  const std::size_t P = (K + NR - 1) / NR, KP = P * NR;
  const std::size_t tmax = (winograd_tile_rows(s, rc) * tw + MR - 1) / MR * MR;
  T* u = ensure_len(ws.transformed, XI * P * C * NR);
  ::fusedcnn::detail::parallel_for(P, [&](std::size_t q) { transform(q, u); });
  const std::size_t vp = point_stride<T>(tmax * C), mp = point_stride<T>(tmax * KP);
  const std::size_t v_len = XI * vp, m_len = XI * mp;
  const ThreadScratch<T> scratch(ws.tile_scratch, v_len + m_len + rc * wo * KP);
  const std::size_t threads = ::fusedcnn::detail::max_threads();
  ws.rows.resize(thread_slots_len(threads, XI * tmax));
  ::fusedcnn::detail::parallel_for(plan.chunks, [&](std::size_t chunk) {
    const std::size_t tid = ::fusedcnn::detail::thread_index();
    T* vbuf = scratch.of(tid);
    T* mbuf = vbuf + v_len;
    T* out = mbuf + m_len;
    const T** rows = ws.rows.data() + thread_slot_offset(tid, XI * tmax);
    const std::size_t r0 = chunk * rc, r1 = std::min(out_rows, r0 + rc);
    std::size_t nt = 0;
    for_each_tile_row(s, r0, r1, [&](std::size_t r, std::size_t, std::size_t idx) {
      transform_input_row(s, x, r, vbuf + idx * tw * C, vp);
      nt = (idx + 1) * tw;
    });
    for (std::size_t xi = 0; xi < XI; ++xi)
      for (std::size_t t = 0; t < tmax; ++t)
        rows[xi * tmax + t] = vbuf + xi * vp + std::min(t, nt - 1) * C;
    // Point xi's GEMM, panel by panel; with Ahead, tile pass j over panel at u + at fetches
    // C lines of the next panel (passes 0 and 1 cover a panel of 2 lines a channel).
    const std::size_t panel = C * NR, line = 64 / sizeof(T), u_len = XI * P * panel;
    auto point_gemms = [&]<bool Ahead>() {
      for (std::size_t xi = 0; xi < XI; ++xi)
        for (std::size_t q = 0; q < P; ++q) {
          const std::size_t at = (xi * P + q) * panel, n = std::min(NR, K - q * NR);
          for (std::size_t t0 = 0, j = 0; t0 < nt; t0 += MR, ++j) {
            using Sink = WinogradSink<T, NR>;
            const Sink sink{mbuf + xi * mp, KP, t0, q * NR};
            if constexpr (Ahead) {
              const std::size_t next = std::min(u_len - 1, at + panel + j * C * line % panel);
              kernels::igemm<T, MR, NR>(1, C, rows + xi * tmax + t0, u + at, 0, MR, n,
                                        kernels::FetchAhead<Sink, T>{sink, u + next});
            } else {
              kernels::igemm<T, MR, NR>(1, C, rows + xi * tmax + t0, u + at, 0, MR, n, sink);
            }
          }
        }
    };
    if (u_len * sizeof(T) > winograd_fetch_bytes)
      point_gemms.template operator()<true>();
    else
      point_gemms.template operator()<false>();
    transform_output_rows(s, r0, r1, mbuf, mp, KP, K, out);
    epi(kernels::TileInfo<T>{out, KP, (r1 - r0) * wo, K, r0 * wo, 0, chunk, r0 * wo});
  });
}
// Input channels in one block of the panel-by-panel driver: its transformed weights, 16 x
// NR values a channel, within 256 KiB, so they stay in the L2 beside the chunk's tiles
// (7x7, 512 -> 512 in blocks of 128 channels: 0.95x the time of one block of 512).
template <class T, std::size_t NR>
constexpr std::size_t winograd_panel_block(std::size_t c) noexcept {
  const std::size_t most = std::max<std::size_t>(
      1, (std::size_t{256} << 10) / (kernels::winograd::points * NR * sizeof(T)));
  const std::size_t blocks = (c + most - 1) / most;
  return (c + blocks - 1) / blocks;
}

// The first output row of tile row `idx` of output rows [r0, r1) of s.
inline std::size_t nth_tile_row(const WinogradShape& s, std::size_t r0, std::size_t r1,
                                std::size_t idx) {
  std::size_t at = r1;
  for_each_tile_row(s, r0, r1, [&](std::size_t r, std::size_t, std::size_t i) {
    if (i == idx) at = r;
  });
  return at;
}

// Runs the correlation s of x by the Winograd family, the weights transformed panel by panel
// as the point GEMMs use them: for weights too many to transform ahead (use_winograd_panels).
// Chunk by chunk, the tiles are transformed into V[xi][tile][c] (shared by the threads);
// the threads then share the chunk's panels of NR output channels. For its panel, a thread
// transforms blocks of input channels in turn, transform(q, c0, len, u, ld_point) writing
// U[xi][c][NR] for channels [c0, c0 + len), and adds their point GEMMs into its M[xi][tile]
// [NR]; the output transform then writes the panel's channels of the chunk's rows, which go
// to epi(TileInfo) as one tile.
template <class T, std::size_t MR, std::size_t NR, class Transform, class Epi>
void winograd_panel_driver(const WinogradShape& s, const ConvPlan& plan, const T* x,
                           ConvWorkspace<T>& ws, Transform&& transform, Epi& epi) {
  constexpr std::size_t XI = kernels::winograd::points;
  const std::size_t C = s.c, K = s.k, wo = s.wo;
  const std::size_t rc = plan.chunk_rows / wo, tw = (wo + 1) / 2, out_rows = s.n * s.ho;
  const std::size_t P = (K + NR - 1) / NR, cb = winograd_panel_block<T, NR>(C);
  const std::size_t tmax = (winograd_tile_rows(s, rc) * tw + MR - 1) / MR * MR;
  const std::size_t vp = point_stride<T>(tmax * C);
  const std::size_t up = point_stride<T>(cb * NR), mp = point_stride<T>(tmax * NR);
  T* vbuf = ensure_len(ws.transformed, XI * vp);
  const ThreadScratch<T> scratch(ws.tile_scratch, XI * (up + mp) + rc * wo * NR);
  ws.rows.resize(XI * tmax);
  const T** rows = ws.rows.data();
  for (std::size_t chunk = 0; chunk < plan.chunks; ++chunk) {
    const std::size_t r0 = chunk * rc, r1 = std::min(out_rows, r0 + rc);
    std::size_t trows = 0;
    for_each_tile_row(s, r0, r1, [&](std::size_t, std::size_t, std::size_t) { ++trows; });
    ::fusedcnn::detail::parallel_for(trows, [&](std::size_t idx) {
      transform_input_row(s, x, nth_tile_row(s, r0, r1, idx), vbuf + idx * tw * C, vp);
    });
    const std::size_t nt = trows * tw;
    for (std::size_t xi = 0; xi < XI; ++xi)
      for (std::size_t t = 0; t < tmax; ++t)
        rows[xi * tmax + t] = vbuf + xi * vp + std::min(t, nt - 1) * C;
    // Point GEMMs of MT tiles: MR - 1 where that leaves fewer rows to compute in vain
    // (64 tiles: 65 rows, not 70; 0.95x the time)
    auto gemms = [&]<std::size_t MT>(std::size_t q, std::size_t len, std::size_t c0,
                                     const T* u, T* m) {
      const std::size_t n = std::min(NR, K - q * NR);
      for (std::size_t xi = 0; xi < XI; ++xi)
        for (std::size_t t0 = 0; t0 < nt; t0 += MT) {
          const T* const* r = rows + xi * tmax + t0;
          if (c0 == 0)
            kernels::igemm<T, MT, NR>(1, len, r, u + xi * up, c0, MT, n,
                                      WinogradSink<T, NR>{m + xi * mp, NR, t0, 0});
          else
            kernels::igemm<T, MT, NR>(1, len, r, u + xi * up, c0, MT, n,
                                      WinogradSink<T, NR, true>{m + xi * mp, NR, t0, 0});
        }
    };
    constexpr std::size_t MS = MR > 1 ? MR - 1 : MR;
    const bool smaller = (nt + MS - 1) / MS * MS < (nt + MR - 1) / MR * MR;
    ::fusedcnn::detail::parallel_for(P, [&](std::size_t q) {
      T* u = scratch.mine();
      T* m = u + XI * up;
      T* out = m + XI * mp;
      const std::size_t n = std::min(NR, K - q * NR);
      for (std::size_t c0 = 0; c0 < C; c0 += cb) {
        const std::size_t len = std::min(cb, C - c0);
        transform(q, c0, len, u, up);
        if (smaller)
          gemms.template operator()<MS>(q, len, c0, u, m);
        else
          gemms.template operator()<MR>(q, len, c0, u, m);
      }
      transform_output_rows(s, r0, r1, m, mp, NR, n, out);
      epi(kernels::TileInfo<T>{out, NR, (r1 - r0) * wo, n, r0 * wo, q * NR, chunk, r0 * wo});
    });
  }
}
}  // namespace detail

// Forward convolution of x by the Winograd family (ws.weights, ws.scale as
// pack_forward_weights recorded them).
template <class T, class Epi>
void winograd_forward(const ConvGeometry& g, const ConvPlan& plan, const T* x,
                      ConvWorkspace<T>& ws, Epi& epi) {
  kernels::with_tile<T>(plan.tile, [&]<std::size_t MR, std::size_t NR>() {
    const std::size_t panels = (g.k + NR - 1) / NR;
    if (plan.winograd_panels) {
      auto block = [&](std::size_t q, std::size_t c0, std::size_t len, T* u, std::size_t ld) {
        detail::winograd_forward_block<T, NR>(g, ws.weights, ws.scale, q, c0, len, u, ld);
      };
      return detail::winograd_panel_driver<T, MR, NR>(winograd_forward_shape(g), plan, x, ws,
                                                      block, epi);
    }
    auto transform = [&](std::size_t q, T* u) {
      detail::winograd_forward_panel<T, NR>(g, ws.weights, ws.scale, q, panels, u);
    };
    detail::winograd_driver<T, MR, NR>(winograd_forward_shape(g), plan, x, ws, transform, epi);
  });
}

// Data gradient dx of g from dz by the Winograd family (ws.weights: the HWIO weights).
template <class T>
void winograd_backward_data(const ConvGeometry& g, const ConvPlan& plan, const T* dz, T* dx,
                            ConvWorkspace<T>& ws) {
  kernels::BiasActEpilogue<T, false> store{dx, g.c, nullptr};
  kernels::with_tile<T>(plan.tile, [&]<std::size_t MR, std::size_t NR>() {
    const std::size_t panels = (g.c + NR - 1) / NR;
    const detail::ThreadScratch<T> tmp(ws.packed, 9 * 32 * NR);
    if (plan.winograd_panels) {
      auto block = [&](std::size_t q, std::size_t k0, std::size_t len, T* u, std::size_t ld) {
        detail::winograd_data_block<T, NR>(g, ws.weights, q, k0, len, tmp.mine(), u, ld);
      };
      return detail::winograd_panel_driver<T, MR, NR>(winograd_data_shape(g), plan, dz, ws,
                                                      block, store);
    }
    auto transform = [&](std::size_t q, T* u) {
      detail::winograd_data_panel<T, NR>(g, ws.weights, q, panels, tmp.mine(), u);
    };
    detail::winograd_driver<T, MR, NR>(winograd_data_shape(g), plan, dz, ws, transform, store);
  });
}

namespace detail {
// The bytes of transformed x and dz in one of the weight gradient's blocks: 1 MiB, half the
// L2, beside the chunk's sum D (16 C KP values). A D that fills the L2 by itself (past
// 1.75 MiB) comes from the L3 for every block, and the blocks take 2 MiB, twice the tiles
// over which to spread that traffic (4 x 28x28, 128 -> 128 doubles, a 2 MiB D: the weight
// gradient in 0.86x the time; 120 -> 120 doubles, 1.97 MiB: 0.94x; 112 -> 112 doubles,
// 1.53 MiB, lost 1-3 % with 2 MiB blocks).
template <class T>
std::size_t winograd_block_bytes(std::size_t c, std::size_t kp) noexcept {
  const std::size_t d = kernels::winograd::points * c * kp * sizeof(T);
  return d > (std::size_t{7} << 18) ? std::size_t{2} << 20 : std::size_t{1} << 20;
}

// The weight gradient's chunks, over which `blocks` blocks of `block_tiles` tiles are spread
// evenly: about 128 tiles each (a pass over D and a partial each), at least 4 when there are
// blocks enough, and an even number of them, so that two threads share the blocks to within
// one (4 x 28x28, 128 -> 128 channels: 14 blocks in chunks of 3, 3, 3, 3 and 2 kept one
// thread idle for a fifth of the pass; in 4 chunks of 3 and 4, the step took 0.9x the time).
inline std::size_t winograd_weight_chunks(std::size_t blocks, std::size_t block_tiles) noexcept {
  const std::size_t per = std::clamp<std::size_t>((128 + block_tiles - 1) / block_tiles, 1,
                                                  std::max<std::size_t>(1, blocks / 4));
  const std::size_t n = (blocks + per - 1) / per;
  if (n % 2 == 0 || n == 1) return n;
  return n >= 5 ? n - 1 : std::min(blocks, n + 1);
}
}  // namespace detail

// Whether the Winograd family runs the weight gradient of g, given whether it runs the
// forward (the small-channel families' layers keep their own: 128x128, 16 -> 16 channels
// took 1.2x the step time): when a chunk's sum D, 16 C K values, is at most the L2's 2 MiB
// (training steps: 14x14, 256 -> 256 channels, a 4 MiB D: 1.2x the direct kernel's time;
// 28x28, 160 -> 160 floats or 128 -> 128 doubles, 1.6 and 2 MiB: 0.87; 56x56, 64 -> 64:
// 0.85).
template <class T>
bool use_winograd_for_weights(const ConvGeometry& g, bool forward_by_winograd) noexcept {
  const std::size_t nr = kernels::DwTile<T>::nr, kp = (g.k + nr - 1) / nr * nr;
  return forward_by_winograd &&
         kernels::winograd::points * g.c * kp * sizeof(T) <= (std::size_t{2} << 20);
}

// Weight gradient dw (HWIO) += the Winograd family's sum over the output's 2x2 tiles of
// (A dz A^T) . (B^T x B), taken back to taps by G^T . G. Blocks of whole tile rows (their
// transformed x and dz within winograd_block_bytes) run the 16 point GEMMs through the
// weight-gradient micro-kernel into a per-chunk sum D[xi][c][k]; each chunk, a fixed run of
// blocks, turns its D into taps in its own partial, and the partials are added in chunk
// order, so a given shape always gives the same bits, whatever the thread count.
template <class T>
void winograd_backward_weights(const ConvGeometry& g, const T* x, const T* dz, T* dw,
                               ConvWorkspace<T>& ws) {
  using V = kernels::RowVec<T>;
  constexpr std::size_t XI = kernels::winograd::points, L = V::lanes;
  constexpr std::size_t MR = kernels::DwTile<T>::mr, NR = kernels::DwTile<T>::nr;
  const WinogradShape s = winograd_forward_shape(g);
  const std::size_t C = g.c, K = g.k, KP = (K + NR - 1) / NR * NR, wo = g.wo;
  const std::size_t tw = (wo + 1) / 2, out_rows = g.n * g.ho, wsize = 9 * C * K;
  const std::size_t per_tile = XI * (C + KP) * sizeof(T);
  const std::size_t block_bytes = detail::winograd_block_bytes<T>(C, KP);
  const std::size_t rb = 2 * std::max<std::size_t>(1, block_bytes / per_tile / tw);
  const std::size_t blocks = (out_rows + rb - 1) / rb, block_tiles = rb / 2 * tw;
  const std::size_t nchunks = detail::winograd_weight_chunks(blocks, block_tiles);
  T* partial = detail::ensure_len(ws.partial, nchunks * wsize);
  const std::size_t tmax = detail::winograd_tile_rows(s, rb) * tw;
  const std::size_t vp = detail::point_stride<T>(tmax * C);
  const std::size_t zp = detail::point_stride<T>(tmax * KP);
  const std::size_t v_len = XI * vp, z_len = XI * zp, d_len = XI * C * KP;
  const detail::ThreadScratch<T> scratch(ws.tile_scratch, v_len + z_len + d_len);
  ws.rows.resize(thread_slots_len(::fusedcnn::detail::max_threads(), tmax));
  ::fusedcnn::detail::parallel_for(nchunks, [&](std::size_t ci) {
    const std::size_t tid = ::fusedcnn::detail::thread_index();
    T* vbuf = scratch.of(tid);
    T* zbuf = vbuf + v_len;
    T* d = zbuf + z_len;
    const T** rows = ws.rows.data() + thread_slot_offset(tid, tmax);
    std::fill_n(d, d_len, T{0});
    const std::size_t b1 = (ci + 1) * blocks / nchunks;
    for (std::size_t b = ci * blocks / nchunks; b < b1; ++b) {
      const std::size_t r0 = b * rb, r1 = std::min(out_rows, r0 + rb);
      std::size_t nt = 0;
      detail::for_each_tile_row(s, r0, r1, [&](std::size_t r, std::size_t nr, std::size_t idx) {
        detail::transform_input_row(s, x, r, vbuf + idx * tw * C, vp);
        for (std::size_t t = 0; t < tw; ++t) {
          const T* top = dz + (r * wo + 2 * t) * K;
          const std::size_t cols = std::min<std::size_t>(2, wo - 2 * t);
          for (std::size_t k = 0; k < KP; k += L) {
            const T* const zr[2] = {top + k, nr == 2 ? top + wo * K + k : nullptr};
            kernels::winograd::gradient_tile<V>(zr, cols, K, V::first(k < K ? K - k : 0),
                                                zbuf + (idx * tw + t) * KP + k, zp);
          }
        }
        nt = (idx + 1) * tw;
      });
      for (std::size_t xi = 0; xi < XI; ++xi) {
        for (std::size_t t = 0; t < nt; ++t) rows[t] = vbuf + xi * vp + t * C;
        for (std::size_t k0 = 0; k0 < K; k0 += NR)
          detail::for_exact_blocks<MR>(C, [&]<std::size_t M>(std::size_t c0) {
            kernels::dw<T, M, NR>(nt, rows, c0, zbuf + xi * zp + k0, KP, std::min(NR, K - k0),
                                  d + (xi * C + c0) * KP + k0, KP);
          });
      }
    }
    T* out = partial + ci * wsize;
    for (std::size_t c = 0; c < C; ++c)
      for (std::size_t k = 0; k < K; k += L)
        kernels::winograd::weight_gradient_tile<V>(d + c * KP + k, C * KP, V::first(K - k),
                                                   out + c * K + k, C * K);
  });
  detail::add_chunk_partials(partial, nchunks, wsize, dw);
}

}  // namespace fusedcnn::ops
