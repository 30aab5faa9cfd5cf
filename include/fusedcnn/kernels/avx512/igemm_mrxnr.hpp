// AVX-512 igemm micro-kernel: the contract of generic/igemm_mrxnr.hpp, with the MR x NR tile
// held in zmm registers (NR = NV vectors).
//
// Register budget (32 zmm): MR * NV accumulators + NV weight vectors + 1 broadcast.
// float: 12 x 32 (24 + 2 + 1) and 16 x 16 (16 + 1 + 1); double: 12 x 16 and 16 x 8.
// Per c step: NV aligned loads of the packed panel, MR broadcasts folded into the FMAs,
// MR * NV FMAs, so the FMA ports, not the loads, bound the loop.
#pragma once

#if defined(__AVX512F__)

#include <immintrin.h>

#include <cassert>
#include <cstddef>

namespace fusedcnn::kernels::avx512 {

template <class T>
struct Vec;

template <>
struct Vec<float> {
  using R = __m512;
  static constexpr std::size_t lanes = 16;
  static R zero() noexcept { return _mm512_setzero_ps(); }
  static R load(const float* p) noexcept { return _mm512_load_ps(p); }
  static R bcast(const float* p) noexcept { return _mm512_set1_ps(*p); }
  static R fma(R a, R b, R c) noexcept { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, R v) noexcept { _mm512_store_ps(p, v); }
};

template <>
struct Vec<double> {
  using R = __m512d;
  static constexpr std::size_t lanes = 8;
  static R zero() noexcept { return _mm512_setzero_pd(); }
  static R load(const double* p) noexcept { return _mm512_load_pd(p); }
  static R bcast(const double* p) noexcept { return _mm512_set1_pd(*p); }
  static R fma(R a, R b, R c) noexcept { return _mm512_fmadd_pd(a, b, c); }
  static void store(double* p, R v) noexcept { _mm512_store_pd(p, v); }
};

template <class T, std::size_t MR, std::size_t NR, class Epi>
inline void igemm_mrxnr(std::size_t taps, std::size_t kc, const T* const* rows, const T* w,
                        std::size_t aoff, std::size_t m, std::size_t n, Epi&& epi) noexcept {
  using V = Vec<T>;
  constexpr std::size_t NV = NR / V::lanes;
  static_assert(NR % V::lanes == 0 && MR * NV + NV + 1 <= 32, "tile exceeds the zmm budget");
  assert(m >= 1 && m <= MR && n >= 1 && n <= NR);
  typename V::R acc[MR][NV];
#pragma GCC unroll 16
  for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) acc[i][v] = V::zero();
  for (std::size_t t = 0; t < taps; ++t) {
    const T* a[MR];
#pragma GCC unroll 16
    for (std::size_t i = 0; i < MR; ++i) a[i] = rows[t * MR + i] + aoff;
    const T* b = w + t * kc * NR;  // 64-byte aligned: panels are whole vectors from an aligned base
    for (std::size_t c = 0; c < kc; ++c, b += NR) {
      typename V::R bv[NV];
#pragma GCC unroll 4
      for (std::size_t v = 0; v < NV; ++v) bv[v] = V::load(b + v * V::lanes);
#pragma GCC unroll 16
      for (std::size_t i = 0; i < MR; ++i) {
        const typename V::R av = V::bcast(a[i] + c);
#pragma GCC unroll 4
        for (std::size_t v = 0; v < NV; ++v) acc[i][v] = V::fma(av, bv[v], acc[i][v]);
      }
    }
  }
  alignas(64) T tile[MR * NR];
#pragma GCC unroll 16
  for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) V::store(tile + i * NR + v * V::lanes, acc[i][v]);
  epi(static_cast<const T*>(tile), m, n);
}

}  // namespace fusedcnn::kernels::avx512

#endif  // __AVX512F__
