// The NEON vector layer for the simd/ micro-kernels (AArch64: 32 q registers). Masks are
// lane counts: partial vectors go through a small stack buffer.
#pragma once

#if defined(__ARM_NEON) && defined(__aarch64__)

#include <arm_neon.h>

#include <cstddef>

namespace fusedcnn::kernels::neon {

template <class T>
struct Vec;

template <>
struct Vec<float> {
  using R = float32x4_t;
  using M = std::size_t;
  static constexpr std::size_t lanes = 4;
  static constexpr std::size_t registers = 32;
  static R zero() noexcept { return vdupq_n_f32(0.0f); }
  static R load(const float* p) noexcept { return vld1q_f32(p); }
  static R loadu(const float* p) noexcept { return vld1q_f32(p); }  // unaligned
  static R bcast(const float* p) noexcept { return vld1q_dup_f32(p); }
  static R fma(R a, R b, R c) noexcept { return vfmaq_f32(c, a, b); }
  static R add(R a, R b) noexcept { return vaddq_f32(a, b); }
  static R sub(R a, R b) noexcept { return vsubq_f32(a, b); }
  static R mul(R a, R b) noexcept { return vmulq_f32(a, b); }
  static R relu(R v) noexcept { return vmaxq_f32(zero(), v); }  // NaN stays NaN
  static void store(float* p, R v) noexcept { vst1q_f32(p, v); }
  static void storeu(float* p, R v) noexcept { vst1q_f32(p, v); }  // unaligned
  static M first(std::size_t n) noexcept { return n > lanes ? lanes : n; }
  static R load(M m, const float* p) noexcept {
    if (m == lanes) return vld1q_f32(p);
    float buf[lanes] = {};
    for (std::size_t i = 0; i < m; ++i) buf[i] = p[i];
    return vld1q_f32(buf);
  }
  static void store(M m, float* p, R v) noexcept {
    if (m == lanes) return vst1q_f32(p, v);
    float buf[lanes];
    vst1q_f32(buf, v);
    for (std::size_t i = 0; i < m; ++i) p[i] = buf[i];
  }
};

template <>
struct Vec<double> {
  using R = float64x2_t;
  using M = std::size_t;
  static constexpr std::size_t lanes = 2;
  static constexpr std::size_t registers = 32;
  static R zero() noexcept { return vdupq_n_f64(0.0); }
  static R load(const double* p) noexcept { return vld1q_f64(p); }
  static R loadu(const double* p) noexcept { return vld1q_f64(p); }  // unaligned
  static R bcast(const double* p) noexcept { return vld1q_dup_f64(p); }
  static R fma(R a, R b, R c) noexcept { return vfmaq_f64(c, a, b); }
  static R add(R a, R b) noexcept { return vaddq_f64(a, b); }
  static R sub(R a, R b) noexcept { return vsubq_f64(a, b); }
  static R mul(R a, R b) noexcept { return vmulq_f64(a, b); }
  static R relu(R v) noexcept { return vmaxq_f64(zero(), v); }  // NaN stays NaN
  static void store(double* p, R v) noexcept { vst1q_f64(p, v); }
  static void storeu(double* p, R v) noexcept { vst1q_f64(p, v); }  // unaligned
  static M first(std::size_t n) noexcept { return n > lanes ? lanes : n; }
  static R load(M m, const double* p) noexcept {
    if (m == lanes) return vld1q_f64(p);
    double buf[lanes] = {};
    for (std::size_t i = 0; i < m; ++i) buf[i] = p[i];
    return vld1q_f64(buf);
  }
  static void store(M m, double* p, R v) noexcept {
    if (m == lanes) return vst1q_f64(p, v);
    double buf[lanes];
    vst1q_f64(buf, v);
    for (std::size_t i = 0; i < m; ++i) p[i] = buf[i];
  }
};

}  // namespace fusedcnn::kernels::neon

#endif  // __ARM_NEON && __aarch64__
