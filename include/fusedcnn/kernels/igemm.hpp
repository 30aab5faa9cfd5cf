// The igemm and weight-gradient micro-kernels of the ISA this translation unit is compiled for, the register
// tiles they offer, and the choice between them (see config.hpp for the ISA selection).
#pragma once

#include <cstddef>

#include "fusedcnn/kernels/avx512/dw_mrxnr.hpp"
#include "fusedcnn/kernels/avx512/igemm_mrxnr.hpp"
#include "fusedcnn/kernels/config.hpp"
#include "fusedcnn/kernels/generic/dw_mrxnr.hpp"
#include "fusedcnn/kernels/generic/igemm_mrxnr.hpp"

namespace fusedcnn::kernels {

// An MR x NR register tile: MR output rows (pixels) by NR output channels.
struct TileShape {
  std::size_t mr, nr;
};

#if defined(__AVX512F__) && !defined(FUSEDCNN_FORCE_GENERIC)
inline constexpr bool use_avx512 = true;
#else
inline constexpr bool use_avx512 = false;
#endif

// Two tiles per type: a wide one (two vectors of channels) for many output channels, and a
// narrow one (one vector, more rows) that wastes fewer lanes when a group has few channels.
template <class T>
struct Tiles {
  static constexpr std::size_t lanes = use_avx512 ? 64 / sizeof(T) : 16 / sizeof(T);
  static constexpr TileShape wide{use_avx512 ? 12 : 4, 2 * lanes};
  static constexpr TileShape narrow{use_avx512 ? 16 : 4, lanes};
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
  if (shape.nr == w.nr) return f.template operator()<w.mr, w.nr>();
  return f.template operator()<n.mr, n.nr>();
}

// The micro-kernel for an MR x NR tile; contract in generic/igemm_mrxnr.hpp.
template <class T, std::size_t MR, std::size_t NR, class Epi>
inline void igemm(std::size_t taps, std::size_t kc, const T* const* rows, const T* w,
                  std::size_t aoff, std::size_t m, std::size_t n, Epi&& epi) noexcept {
#if defined(__AVX512F__) && !defined(FUSEDCNN_FORCE_GENERIC)
  avx512::igemm_mrxnr<T, MR, NR>(taps, kc, rows, w, aoff, m, n, static_cast<Epi&&>(epi));
#else
  generic::igemm_mrxnr<T, MR, NR>(taps, kc, rows, w, aoff, m, n, static_cast<Epi&&>(epi));
#endif
}

// Weight-gradient tiles: MR input channels by NR output channels (NR two vectors wide).
template <class T>
struct DwTile {
  static constexpr std::size_t mr = use_avx512 ? 12 : 4;
  static constexpr std::size_t nr = Tiles<T>::wide.nr;
};

// The weight-gradient micro-kernel for an MR x NR tile; contract in generic/dw_mrxnr.hpp.
template <class T, std::size_t MR, std::size_t NR>
inline void dw(std::size_t np, const T* const* xrows, std::size_t coff, const T* dz,
               std::size_t ldz, std::size_t n, T* out, std::size_t ldo) noexcept {
#if defined(__AVX512F__) && !defined(FUSEDCNN_FORCE_GENERIC)
  avx512::dw_mrxnr<T, MR, NR>(np, xrows, coff, dz, ldz, n, out, ldo);
#else
  generic::dw_mrxnr<T, MR, NR>(np, xrows, coff, dz, ldz, n, out, ldo);
#endif
}

}  // namespace fusedcnn::kernels
