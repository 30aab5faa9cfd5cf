// AVX-512 weight-gradient micro-kernel: the contract of generic/dw_mrxnr.hpp with the
// MR x NR tile of dW in zmm registers.
//
// Register budget (32 zmm): MR * NV accumulators + NV dz vectors + 1 broadcast; 12 x 2
// vectors uses 27. Per pixel: NV loads of dz (masked past n), MR broadcasts of x folded into
// the FMAs, MR * NV FMAs.
#pragma once

#if defined(__AVX512F__)

#include <immintrin.h>

#include <cassert>
#include <cstddef>

#include "fusedcnn/kernels/avx512/igemm_mrxnr.hpp"

namespace fusedcnn::kernels::avx512 {

template <class T>
struct MaskedVec;

template <>
struct MaskedVec<float> {
  using R = __m512;
  using M = __mmask16;
  static M first(std::size_t n) noexcept { return n >= 16 ? M(0xFFFF) : M((1u << n) - 1u); }
  static R load(M m, const float* p) noexcept { return _mm512_maskz_loadu_ps(m, p); }
  static void store(M m, float* p, R v) noexcept { _mm512_mask_storeu_ps(p, m, v); }
  static R add(R a, R b) noexcept { return _mm512_add_ps(a, b); }
};

template <>
struct MaskedVec<double> {
  using R = __m512d;
  using M = __mmask8;
  static M first(std::size_t n) noexcept { return n >= 8 ? M(0xFF) : M((1u << n) - 1u); }
  static R load(M m, const double* p) noexcept { return _mm512_maskz_loadu_pd(m, p); }
  static void store(M m, double* p, R v) noexcept { _mm512_mask_storeu_pd(p, m, v); }
  static R add(R a, R b) noexcept { return _mm512_add_pd(a, b); }
};

template <class T, std::size_t MR, std::size_t NR>
inline void dw_mrxnr(std::size_t np, const T* const* xrows, std::size_t coff, const T* dz,
                     std::size_t ldz, std::size_t n, T* out, std::size_t ldo) noexcept {
  using V = Vec<T>;
  using MV = MaskedVec<T>;
  constexpr std::size_t L = V::lanes, NV = NR / L;
  static_assert(NR % L == 0 && MR * NV + NV + 1 <= 32, "tile exceeds the zmm budget");
  assert(n >= 1 && n <= NR);
  typename MV::M mask[NV];
#pragma GCC unroll 4
  for (std::size_t v = 0; v < NV; ++v) mask[v] = MV::first(n > v * L ? n - v * L : 0);
  typename V::R acc[MR][NV];
#pragma GCC unroll 16
  for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) acc[i][v] = V::zero();
  for (std::size_t p = 0; p < np; ++p) {
    const T* x = xrows[p] + coff;
    const T* d = dz + p * ldz;
    typename V::R dv[NV];
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) dv[v] = MV::load(mask[v], d + v * L);
#pragma GCC unroll 16
    for (std::size_t i = 0; i < MR; ++i) {
      const typename V::R xv = V::bcast(x + i);
#pragma GCC unroll 4
      for (std::size_t v = 0; v < NV; ++v) acc[i][v] = V::fma(xv, dv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 16
  for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) {
      T* o = out + i * ldo + v * L;
      MV::store(mask[v], o, MV::add(MV::load(mask[v], o), acc[i][v]));
    }
}

}  // namespace fusedcnn::kernels::avx512

#endif  // __AVX512F__
