// Tensor (owning, 64-byte aligned, row-major) and TensorView (non-owning, contiguous).
#pragma once

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstddef>
#include <cstring>
#include <memory>
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

// A tensor's storage shared, as it is now, with readers that keep it (a layer's input, kept
// for its backward): they read data(), which is the tensor's own storage while the tensor is
// left as it is. Before the tensor is written through its interface or gives its storage
// up, the loan takes storage of its own (a copy, or the tensor's very storage when the
// tensor lets it go), so the readers never see a change and the tensor's data() keeps its
// address. Writes through a pointer taken from the tensor before the loan are not seen.
template <class T>
class Loan {
 public:
  Loan(const T* data, std::size_t size) noexcept : data_(data), size_(size) {}
  Loan(const Loan&) = delete;
  Loan& operator=(const Loan&) = delete;
  ~Loan() { tensor_allocator().deallocate(own_, size_ * sizeof(T)); }

  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

  // The tensor is about to change: the readers get a copy of what they read.
  void take_copy() {
    own_ = static_cast<T*>(tensor_allocator().allocate(size_ * sizeof(T)));
    if (size_) std::memcpy(own_, data_, size_ * sizeof(T));
    data_ = own_;
  }
  // The tensor lets its storage (the loaned values) go: the readers keep it.
  void take(T* storage) noexcept { data_ = own_ = storage; }

 private:
  const T* data_;
  std::size_t size_;
  T* own_ = nullptr;
};

// Holds a flag as a lock for the few instructions that hand out or settle a loan.
class LoanLock {
 public:
  explicit LoanLock(std::atomic<bool>& busy) noexcept : busy_(busy) {
    while (busy_.exchange(true, std::memory_order_acquire)) {
    }
  }
  LoanLock(const LoanLock&) = delete;
  LoanLock& operator=(const LoanLock&) = delete;
  ~LoanLock() { busy_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool>& busy_;
};
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
// lend() shares the storage with readers that keep it (detail::Loan): every accessor that can
// write (the non-const data(), element access, view, begin/end, fill, assignment) first gives
// those readers a copy of their own, so they see the values as they were when lent.
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
  // The storage moves with its loan, if any: the readers' values stay where they are.
  Tensor(Tensor&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        shape_(std::exchange(other.shape_, Shape<Rank>{})),
        size_(std::exchange(other.size_, 0)),
        loan_(std::move(other.loan_)),
        lent_(other.lent_.exchange(false, std::memory_order_relaxed)) {}
  Tensor& operator=(const Tensor& other) {
    if (this == &other) return *this;
    if (size_ != other.size_) {
      Tensor tmp(other);
      swap(tmp);
    } else {
      settle();
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
  // Storage still on loan goes to the readers instead of back to the allocator.
  ~Tensor() {
    if (lent_.load(std::memory_order_relaxed) && loan_.use_count() > 1) {
      loan_->take(data_);
      data_ = nullptr;
    }
    detail::tensor_allocator().deallocate(data_, size_ * sizeof(T));
  }

  void swap(Tensor& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(shape_, other.shape_);
    std::swap(size_, other.size_);
    std::swap(loan_, other.loan_);
    const bool mine = lent_.load(std::memory_order_relaxed);
    lent_.store(other.lent_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    other.lent_.store(mine, std::memory_order_relaxed);
  }

  // Shares the storage, as it is now, with a reader that keeps it (see detail::Loan). Safe
  // to call from several threads at once, like every other const member.
  std::shared_ptr<const detail::Loan<T>> lend() const {
    const detail::LoanLock lock(loan_busy_);
    if (!loan_) {
      loan_ = std::make_shared<detail::Loan<T>>(data_, size_);
      lent_.store(true, std::memory_order_relaxed);
    }
    return loan_;
  }

  T* data() {
    settle();
    return data_;
  }
  const T* data() const noexcept { return data_; }
  const Shape<Rank>& shape() const noexcept { return shape_; }
  std::size_t dim(std::size_t i) const noexcept { return shape_[i]; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  template <class... Idx>
    requires(sizeof...(Idx) == Rank && (std::is_convertible_v<Idx, std::size_t> && ...))
  T& operator()(Idx... idx) {
    return view()(idx...);
  }
  template <class... Idx>
    requires(sizeof...(Idx) == Rank && (std::is_convertible_v<Idx, std::size_t> && ...))
  const T& operator()(Idx... idx) const noexcept {
    return view()(idx...);
  }
  T& operator[](std::size_t i) {
    assert(i < size_);
    return data()[i];
  }
  const T& operator[](std::size_t i) const noexcept {
    assert(i < size_);
    return data_[i];
  }
  T* begin() { return data(); }
  T* end() { return data() + size_; }
  const T* begin() const noexcept { return data_; }
  const T* end() const noexcept { return data_ + size_; }

  TensorView<T, Rank> view() { return {data(), shape_}; }
  TensorView<const T, Rank> view() const noexcept { return {data_, shape_}; }
  TensorView<const T, Rank> cview() const noexcept { return {data_, shape_}; }

  void fill(T value) { std::fill_n(data(), size_, value); }

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
  // Before a write: readers still holding the storage's loan get a copy of their own.
  void settle() {
    if (lent_.load(std::memory_order_relaxed)) settle_loan();
  }
  void settle_loan() {
    const detail::LoanLock lock(loan_busy_);
    if (loan_ && loan_.use_count() > 1) loan_->take_copy();
    loan_.reset();
    lent_.store(false, std::memory_order_relaxed);
  }

  T* data_ = nullptr;
  Shape<Rank> shape_{};
  std::size_t size_ = 0;
  mutable std::shared_ptr<detail::Loan<T>> loan_;  // the storage's loan, while one is out
  mutable std::atomic<bool> lent_{false};          // loan_ is set: writes must settle it
  mutable std::atomic<bool> loan_busy_{false};     // held while loan_ is read or changed
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
