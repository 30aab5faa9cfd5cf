// Option structs shared by ops/ and nn/: convolution geometry, batch-norm settings, activation.
#pragma once

#include <array>
#include <cstddef>
#include <optional>

namespace fusedcnn {

// How a Padding's four sides are decided.
enum class PaddingMode {
  explicit_sides,  // top/bottom/left/right as given
  same,            // TensorFlow "SAME": out = ceil(in / stride), extra row/column at bottom/right
  valid,           // no padding
};

// Zero padding per side, {top, bottom, left, right}; Padding{} is no padding.
struct Padding {
  std::size_t top = 0, bottom = 0, left = 0, right = 0;
  PaddingMode mode = PaddingMode::explicit_sides;

  static constexpr Padding symmetric(std::size_t ph, std::size_t pw) noexcept {
    return {ph, ph, pw, pw, PaddingMode::explicit_sides};
  }
  static constexpr Padding same() noexcept { return {0, 0, 0, 0, PaddingMode::same}; }
  static constexpr Padding valid() noexcept { return {0, 0, 0, 0, PaddingMode::valid}; }

  friend constexpr bool operator==(const Padding&, const Padding&) = default;
};

// Conv2D's options. Dilation follows PyTorch: 1 is a dense kernel.
struct Conv2DOptions {
  std::array<std::size_t, 2> kernel = {3, 3};
  std::array<std::size_t, 2> stride = {1, 1};
  Padding padding = Padding{};
  std::array<std::size_t, 2> dilation = {1, 1};
  std::size_t groups = 1;
  bool bias = true;
};

// BatchNorm2D's options. momentum = std::nullopt means a cumulative moving average.
struct BatchNormOptions {
  double eps = 1e-5;
  std::optional<double> momentum = 0.1;
  bool affine = true;
  bool track_running_stats = true;
};

// The activation fused after the batch norm in ConvBN.
enum class Activation { none, relu };

}  // namespace fusedcnn
