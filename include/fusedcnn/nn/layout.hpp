// Weight layout conversions between PyTorch's OIHW and fusedcnn's HWIO.
#pragma once

#include <cstddef>

#include "fusedcnn/core/tensor.hpp"

namespace fusedcnn {

// [O, I, KH, KW] -> [KH, KW, I, O].
template <class T>
Tensor<T> hwio_from_oihw(const Tensor<T>& w) {
  const auto [O, I, KH, KW] = w.shape();
  Tensor<T> out({KH, KW, I, O}, detail::uninitialized);
  for (std::size_t o = 0; o < O; ++o)
    for (std::size_t i = 0; i < I; ++i)
      for (std::size_t a = 0; a < KH; ++a)
        for (std::size_t b = 0; b < KW; ++b) out(a, b, i, o) = w(o, i, a, b);
  return out;
}

// [KH, KW, I, O] -> [O, I, KH, KW].
template <class T>
Tensor<T> oihw_from_hwio(const Tensor<T>& w) {
  const auto [KH, KW, I, O] = w.shape();
  Tensor<T> out({O, I, KH, KW}, detail::uninitialized);
  for (std::size_t o = 0; o < O; ++o)
    for (std::size_t i = 0; i < I; ++i)
      for (std::size_t a = 0; a < KH; ++a)
        for (std::size_t b = 0; b < KW; ++b) out(o, i, a, b) = w(a, b, i, o);
  return out;
}

}  // namespace fusedcnn
