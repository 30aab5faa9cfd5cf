// SIMD transposed weight-gradient micro-kernel over a vector layer V: the dwt contract of
// generic/dwt_mrxnr.hpp with the tile held as KB x CV vectors (output channels by vectors of
// input channels).
//
// Why transposed: with few output channels (one vector or less), the dw tile broadcasts one
// x value per FMA and loads are the bound. Here each pixel loads CV vectors of x and
// broadcasts KB dz values for KB * CV FMAs (AVX-512: 3 + 8 loads for 24 FMAs, 28 of 32
// registers). The finished tile is added to dW transposed, once per call.
#pragma once

#include <cassert>
#include <cstddef>
#include <type_traits>

namespace fusedcnn::kernels::simd {

template <class V, class T, std::size_t KB, std::size_t CV>
inline void dwt_mrxnr(std::size_t np, const T* const* xrows, std::size_t coff, std::size_t m,
                      const T* dz, std::size_t ldz, std::size_t n, T* out,
                      std::size_t ldo) noexcept {
  constexpr std::size_t L = V::lanes;
  static_assert(KB * CV + CV + 1 <= V::registers, "tile exceeds the register budget");
  assert(m >= 1 && m <= CV * L && n >= 1 && n <= KB);
  typename V::M mask[CV];
#pragma GCC unroll 4
  for (std::size_t v = 0; v < CV; ++v) mask[v] = V::first(m > v * L ? m - v * L : 0);
  std::size_t kk[KB];  // columns past n repeat the last valid one (never read past dz's row)
  for (std::size_t k = 0; k < KB; ++k) kk[k] = k < n ? k : n - 1;
  typename V::R acc[KB][CV];
#pragma GCC unroll 16
  for (std::size_t k = 0; k < KB; ++k)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < CV; ++v) acc[k][v] = V::zero();
  // A full tile reads dz at constant offsets; a short one through the clamped columns.
  auto pixels = [&](auto full) {
    for (std::size_t p = 0; p < np; ++p) {
      const T* x = xrows[p] + coff;
      const T* d = dz + p * ldz;
      typename V::R xv[CV];
#pragma GCC unroll 4
      for (std::size_t v = 0; v < CV; ++v) xv[v] = V::load(mask[v], x + v * L);
#pragma GCC unroll 16
      for (std::size_t k = 0; k < KB; ++k) {
        const typename V::R dv = V::bcast(d + (decltype(full)::value ? k : kk[k]));
#pragma GCC unroll 4
        for (std::size_t v = 0; v < CV; ++v) acc[k][v] = V::fma(xv[v], dv, acc[k][v]);
      }
    }
  };
  if (n == KB)
    pixels(std::true_type{});
  else
    pixels(std::false_type{});
  alignas(64) T tile[KB][CV * L];
#pragma GCC unroll 16
  for (std::size_t k = 0; k < KB; ++k)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < CV; ++v) V::store(tile[k] + v * L, acc[k][v]);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t k = 0; k < n; ++k) out[i * ldo + k] += tile[k][i];
}

}  // namespace fusedcnn::kernels::simd
