// Row micro-kernels: convolutions whose groups have few output channels (the 1-8 channel
// shapes where a channel-vectorised GEMM tile leaves most lanes empty), vectorised over the
// output pixels of one row instead.
//
// Planar rows. The driver (ops/conv2d_rows.hpp) rewrites each zero-padded input row as
// [channel][phase][wq]: the W axis is split by stride phase, padded column wp sitting at
// phase wp % sw, index wp / sw. Tap column b of output pixel wo is then at phase
// (b*dw) % sw, index wo + (b*dw) / sw: consecutive output pixels read consecutive elements
// for every stride and dilation, and `off[b]` = phase * wq + index offset says where.
//
// Contract (every kernel): no allocation, no bounds checks, no threads; the driver pads
// planar rows so that a full NV-vector tile read or written past the row's last output pixel
// stays inside the buffer (reading zeros, or writing where nothing reads). Weights are
// packed per group as [tap][c][kg]; w points at the group's block and the first of the KB
// output channels, ldw = kg.
//
// Register budget: KB x NV accumulators + NV inputs + 1 broadcast weight. With KB <= 4 and
// NV = 4 that is 21 of AVX-512's 32 registers; 16-register ISAs use NV <= 2 (11 registers).
#pragma once

#include <cstddef>

#include "fusedcnn/kernels/config.hpp"
#include "fusedcnn/kernels/vec/avx2.hpp"
#include "fusedcnn/kernels/vec/avx512.hpp"
#include "fusedcnn/kernels/vec/neon.hpp"
#include "fusedcnn/kernels/vec/scalar.hpp"

namespace fusedcnn::kernels {

// The vector layer the row kernels use: the ISA's, or the portable array.
#if FUSEDCNN_ISA_AVX512
template <class T>
using RowVec = avx512::Vec<T>;
#elif FUSEDCNN_ISA_AVX2
template <class T>
using RowVec = avx2::Vec<T>;
#elif FUSEDCNN_ISA_NEON
template <class T>
using RowVec = neon::Vec<T>;
#else
template <class T>
using RowVec = scalar::Vec<T>;
#endif

// Output channels per kernel call, and vectors of output pixels per tile. The forward also
// has an 8-channel tile of 2 vectors on 32-register ISAs (16 accumulators): each input
// vector then feeds 8 FMAs, which halves the loads per FMA of the 4-channel tile.
inline constexpr std::size_t row_max_kb = 4;
template <class T>
inline constexpr std::size_t row_fwd_max_kb = RowVec<T>::registers >= 32 ? 8 : 4;
template <class T>
inline constexpr std::size_t row_max_nv = RowVec<T>::registers >= 32 ? 4 : 2;

// Where the taps of one group are in a planar row.
struct RowTaps {
  std::size_t kh, kw, cg;
  std::size_t chan;        // elements from one channel's planar row to the next
  const std::size_t* off;  // off[b]: offset of tap column b within a channel's planar row
};

// Forward tile: out[k * ldo + i] = sum over j < nsrc of w[j*ldw + k] * src[j][i0 + i], for
// k < KB. src lists, in weight order (tap, c), where each (tap, input channel) term reads
// its planar row: one flat loop, however few taps and channels there are.
template <class T, std::size_t KB, std::size_t NV>
void row_fwd(const T* const* src, std::size_t nsrc, std::size_t i0, const T* w,
             std::size_t ldw, T* out, std::size_t ldo) noexcept {
  using V = RowVec<T>;
  typename V::R acc[KB][NV];
  for (std::size_t k = 0; k < KB; ++k)
    for (std::size_t v = 0; v < NV; ++v) acc[k][v] = V::zero();
  for (std::size_t j = 0; j < nsrc; ++j, w += ldw) {
    const T* x = src[j] + i0;
    typename V::R xv[NV];
    for (std::size_t v = 0; v < NV; ++v) xv[v] = V::loadu(x + v * V::lanes);
    for (std::size_t k = 0; k < KB; ++k) {
      const typename V::R wv = V::bcast(w + k);
      for (std::size_t v = 0; v < NV; ++v) acc[k][v] = V::fma(wv, xv[v], acc[k][v]);
    }
  }
  for (std::size_t k = 0; k < KB; ++k)
    for (std::size_t v = 0; v < NV; ++v) V::storeu(out + k * ldo + v * V::lanes, acc[k][v]);
}

// Data-gradient tile, scattered: for tap row a, every tap column b and input channels
// c0 <= c < c0 + CB get
// dst[c*chan + off[b] + i] += sum_{k < kn} w[((a*kw + b)*cg + c)*ldw + k] * dz[k*ldz + i],
// the k in order. A (b, c) run takes all its output channels before it is stored: runs of
// neighbouring tap columns overlap shifted by a value, and storing one after every few k
// made the next run's loads wait on stores they only partly overlap. CB channels share each
// dz load, so CB * NV sums are in flight.
template <class T, std::size_t CB, std::size_t NV>
void row_bwd_data(const RowTaps& t, std::size_t a, std::size_t c0, const T* dz, std::size_t ldz,
                  std::size_t kn, const T* w, std::size_t ldw, T* dst) noexcept {
  using V = RowVec<T>;
  for (std::size_t b = 0; b < t.kw; ++b) {
    T* out = dst + c0 * t.chan + t.off[b];
    const T* wt = w + ((a * t.kw + b) * t.cg + c0) * ldw;
    typename V::R acc[CB][NV];
    for (std::size_t j = 0; j < CB; ++j)
      for (std::size_t v = 0; v < NV; ++v) acc[j][v] = V::loadu(out + j * t.chan + v * V::lanes);
    for (std::size_t k = 0; k < kn; ++k) {
      typename V::R g[NV];
      for (std::size_t v = 0; v < NV; ++v) g[v] = V::loadu(dz + k * ldz + v * V::lanes);
      for (std::size_t j = 0; j < CB; ++j) {
        const typename V::R wv = V::bcast(wt + j * ldw + k);
        for (std::size_t v = 0; v < NV; ++v) acc[j][v] = V::fma(wv, g[v], acc[j][v]);
      }
    }
    for (std::size_t j = 0; j < CB; ++j)
      for (std::size_t v = 0; v < NV; ++v) V::storeu(out + j * t.chan + v * V::lanes, acc[j][v]);
  }
}

// Weight-gradient reductions for one input channel and TB tap columns of one kernel row:
// vsums[(tb * lds + k) * L + lane] += the lane's share of the sum over rows r and pixels
// i < width of x[r][off[tb] + i] * dz[r][k*ldz + i], for tb < TB, k < KB. Each dz vector
// feeds TB FMAs and each input vector KB, so TB + KB loads serve TB * KB FMAs (TB = 3,
// KB = 4: 7 loads, 12 FMAs, 17 registers). Sums stay in vector form (L lanes each) so a
// caller can feed the same sums from short runs of rows, which keep x and dz in L1, and sum
// the lanes once at the end. The tail is masked, so pixels past `width` are never read.
template <class T, std::size_t KB, std::size_t TB>
void row_bwd_weights(std::size_t nrows, const T* const* x, const std::size_t* off,
                     const T* const* dz, std::size_t ldz, std::size_t width, T* vsums,
                     std::size_t lds) noexcept {
  using V = RowVec<T>;
  constexpr std::size_t L = V::lanes;
  typename V::R acc[TB][KB];
#pragma GCC unroll 4
  for (std::size_t tb = 0; tb < TB; ++tb)
#pragma GCC unroll 4
    for (std::size_t k = 0; k < KB; ++k) acc[tb][k] = V::zero();
  std::size_t o[TB];
  for (std::size_t tb = 0; tb < TB; ++tb) o[tb] = off[tb];
  const std::size_t full = width / L * L;
  for (std::size_t r = 0; r < nrows; ++r) {
    const T* xr = x[r];
    const T* dr = dz[r];
    for (std::size_t i = 0; i < full; i += L) {
      typename V::R d[KB];
#pragma GCC unroll 4
      for (std::size_t k = 0; k < KB; ++k) d[k] = V::loadu(dr + k * ldz + i);
#pragma GCC unroll 4
      for (std::size_t tb = 0; tb < TB; ++tb) {
        const typename V::R xv = V::loadu(xr + o[tb] + i);
#pragma GCC unroll 4
        for (std::size_t k = 0; k < KB; ++k) acc[tb][k] = V::fma(xv, d[k], acc[tb][k]);
      }
    }
    if (full < width) {
      const auto m = V::first(width - full);
      typename V::R d[KB];
#pragma GCC unroll 4
      for (std::size_t k = 0; k < KB; ++k) d[k] = V::load(m, dr + k * ldz + full);
#pragma GCC unroll 4
      for (std::size_t tb = 0; tb < TB; ++tb) {
        const typename V::R xv = V::load(m, xr + o[tb] + full);
#pragma GCC unroll 4
        for (std::size_t k = 0; k < KB; ++k) acc[tb][k] = V::fma(xv, d[k], acc[tb][k]);
      }
    }
  }
#pragma GCC unroll 4
  for (std::size_t tb = 0; tb < TB; ++tb)
#pragma GCC unroll 4
    for (std::size_t k = 0; k < KB; ++k) {
      T* p = vsums + (tb * lds + k) * L;
      V::storeu(p, V::add(V::loadu(p), acc[tb][k]));
    }
}

// Calls f.template operator()<KB, NV>() for runtime kb in [1, 4] and nv in {1, 2, 4}.
template <class T, class F>
void with_row_tile(std::size_t kb, std::size_t nv, F&& f) {
  auto by_nv = [&]<std::size_t KB>() {
    if (nv == 1) return f.template operator()<KB, 1>();
    if constexpr (row_max_nv<T> >= 4) {
      if (nv == 4) return f.template operator()<KB, 4>();
    }
    return f.template operator()<KB, 2>();
  };
  switch (kb) {
    case 1: return by_nv.template operator()<1>();
    case 2: return by_nv.template operator()<2>();
    case 3: return by_nv.template operator()<3>();
    default: return by_nv.template operator()<4>();
  }
}

// Output channels of the next forward block when `left` remain: 8 where that tile exists,
// otherwise up to row_max_kb.
template <class T>
constexpr std::size_t row_fwd_kb(std::size_t left) noexcept {
  return row_fwd_max_kb<T> == 8 && left >= 8 ? 8 : (left < row_max_kb ? left : row_max_kb);
}

// with_row_tile for the forward, which also has the 8-channel tile of 32-register ISAs
// (2 vectors of pixels at most: each call then covers half or all of an nv = 4 tile).
template <class T, class F>
void with_row_fwd_tile(std::size_t kb, std::size_t nv, F&& f) {
  if constexpr (row_fwd_max_kb<T> == 8) {
    if (kb == 8) {
      if (nv == 1) return f.template operator()<8, 1>();
      return f.template operator()<8, 2>();
    }
  }
  with_row_tile<T>(kb, nv, f);
}

// Calls f.template operator()<KB>() for runtime kb in [1, 4].
template <class F>
void with_row_kb(std::size_t kb, F&& f) {
  switch (kb) {
    case 1: return f.template operator()<1>();
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    default: return f.template operator()<4>();
  }
}

}  // namespace fusedcnn::kernels
