// Portable igemm micro-kernel (implicit GEMM through row pointers), templated on the tile.
//
// Contract (shared by every ISA family):
//   tile[i][j] = sum over t < taps, c < kc of
//                rows[t * MR + i][aoff + c] * w[(t * kc + c) * NR + j]
//   - rows: taps * MR pointers, each to aoff + kc readable values (aoff selects the group);
//     padding points at a zero row at least that long, and a short tile (m < MR) repeats a
//     valid pointer, so there are no bounds checks inside.
//   - w: a packed panel, taps * kc rows of NR values (zero past the valid n), aligned to a
//     vector.
//   - the finished MR x NR tile goes to epi(tile, m, n) with the tile row-major (stride NR);
//     the epilogue uses only the valid m x n corner. Never allocates, throws, or touches
//     globals.
//   - an epilogue with a pointer member `ahead` asks for the lines from there on to be
//     fetched into the L2 while the tile runs, one per c step (a hint: this portable
//     version ignores it).
// This version is the reference the ISA families are tested against, and the fallback where
// none applies: n innermost and contiguous, so compilers vectorise it.
#pragma once

#include <cassert>
#include <cstddef>

namespace fusedcnn::kernels::generic {

template <class T, std::size_t MR, std::size_t NR, class Epi>
inline void igemm_mrxnr(std::size_t taps, std::size_t kc, const T* const* rows, const T* w,
                        std::size_t aoff, std::size_t m, std::size_t n,
                        Epi&& epi) noexcept {
  assert(m >= 1 && m <= MR && n >= 1 && n <= NR);
  alignas(64) T tile[MR][NR] = {};
  for (std::size_t t = 0; t < taps; ++t) {
    const T* const* r = rows + t * MR;
    const T* wt = w + t * kc * NR;
    for (std::size_t c = 0; c < kc; ++c) {
      const T* b = wt + c * NR;
      for (std::size_t i = 0; i < MR; ++i) {
        const T a = r[i][aoff + c];
        for (std::size_t j = 0; j < NR; ++j) tile[i][j] += a * b[j];
      }
    }
  }
  epi(&tile[0][0], m, n);
}

}  // namespace fusedcnn::kernels::generic
