// The portable vector layer: a short array the compiler may map to whatever registers the
// target has, with the same operations as the ISA layers, so the row kernels are written once.
#pragma once

#include <cstddef>

namespace fusedcnn::kernels::scalar {

template <class T>
struct Vec {
  static constexpr std::size_t lanes = 16 / sizeof(T);  // a 16-byte vector, like SSE/NEON
  static constexpr std::size_t registers = 16;
  struct R {
    T v[lanes];
  };
  using M = std::size_t;  // a mask is the count of leading lanes

  static R zero() noexcept { return R{}; }
  static R loadu(const T* p) noexcept {
    R r;
    for (std::size_t i = 0; i < lanes; ++i) r.v[i] = p[i];
    return r;
  }
  static R load(const T* p) noexcept { return loadu(p); }
  static R bcast(const T* p) noexcept {
    R r;
    for (std::size_t i = 0; i < lanes; ++i) r.v[i] = *p;
    return r;
  }
  static R fma(R a, R b, R c) noexcept {
    for (std::size_t i = 0; i < lanes; ++i) c.v[i] += a.v[i] * b.v[i];
    return c;
  }
  static R add(R a, R b) noexcept {
    for (std::size_t i = 0; i < lanes; ++i) a.v[i] += b.v[i];
    return a;
  }
  static R sub(R a, R b) noexcept {
    for (std::size_t i = 0; i < lanes; ++i) a.v[i] -= b.v[i];
    return a;
  }
  static R mul(R a, R b) noexcept {
    for (std::size_t i = 0; i < lanes; ++i) a.v[i] *= b.v[i];
    return a;
  }
  static R relu(R a) noexcept {
    for (std::size_t i = 0; i < lanes; ++i) a.v[i] = a.v[i] < T{0} ? T{0} : a.v[i];
    return a;
  }
  static void storeu(T* p, R r) noexcept {
    for (std::size_t i = 0; i < lanes; ++i) p[i] = r.v[i];
  }
  static void store(T* p, R r) noexcept { storeu(p, r); }
  static M first(std::size_t n) noexcept { return n < lanes ? n : lanes; }
  static R load(M m, const T* p) noexcept {
    R r{};
    for (std::size_t i = 0; i < m; ++i) r.v[i] = p[i];
    return r;
  }
  static void store(M m, T* p, R r) noexcept {
    for (std::size_t i = 0; i < m; ++i) p[i] = r.v[i];
  }
};

}  // namespace fusedcnn::kernels::scalar
