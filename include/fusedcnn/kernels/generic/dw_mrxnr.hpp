// Portable weight-gradient micro-kernel: a tile of dW accumulated as a sum of outer products
// over pixels.
//
// Contract (shared by every ISA family):
//   out[i * ldo + j] += sum over p < np of xrows[p][coff + i] * dz[p * ldz + j],  i < MR, j < n
//   - xrows: np pointers to input rows for one tap (a zero row where the tap reads padding);
//     exactly MR channels coff.. are read from each, so callers split channels into exact
//     MR blocks and nothing past a row is touched.
//   - dz: np rows of the output gradient, n <= NR valid columns each (no packing needed).
//   Never allocates, throws, or touches globals.
#pragma once

#include <cassert>
#include <cstddef>

namespace fusedcnn::kernels::generic {

template <class T, std::size_t MR, std::size_t NR>
inline void dw_mrxnr(std::size_t np, const T* const* xrows, std::size_t coff, const T* dz,
                     std::size_t ldz, std::size_t n, T* out, std::size_t ldo) noexcept {
  assert(n >= 1 && n <= NR);
  T acc[MR][NR] = {};
  for (std::size_t p = 0; p < np; ++p) {
    const T* x = xrows[p] + coff;
    const T* d = dz + p * ldz;
    for (std::size_t i = 0; i < MR; ++i)
      for (std::size_t j = 0; j < n; ++j) acc[i][j] += x[i] * d[j];
  }
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < n; ++j) out[i * ldo + j] += acc[i][j];
}

}  // namespace fusedcnn::kernels::generic
