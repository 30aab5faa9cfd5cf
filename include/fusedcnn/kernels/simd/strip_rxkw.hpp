// SIMD strip micro-kernel over a vector layer V: the contract of generic/strip_rxkw.hpp with
// the R x 1 vector tile in registers.
//
// Why a strip: with one vector of output channels the igemm tile spends a broadcast load on
// every FMA. Along a row of unit stride, input pixel j of kernel row a feeds output j - b for
// every tap column b, so one broadcast serves up to KW FMAs, and the KW weight vectors of a
// (kernel row, input channel) stay in registers across the strip. Per (a, c): KW weight loads,
// R + KW - 1 broadcasts, R * KW FMAs: 21 loads for 48 FMAs at R = 16, KW = 3.
// Register budget: R accumulators + KW weights + 1 broadcast <= V::registers (AVX-512 float:
// R = 16, KW <= 7 uses at most 24 of 32 zmm; AVX2: R = 8, KW <= 7 at most 16 of 16 ymm).
#pragma once

#include <cstddef>

namespace fusedcnn::kernels::simd {

template <class V, class T, std::size_t R, std::size_t KW>
inline void strip_rxkw(std::size_t kh, std::size_t C, const T* const* xrows, const T* w,
                       T* out) noexcept {
  constexpr std::size_t L = V::lanes;
  static_assert(R + KW + 1 <= V::registers, "strip exceeds the register budget");
  typename V::R acc[R];
#pragma GCC unroll 32
  for (std::size_t r = 0; r < R; ++r) acc[r] = V::zero();
  for (std::size_t a = 0; a < kh; ++a) {
    const T* xr = xrows[a];
    const T* wa = w + a * KW * C * L;
    for (std::size_t c = 0; c < C; ++c) {
      typename V::R wv[KW];
#pragma GCC unroll 8
      for (std::size_t b = 0; b < KW; ++b) wv[b] = V::load(wa + (b * C + c) * L);
#pragma GCC unroll 40
      for (std::size_t j = 0; j < R + KW - 1; ++j) {
        const typename V::R v = V::bcast(xr + j * C + c);
#pragma GCC unroll 8
        for (std::size_t b = 0; b < KW; ++b)
          if (j >= b && j - b < R) acc[j - b] = V::fma(v, wv[b], acc[j - b]);
      }
    }
  }
#pragma GCC unroll 32
  for (std::size_t r = 0; r < R; ++r) V::store(out + r * L, acc[r]);
}

}  // namespace fusedcnn::kernels::simd
