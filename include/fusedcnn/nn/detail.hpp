// Helpers shared by the nn/ layers: the forward-cache state and common checks.
#pragma once

#include <cstddef>
#include <string>

#include "fusedcnn/core/error.hpp"
#include "fusedcnn/core/tensor.hpp"

namespace fusedcnn::detail {

// Throws shape_error when any extent of x is zero.
template <class T, std::size_t Rank>
void check_nonempty(const char* layer, const char* what, const Tensor<T, Rank>& x) {
  for (std::size_t d : x.shape())
    if (d == 0)
      throw shape_error(cat(layer, ": ", what, " has a zero-sized dimension (shape ",
                            shape_str(x.shape()), ")"));
}

// Throws shape_error unless dy has the shape of the last forward's output.
template <class T>
void check_dy(const char* layer, const Tensor<T>& dy, const Shape<4>& expected) {
  if (dy.shape() != expected)
    throw shape_error(cat(layer, ": dy has shape N,H,W,C = ", shape_str(dy.shape()),
                          ", the last forward's output has ", shape_str(expected)));
}

// Throws shape_error unless a parameter still has the shape the layer was built with (a user
// may assign a new tensor through a non-const accessor).
template <class T, std::size_t Rank>
void check_param(const char* layer, const char* name, const Tensor<T, Rank>& t,
                 const Shape<Rank>& expected) {
  if (t.shape() != expected)
    throw shape_error(cat(layer, ": ", name, " has shape ", shape_str(t.shape()), ", expected ",
                          shape_str(expected)));
}

[[noreturn]] inline void throw_no_forward(const char* layer) {
  throw state_error(cat(layer, ": backward called before forward"));
}

// Copies src into dst, reusing dst's storage when the shape matches (backward caches).
template <class T, std::size_t Rank>
void copy_into(const Tensor<T, Rank>& src, Tensor<T, Rank>& dst) {
  ensure_shape(dst, src.shape());
  std::copy_n(src.data(), src.size(), dst.data());
}

}  // namespace fusedcnn::detail
