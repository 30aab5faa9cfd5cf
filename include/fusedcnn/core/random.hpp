// Seeded, platform-independent random fills (the same numbers on every compiler and library).
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>

#include "fusedcnn/core/tensor.hpp"

namespace fusedcnn {

// SplitMix64: small, fast, and fully specified, unlike std::*_distribution.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) noexcept : state_(seed) {}

  std::uint64_t next_u64() noexcept {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() noexcept { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) noexcept { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [lo, hi].
  std::size_t uniform_int(std::size_t lo, std::size_t hi) noexcept {
    return lo + static_cast<std::size_t>(next_u64() % (hi - lo + 1));
  }
  // Standard normal by Box-Muller (one value per call; the pair's twin is discarded).
  double normal() noexcept {
    const double u1 = 1.0 - uniform();  // (0, 1]: log stays finite
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  std::uint64_t state_;
};

// Fills a tensor or view with U(lo, hi) values from `seed`.
template <class Tn>
void fill_uniform(Tn& t, double lo, double hi, std::uint64_t seed) {
  Rng rng(seed);
  using T = std::remove_cvref_t<decltype(*t.data())>;
  for (auto& v : t) v = static_cast<T>(rng.uniform(lo, hi));
}

// Fills a tensor or view with N(mean, stddev^2) values from `seed`.
template <class Tn>
void fill_normal(Tn& t, double mean, double stddev, std::uint64_t seed) {
  Rng rng(seed);
  using T = std::remove_cvref_t<decltype(*t.data())>;
  for (auto& v : t) v = static_cast<T>(mean + stddev * rng.normal());
}

}  // namespace fusedcnn

namespace fusedcnn::detail {
// Seeds for default parameter initialisation: a process-wide sequence, so two layers of the
// same shape start with different weights, and a program's runs repeat exactly.
inline std::uint64_t next_init_seed() noexcept {
  static std::atomic<std::uint64_t> counter{0x5EEDull};
  return counter.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace fusedcnn::detail
