// SIMD weight-gradient micro-kernel over a vector layer V: the contract of
// generic/dw_mrxnr.hpp with the MR x NR tile of dW in vector registers.
//
// Register budget: MR * NV accumulators + NV dz vectors + 1 broadcast <= V::registers
// (AVX-512 12 x 2 vectors: 27 of 32). Per pixel: NV loads of dz (masked past n), MR
// broadcasts of x, MR * NV FMAs. A block of 256 pixels of dz (256 * NR values) stays in L2.
#pragma once

#include <cassert>
#include <cstddef>

namespace fusedcnn::kernels::simd {

template <class V, class T, std::size_t MR, std::size_t NR>
inline void dw_mrxnr(std::size_t np, const T* const* xrows, std::size_t coff, const T* dz,
                     std::size_t ldz, std::size_t n, T* out, std::size_t ldo) noexcept {
  constexpr std::size_t L = V::lanes, NV = NR / L;
  static_assert(NR % L == 0 && MR * NV + NV + 1 <= V::registers,
                "tile exceeds the register budget");
  assert(n >= 1 && n <= NR);
  typename V::M mask[NV];
#pragma GCC unroll 4
  for (std::size_t v = 0; v < NV; ++v) mask[v] = V::first(n > v * L ? n - v * L : 0);
  typename V::R acc[MR][NV];
#pragma GCC unroll 32
  for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) acc[i][v] = V::zero();
#pragma GCC unroll 2  // loop bookkeeping and the row-pointer load paid once per two pixels
  for (std::size_t p = 0; p < np; ++p) {
    const T* x = xrows[p] + coff;
    const T* d = dz + p * ldz;
    typename V::R dv[NV];
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) dv[v] = V::load(mask[v], d + v * L);
#pragma GCC unroll 32
    for (std::size_t i = 0; i < MR; ++i) {
      const typename V::R xv = V::bcast(x + i);
#pragma GCC unroll 4
      for (std::size_t v = 0; v < NV; ++v) acc[i][v] = V::fma(xv, dv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 32
  for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) {
      T* o = out + i * ldo + v * L;
      V::store(mask[v], o, V::add(V::load(mask[v], o), acc[i][v]));
    }
}

}  // namespace fusedcnn::kernels::simd
