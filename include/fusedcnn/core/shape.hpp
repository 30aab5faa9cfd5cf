// Shapes, the scalar concept, and overflow-checked element counts.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <limits>

#include "fusedcnn/core/error.hpp"

namespace fusedcnn {

template <std::size_t Rank>
using Shape = std::array<std::size_t, Rank>;

// The element types every layer and kernel is written for.
template <class T>
concept Scalar = std::same_as<T, float> || std::same_as<T, double>;

namespace detail {

// Product of the extents; throws shape_error when it (or its byte size) overflows size_t.
template <class T, std::size_t Rank>
std::size_t checked_count(const Shape<Rank>& s) {
  constexpr std::size_t max_elems = std::numeric_limits<std::size_t>::max() / sizeof(T);
  std::size_t n = 1;
  for (std::size_t d : s) {
    if (d != 0 && n > max_elems / d)
      throw shape_error(cat("Tensor: element count of shape ", shape_str(s),
                            " overflows std::size_t"));
    n *= d;
  }
  return n;
}

}  // namespace detail
}  // namespace fusedcnn
