// Portable transposed weight-gradient micro-kernel: the same sums as dw_mrxnr, for tiles that
// run over many input channels and few output channels.
//
// Contract (shared by every ISA family):
//   out[i * ldo + k] += sum over p < np of xrows[p][coff + i] * dz[p * ldz + k],  i < m, k < n
//   - m <= CV * lanes input channels are read from each row (the rest of the tile is masked,
//     nothing past coff + m is touched); n <= KB output channels from each dz row.
//   Never allocates, throws, or touches globals.
#pragma once

#include <cassert>
#include <cstddef>

namespace fusedcnn::kernels::generic {

template <class T, std::size_t KB, std::size_t MC>
inline void dwt_mrxnr(std::size_t np, const T* const* xrows, std::size_t coff, std::size_t m,
                      const T* dz, std::size_t ldz, std::size_t n, T* out,
                      std::size_t ldo) noexcept {
  assert(m >= 1 && m <= MC && n >= 1 && n <= KB);
  T acc[KB][MC] = {};
  for (std::size_t p = 0; p < np; ++p) {
    const T* x = xrows[p] + coff;
    const T* d = dz + p * ldz;
    for (std::size_t k = 0; k < n; ++k)
      for (std::size_t i = 0; i < m; ++i) acc[k][i] += x[i] * d[k];
  }
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t k = 0; k < n; ++k) out[i * ldo + k] += acc[k][i];
}

}  // namespace fusedcnn::kernels::generic
