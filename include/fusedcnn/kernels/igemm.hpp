// The igemm micro-kernel of the ISA this translation unit is compiled for (see config.hpp).
#pragma once

#include <cstddef>

#include "fusedcnn/kernels/config.hpp"
#include "fusedcnn/kernels/generic/igemm_mrxnr.hpp"

namespace fusedcnn::kernels {

// Dispatches to the best micro-kernel for T at IgemmTile<T>; contract in generic/igemm_mrxnr.hpp.
template <class T, class Epi>
inline void igemm(std::size_t taps, std::size_t kc, const T* const* rows, const T* w,
                  std::size_t aoff, std::size_t m, std::size_t n, Epi&& epi) noexcept {
  generic::igemm_mrxnr<T, IgemmTile<T>::mr, IgemmTile<T>::nr>(taps, kc, rows, w, aoff, m, n,
                                                               static_cast<Epi&&>(epi));
}

}  // namespace fusedcnn::kernels
