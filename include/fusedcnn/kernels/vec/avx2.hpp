// The AVX2 + FMA vector layer for the simd/ micro-kernels (ymm registers, masks as lane
// counts: AVX2 has masked loads/stores through vector masks, built from the count).
#pragma once

#if defined(__AVX2__) && defined(__FMA__)

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace fusedcnn::kernels::avx2 {

template <class T>
struct Vec;

template <>
struct Vec<float> {
  using R = __m256;
  using M = __m256i;
  static constexpr std::size_t lanes = 8;
  static constexpr std::size_t registers = 16;
  static R zero() noexcept { return _mm256_setzero_ps(); }
  static R load(const float* p) noexcept { return _mm256_load_ps(p); }  // 32-byte aligned
  static R loadu(const float* p) noexcept { return _mm256_loadu_ps(p); }  // unaligned
  static R bcast(const float* p) noexcept { return _mm256_broadcast_ss(p); }
  static R fma(R a, R b, R c) noexcept { return _mm256_fmadd_ps(a, b, c); }
  static R add(R a, R b) noexcept { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) noexcept { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) noexcept { return _mm256_mul_ps(a, b); }
  static R relu(R v) noexcept { return _mm256_max_ps(zero(), v); }  // NaN stays NaN
  static void store(float* p, R v) noexcept { _mm256_store_ps(p, v); }
  static void storeu(float* p, R v) noexcept { _mm256_storeu_ps(p, v); }  // unaligned
  static M first(std::size_t n) noexcept {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n > 8 ? 8 : n)), idx);
  }
  static R load(M m, const float* p) noexcept { return _mm256_maskload_ps(p, m); }
  static void store(M m, float* p, R v) noexcept { _mm256_maskstore_ps(p, m, v); }
};

template <>
struct Vec<double> {
  using R = __m256d;
  using M = __m256i;
  static constexpr std::size_t lanes = 4;
  static constexpr std::size_t registers = 16;
  static R zero() noexcept { return _mm256_setzero_pd(); }
  static R load(const double* p) noexcept { return _mm256_load_pd(p); }
  static R loadu(const double* p) noexcept { return _mm256_loadu_pd(p); }  // unaligned
  static R bcast(const double* p) noexcept { return _mm256_broadcast_sd(p); }
  static R fma(R a, R b, R c) noexcept { return _mm256_fmadd_pd(a, b, c); }
  static R add(R a, R b) noexcept { return _mm256_add_pd(a, b); }
  static R sub(R a, R b) noexcept { return _mm256_sub_pd(a, b); }
  static R mul(R a, R b) noexcept { return _mm256_mul_pd(a, b); }
  static R relu(R v) noexcept { return _mm256_max_pd(zero(), v); }  // NaN stays NaN
  static void store(double* p, R v) noexcept { _mm256_store_pd(p, v); }
  static void storeu(double* p, R v) noexcept { _mm256_storeu_pd(p, v); }  // unaligned
  static M first(std::size_t n) noexcept {
    const __m256i idx = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(static_cast<std::int64_t>(n > 4 ? 4 : n)), idx);
  }
  static R load(M m, const double* p) noexcept { return _mm256_maskload_pd(p, m); }
  static void store(M m, double* p, R v) noexcept { _mm256_maskstore_pd(p, m, v); }
};

}  // namespace fusedcnn::kernels::avx2

#endif  // __AVX2__ && __FMA__
