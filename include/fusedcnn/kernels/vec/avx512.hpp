// The AVX-512 vector layer: the few operations the simd/ micro-kernels need, for zmm registers.
#pragma once

#if defined(__AVX512F__)

#include <immintrin.h>

#include <cstddef>

namespace fusedcnn::kernels::avx512 {

template <class T>
struct Vec;

template <>
struct Vec<float> {
  using R = __m512;
  using M = __mmask16;
  static constexpr std::size_t lanes = 16;
  static constexpr std::size_t registers = 32;
  static R zero() noexcept { return _mm512_setzero_ps(); }
  static R load(const float* p) noexcept { return _mm512_load_ps(p); }  // 64-byte aligned
  static R loadu(const float* p) noexcept { return _mm512_loadu_ps(p); }  // unaligned
  static R bcast(const float* p) noexcept { return _mm512_set1_ps(*p); }
  static R fma(R a, R b, R c) noexcept { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) noexcept { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) noexcept { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) noexcept { return _mm512_mul_ps(a, b); }
  static R relu(R v) noexcept {  // v < 0 -> 0; NaN and -0 stay (as std::max(v, 0))
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero(), _CMP_NLT_UQ), v);
  }
  static void store(float* p, R v) noexcept { _mm512_store_ps(p, v); }  // 64-byte aligned
  static void storeu(float* p, R v) noexcept { _mm512_storeu_ps(p, v); }  // unaligned
  static M first(std::size_t n) noexcept { return n >= 16 ? M(0xFFFF) : M((1u << n) - 1u); }
  static R load(M m, const float* p) noexcept { return _mm512_maskz_loadu_ps(m, p); }
  static void store(M m, float* p, R v) noexcept { _mm512_mask_storeu_ps(p, m, v); }
};

template <>
struct Vec<double> {
  using R = __m512d;
  using M = __mmask8;
  static constexpr std::size_t lanes = 8;
  static constexpr std::size_t registers = 32;
  static R zero() noexcept { return _mm512_setzero_pd(); }
  static R load(const double* p) noexcept { return _mm512_load_pd(p); }
  static R loadu(const double* p) noexcept { return _mm512_loadu_pd(p); }  // unaligned
  static R bcast(const double* p) noexcept { return _mm512_set1_pd(*p); }
  static R fma(R a, R b, R c) noexcept { return _mm512_fmadd_pd(a, b, c); }
  static R add(R a, R b) noexcept { return _mm512_add_pd(a, b); }
  static R sub(R a, R b) noexcept { return _mm512_sub_pd(a, b); }
  static R mul(R a, R b) noexcept { return _mm512_mul_pd(a, b); }
  static R relu(R v) noexcept {  // v < 0 -> 0; NaN and -0 stay (as std::max(v, 0))
    return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(v, zero(), _CMP_NLT_UQ), v);
  }
  static void store(double* p, R v) noexcept { _mm512_store_pd(p, v); }
  static void storeu(double* p, R v) noexcept { _mm512_storeu_pd(p, v); }  // unaligned
  static M first(std::size_t n) noexcept { return n >= 8 ? M(0xFF) : M((1u << n) - 1u); }
  static R load(M m, const double* p) noexcept { return _mm512_maskz_loadu_pd(m, p); }
  static void store(M m, double* p, R v) noexcept { _mm512_mask_storeu_pd(p, m, v); }
};

}  // namespace fusedcnn::kernels::avx512

#endif  // __AVX512F__
