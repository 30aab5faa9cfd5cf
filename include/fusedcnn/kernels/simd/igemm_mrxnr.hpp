// SIMD igemm micro-kernel, written once over a vector layer V (vec/avx512.hpp, vec/avx2.hpp,
// vec/neon.hpp): the contract of generic/igemm_mrxnr.hpp with the MR x NR tile held in
// vector registers (NR = NV vectors).
//
// Register budget: MR * NV accumulators + NV weight vectors + 1 broadcast <= V::registers.
// AVX-512 float: 14 x 32 (31 of 32 zmm) and 16 x 16; AVX2 float: 6 x 16 (15 of 16 ymm).
// Per c step: NV aligned loads of the weight panel, MR broadcasts (folded into the FMAs on
// x86), MR * NV FMAs, so the FMA ports, not the loads, bound the loop. A packed panel of one
// tap (kc * NR values, <= 32 KiB for kc <= 256 floats at NR = 32) stays in L1 while the rows
// stream through.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>

#include "fusedcnn/kernels/config.hpp"

namespace fusedcnn::kernels::simd {

// NV: the vectors of the panel's NR columns that are computed, all by default; fewer for a
// group's last panel when its columns fit in fewer (the panel keeps its NR-wide rows).
template <class V, class T, std::size_t MR, std::size_t NR, std::size_t NV = NR / V::lanes,
          class Epi>
inline void igemm_mrxnr(std::size_t taps, std::size_t kc, const T* const* rows, const T* w,
                        std::size_t aoff, std::size_t m, std::size_t n,
                        Epi&& epi) noexcept {
  static_assert(NR % V::lanes == 0 && NV * V::lanes <= NR && MR * NV + NV + 1 <= V::registers,
                "tile exceeds the register budget");
  assert(m >= 1 && m <= MR && n >= 1 && n <= NV * V::lanes);
  typename V::R acc[MR][NV];
#pragma GCC unroll 32
  for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) acc[i][v] = V::zero();
  // An epilogue may name data it wants in the L2 soon (`ahead`): one line a c step, fetched
  // while the FMAs run (an address, never dereferenced: it may pass the data's end).
  constexpr bool fetch = requires { epi.ahead; };
  std::uintptr_t ahead = 0;
  if constexpr (fetch) ahead = reinterpret_cast<std::uintptr_t>(epi.ahead);
  for (std::size_t t = 0; t < taps; ++t) {
    const T* a[MR];
#pragma GCC unroll 32
    for (std::size_t i = 0; i < MR; ++i) a[i] = rows[t * MR + i] + aoff;
    const T* b = w + t * kc * NR;  // aligned: whole vectors from an aligned base
    // Two c steps per pass: the loop's bookkeeping and the reloads of row pointers that do
    // not fit the general registers are paid once per two (short runs: 21 for a 3-channel
    // 7x7 stem).
#pragma GCC unroll 2
    for (std::size_t c = 0; c < kc; ++c, b += NR) {
      typename V::R bv[NV];
#pragma GCC unroll 4
      for (std::size_t v = 0; v < NV; ++v) bv[v] = V::load(b + v * V::lanes);
      if constexpr (fetch) prefetch_l2(reinterpret_cast<const void*>(ahead)), ahead += 64;
#pragma GCC unroll 32
      for (std::size_t i = 0; i < MR; ++i) {
        const typename V::R av = V::bcast(a[i] + c);
#pragma GCC unroll 4
        for (std::size_t v = 0; v < NV; ++v) acc[i][v] = V::fma(av, bv[v], acc[i][v]);
      }
    }
  }
  if constexpr (requires { epi.template registers<V, MR, NV>(acc, m, n); }) {
    epi.template registers<V, MR, NV>(acc, m, n);  // the epilogue takes the registers
    return;
  }
  alignas(64) T tile[MR * NR];
#pragma GCC unroll 32
  for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) V::store(tile + i * NR + v * V::lanes, acc[i][v]);
  epi(static_cast<const T*>(tile), m, n);
}

}  // namespace fusedcnn::kernels::simd
