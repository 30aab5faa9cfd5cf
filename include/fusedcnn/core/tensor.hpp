// Tensor (owning, 64-byte aligned, row-major) and TensorView (non-owning, contiguous).
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>

#include "fusedcnn/core/allocator.hpp"
#include "fusedcnn/core/shape.hpp"

namespace fusedcnn {

namespace detail {
// Tag for the internal constructor that leaves storage uninitialised (it is about to be
// overwritten whole, so a zero-fill would be a wasted pass over memory).
struct uninitialized_t {
  explicit uninitialized_t() = default;
};
inline constexpr uninitialized_t uninitialized{};

// Row-major strides of a shape, in elements.
template <std::size_t Rank>
constexpr Shape<Rank> row_major_strides(const Shape<Rank>& s) noexcept {
  Shape<Rank> st{};
  std::size_t acc = 1;
  for (std::size_t i = Rank; i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}
}  // namespace detail

// A non-owning view of contiguous row-major data; T may be const-qualified.
template <class T, std::size_t Rank = 4>
  requires Scalar<std::remove_const_t<T>>
class TensorView {
 public:
  using value_type = std::remove_const_t<T>;
  static constexpr std::size_t rank = Rank;

  TensorView() = default;
  TensorView(T* data, const Shape<Rank>& shape) noexcept
      : data_(data), shape_(shape), size_(count(shape)) {}
  // A view of mutable data converts to a view of const data.
  template <class U>
    requires(std::is_const_v<T> && std::is_same_v<U, value_type>)
  TensorView(const TensorView<U, Rank>& other) noexcept  // NOLINT(google-explicit-constructor)
      : data_(other.data()), shape_(other.shape()), size_(other.size()) {}

  T* data() const noexcept { return data_; }
  const Shape<Rank>& shape() const noexcept { return shape_; }
  std::size_t dim(std::size_t i) const noexcept { return shape_[i]; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  template <class... Idx>
    requires(sizeof...(Idx) == Rank && (std::is_convertible_v<Idx, std::size_t> && ...))
  T& operator()(Idx... idx) const noexcept {
    return data_[offset({static_cast<std::size_t>(idx)...})];
  }
  T& operator[](std::size_t i) const noexcept {
    assert(i < size_);
    return data_[i];
  }
  T* begin() const noexcept { return data_; }
  T* end() const noexcept { return data_ + size_; }

 private:
  static std::size_t count(const Shape<Rank>& s) noexcept {
    std::size_t n = 1;
    for (std::size_t d : s) n *= d;
    return n;
  }
  std::size_t offset(const Shape<Rank>& idx) const noexcept {
    std::size_t off = 0;
    for (std::size_t i = 0; i < Rank; ++i) {
      assert(idx[i] < shape_[i]);
      off = off * shape_[i] + idx[i];
    }
    return off;
  }

  T* data_ = nullptr;
  Shape<Rank> shape_{};
  std::size_t size_ = 0;
};

// An owning tensor: row-major, contiguous, storage from the caching allocator. Copies are deep.
template <class T, std::size_t Rank = 4>
  requires Scalar<T>
class Tensor {
 public:
  using value_type = T;
  static constexpr std::size_t rank = Rank;

  Tensor() = default;
  // Zero-filled. Throws shape_error when the element count overflows.
  explicit Tensor(const Shape<Rank>& shape) : Tensor(shape, T{0}) {}
  Tensor(const Shape<Rank>& shape, T value) : Tensor(shape, detail::uninitialized) {
    std::fill_n(data_, size_, value);
  }
  // Storage left uninitialised: for outputs that are written whole before being read.
  Tensor(const Shape<Rank>& shape, detail::uninitialized_t)
      : shape_(shape), size_(detail::checked_count<T>(shape)) {
    if (size_) data_ = static_cast<T*>(detail::tensor_allocator().allocate(size_ * sizeof(T)));
  }

  Tensor(const Tensor& other) : Tensor(other.shape_, detail::uninitialized) {
    if (size_) std::memcpy(data_, other.data_, size_ * sizeof(T));
  }
  Tensor(Tensor&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        shape_(std::exchange(other.shape_, Shape<Rank>{})),
        size_(std::exchange(other.size_, 0)) {}
  Tensor& operator=(const Tensor& other) {
    if (this == &other) return *this;
    if (size_ != other.size_) {
      Tensor tmp(other);
      swap(tmp);
    } else {
      shape_ = other.shape_;
      if (size_) std::memcpy(data_, other.data_, size_ * sizeof(T));
    }
    return *this;
  }
  Tensor& operator=(Tensor&& other) noexcept {
    Tensor tmp(std::move(other));
    swap(tmp);
    return *this;
  }
  ~Tensor() { detail::tensor_allocator().deallocate(data_, size_ * sizeof(T)); }

  void swap(Tensor& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(shape_, other.shape_);
    std::swap(size_, other.size_);
  }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  const Shape<Rank>& shape() const noexcept { return shape_; }
  std::size_t dim(std::size_t i) const noexcept { return shape_[i]; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  template <class... Idx>
    requires(sizeof...(Idx) == Rank && (std::is_convertible_v<Idx, std::size_t> && ...))
  T& operator()(Idx... idx) noexcept {
    return view()(idx...);
  }
  template <class... Idx>
    requires(sizeof...(Idx) == Rank && (std::is_convertible_v<Idx, std::size_t> && ...))
  const T& operator()(Idx... idx) const noexcept {
    return view()(idx...);
  }
  T& operator[](std::size_t i) noexcept {
    assert(i < size_);
    return data_[i];
  }
  const T& operator[](std::size_t i) const noexcept {
    assert(i < size_);
    return data_[i];
  }
  T* begin() noexcept { return data_; }
  T* end() noexcept { return data_ + size_; }
  const T* begin() const noexcept { return data_; }
  const T* end() const noexcept { return data_ + size_; }

  TensorView<T, Rank> view() noexcept { return {data_, shape_}; }
  TensorView<const T, Rank> view() const noexcept { return {data_, shape_}; }
  TensorView<const T, Rank> cview() const noexcept { return {data_, shape_}; }

  void fill(T value) noexcept { std::fill_n(data_, size_, value); }

  // Gives the tensor this shape: nothing happens when it already has it, the data is kept
  // when only the extents change (same element count), otherwise new zero-filled storage.
  void resize(const Shape<Rank>& shape) {
    if (shape == shape_) return;
    const std::size_t n = detail::checked_count<T>(shape);
    if (n == size_) {
      shape_ = shape;
      return;
    }
    Tensor tmp(shape);
    swap(tmp);
  }

 private:
  T* data_ = nullptr;
  Shape<Rank> shape_{};
  std::size_t size_ = 0;
};

template <class T, std::size_t Rank>
void swap(Tensor<T, Rank>& a, Tensor<T, Rank>& b) noexcept {
  a.swap(b);
}

namespace detail {
// Gives an output tensor the shape an op is about to overwrite whole; no fill when it changes.
template <class T, std::size_t Rank>
void ensure_shape(Tensor<T, Rank>& t, const Shape<Rank>& shape) {
  if (t.shape() == shape) return;
  if (t.size() == checked_count<T>(shape)) {
    t.resize(shape);
    return;
  }
  Tensor<T, Rank> tmp(shape, uninitialized);
  t.swap(tmp);
}
}  // namespace detail

}  // namespace fusedcnn
