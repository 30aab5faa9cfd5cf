// ReLU: y = max(x, 0); NaN propagates, and the gradient mask is x > 0 (zero at exactly 0).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "fusedcnn/core/tensor.hpp"
#include "fusedcnn/core/threading.hpp"
#include "fusedcnn/nn/detail.hpp"

namespace fusedcnn {

template <class T>
  requires Scalar<T>
class ReLU {
 public:
  ReLU() = default;

  Tensor<T> forward(const Tensor<T>& x) {
    Tensor<T> y;
    forward(x, y);
    return y;
  }

  // Writes max(x, 0) into y and keeps a one-byte-per-element mask for backward.
  void forward(const Tensor<T>& x, Tensor<T>& y) {
    detail::check_nonempty("ReLU", "input", x);
    const std::size_t n = x.size();
    const detail::SerialScope serial(detail::serial_elements(n));
    mask_.resize(n);
    shape_ = x.shape();
    has_cache_ = true;
    detail::ensure_shape(y, x.shape());  // a no-op when y is x: the update is elementwise
    const T* in = x.data();
    T* out = y.data();
    unsigned char* mask = mask_.data();
    detail::parallel_for((n + block - 1) / block, [&](std::size_t b) {
      const std::size_t e = std::min(n, (b + 1) * block);
      for (std::size_t i = b * block; i < e; ++i) {
        const T v = in[i];
        mask[i] = v > T{0};
        out[i] = std::max(v, T{0});  // (v < 0) ? 0 : v keeps NaN
      }
    });
  }

  Tensor<T> backward(const Tensor<T>& dy) {
    Tensor<T> dx;
    backward(dy, dx);
    return dx;
  }

  void backward(const Tensor<T>& dy, Tensor<T>& dx) {
    if (!has_cache_) detail::throw_no_forward("ReLU");
    detail::check_dy("ReLU", dy, shape_);
    detail::ensure_shape(dx, shape_);
    const std::size_t n = dy.size();
    const detail::SerialScope serial(detail::serial_elements(n));
    const T* g = dy.data();
    T* out = dx.data();
    const unsigned char* mask = mask_.data();
    detail::parallel_for((n + block - 1) / block, [&](std::size_t b) {
      const std::size_t e = std::min(n, (b + 1) * block);
      for (std::size_t i = b * block; i < e; ++i) out[i] = mask[i] ? g[i] : T{0};
    });
  }

  void zero_grad() noexcept {}
  // Bytes kept from forward for backward (the one-byte mask).
  std::size_t saved_bytes() const noexcept { return mask_.size(); }
  void train(bool on = true) noexcept { training_ = on; }
  void eval() noexcept { training_ = false; }
  bool training() const noexcept { return training_; }

 private:
  static constexpr std::size_t block = 1 << 14;
  bool training_ = true;
  bool has_cache_ = false;
  Shape<4> shape_{};
  std::vector<unsigned char> mask_;
};

}  // namespace fusedcnn
