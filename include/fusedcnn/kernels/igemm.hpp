// The micro-kernels of the ISA this translation unit is compiled for (config.hpp), the
// register tiles each offers, and the choice between them.
#pragma once

#include <cstddef>

#include "fusedcnn/kernels/config.hpp"
#include "fusedcnn/kernels/generic/dw_mrxnr.hpp"
#include "fusedcnn/kernels/generic/dwt_mrxnr.hpp"
#include "fusedcnn/kernels/generic/igemm_mrxnr.hpp"
#include "fusedcnn/kernels/generic/strip_rxkw.hpp"
#include "fusedcnn/kernels/simd/dw_mrxnr.hpp"
#include "fusedcnn/kernels/simd/dwt_mrxnr.hpp"
#include "fusedcnn/kernels/simd/igemm_mrxnr.hpp"
#include "fusedcnn/kernels/simd/strip_rxkw.hpp"
#include "fusedcnn/kernels/vec/avx2.hpp"
#include "fusedcnn/kernels/vec/avx512.hpp"
#include "fusedcnn/kernels/vec/neon.hpp"

namespace fusedcnn::kernels {

// An MR x NR register tile: MR output rows (pixels) by NR output channels.
struct TileShape {
  std::size_t mr, nr;
};

// Per ISA: the vector layer, and the tiles sized to its register file. Each has a wide igemm
// tile for many output channels, a narrow one (one vector, more rows) that wastes fewer lanes
// when a group has few channels, the weight-gradient tile (dw_mr x dw_nv vectors) and the
// transposed weight-gradient tile for groups of at most one vector of output channels (dwt_kb
// output channels x dwt_cv vectors of input channels), and the strip of strip_r pixels of one
// row by one vector of output channels. AVX-512 float: igemm 14 x 32 and 16 x 16, weight
// gradient 12 x 32 and 8 x 48, strip 16 x 16.
#if FUSEDCNN_ISA_AVX512
template <class T>
using Vec = avx512::Vec<T>;
inline constexpr std::size_t wide_mr = 14, wide_nv = 2, narrow_mr = 16, dw_mr = 12, dw_nv = 2,
                             dwt_kb = 8, dwt_cv = 3, strip_r = 16;
#elif FUSEDCNN_ISA_AVX2
template <class T>
using Vec = avx2::Vec<T>;
inline constexpr std::size_t wide_mr = 6, wide_nv = 2, narrow_mr = 12, dw_mr = 6, dw_nv = 2,
                             dwt_kb = 4, dwt_cv = 2, strip_r = 8;
#elif FUSEDCNN_ISA_NEON
template <class T>
using Vec = neon::Vec<T>;
inline constexpr std::size_t wide_mr = 6, wide_nv = 4, narrow_mr = 12, dw_mr = 6, dw_nv = 4,
                             dwt_kb = 8, dwt_cv = 3, strip_r = 16;
#else
inline constexpr std::size_t wide_mr = 4, wide_nv = 2, narrow_mr = 4, dw_mr = 4, dw_nv = 2,
                             dwt_kb = 4, dwt_cv = 2, strip_r = 4;
#endif

// Lanes of T in one vector of this build (the generic family pretends to 16-byte vectors).
template <class T>
inline constexpr std::size_t lanes = [] {
#if FUSEDCNN_ISA_GENERIC
  return 16 / sizeof(T);
#else
  return Vec<T>::lanes;
#endif
}();

template <class T>
struct Tiles {
  static constexpr TileShape wide{wide_mr, wide_nv * lanes<T>};
  static constexpr TileShape narrow{narrow_mr, lanes<T>};
};

// The tile for a GEMM whose groups have n_per_group output columns.
template <class T>
constexpr TileShape pick_tile(std::size_t n_per_group) noexcept {
  return n_per_group <= Tiles<T>::narrow.nr ? Tiles<T>::narrow : Tiles<T>::wide;
}

// Calls f.template operator()<MR, NR>() for the compile-time twin of `shape`.
template <class T, class F>
decltype(auto) with_tile(TileShape shape, F&& f) {
  constexpr TileShape w = Tiles<T>::wide, n = Tiles<T>::narrow;
  if (shape.nr == w.nr && shape.mr == w.mr) return f.template operator()<w.mr, w.nr>();
  return f.template operator()<n.mr, n.nr>();
}

// The igemm micro-kernel for an MR x NR tile; contract in generic/igemm_mrxnr.hpp.
template <class T, std::size_t MR, std::size_t NR, class Epi>
inline void igemm(std::size_t taps, std::size_t kc, const T* const* rows, const T* w,
                  std::size_t aoff, std::size_t m, std::size_t n,
                  Epi&& epi) noexcept {
#if FUSEDCNN_ISA_GENERIC
  generic::igemm_mrxnr<T, MR, NR>(taps, kc, rows, w, aoff, m, n, static_cast<Epi&&>(epi));
#else
  // a group's last panel computes only the vectors its columns reach: 73 output channels in
  // 32-wide panels would otherwise spend a sixth of the FMAs on zero columns
  constexpr std::size_t L = Vec<T>::lanes, NV = NR / L;
  auto run = [&]<std::size_t NVC>() {
    simd::igemm_mrxnr<Vec<T>, T, MR, NR, NVC>(taps, kc, rows, w, aoff, m, n,
                                              static_cast<Epi&&>(epi));
  };
  if constexpr (NV >= 2)
    if (n <= L) return run.template operator()<1>();
  if constexpr (NV >= 3)
    if (n <= 2 * L) return run.template operator()<2>();
  if constexpr (NV >= 4)
    if (n <= 3 * L) return run.template operator()<3>();
  run.template operator()<NV>();
#endif
}

// Weight-gradient tiles: MR input channels by NR output channels.
template <class T>
struct DwTile {
  static constexpr std::size_t mr = dw_mr;
  static constexpr std::size_t nr = dw_nv * lanes<T>;
};

// The weight-gradient micro-kernel for an MR x NR tile; contract in generic/dw_mrxnr.hpp.
template <class T, std::size_t MR, std::size_t NR>
inline void dw(std::size_t np, const T* const* xrows, std::size_t coff, const T* dz,
               std::size_t ldz, std::size_t n, T* out, std::size_t ldo) noexcept {
#if FUSEDCNN_ISA_GENERIC
  generic::dw_mrxnr<T, MR, NR>(np, xrows, coff, dz, ldz, n, out, ldo);
#else
  simd::dw_mrxnr<Vec<T>, T, MR, NR>(np, xrows, coff, dz, ldz, n, out, ldo);
#endif
}

// Transposed weight-gradient tiles: KB output channels by C input channels (CV vectors).
template <class T>
struct DwtTile {
  static constexpr std::size_t kb = dwt_kb;
  static constexpr std::size_t c = dwt_cv * lanes<T>;
};

// The transposed weight-gradient micro-kernel; contract in generic/dwt_mrxnr.hpp.
template <class T>
inline void dwt(std::size_t np, const T* const* xrows, std::size_t coff, std::size_t m,
                const T* dz, std::size_t ldz, std::size_t n, T* out, std::size_t ldo) noexcept {
#if FUSEDCNN_ISA_GENERIC
  generic::dwt_mrxnr<T, dwt_kb, DwtTile<T>::c>(np, xrows, coff, m, dz, ldz, n, out, ldo);
#else
  simd::dwt_mrxnr<Vec<T>, T, dwt_kb, dwt_cv>(np, xrows, coff, m, dz, ldz, n, out, ldo);
#endif
}

// Tap columns the strip kernel is compiled for (one instantiation each).
inline constexpr std::size_t strip_max_kw = 7;

// The strip micro-kernel for KW tap columns; contract in generic/strip_rxkw.hpp.
template <class T, std::size_t KW>
inline void strip(std::size_t kh, std::size_t C, const T* const* xrows, const T* w,
                  T* out) noexcept {
#if FUSEDCNN_ISA_GENERIC
  generic::strip_rxkw<T, lanes<T>, strip_r, KW>(kh, C, xrows, w, out);
#else
  simd::strip_rxkw<Vec<T>, T, strip_r, KW>(kh, C, xrows, w, out);
#endif
}

// Calls f.template operator()<KW>() for kw in [1, strip_max_kw].
template <class F>
decltype(auto) with_strip_kw(std::size_t kw, F&& f) {
  switch (kw) {
    case 1: return f.template operator()<1>();
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    case 4: return f.template operator()<4>();
    case 5: return f.template operator()<5>();
    case 6: return f.template operator()<6>();
    default: return f.template operator()<7>();
  }
}

}  // namespace fusedcnn::kernels
