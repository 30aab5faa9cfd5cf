// Thread-count control and the parallel loop every op uses (OpenMP when found, else serial).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>

#include "fusedcnn/core/error.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace fusedcnn {

// Sets the number of threads ops use from now on (OpenMP's; honours OMP_NUM_THREADS until set).
inline void set_num_threads(int n) {
  if (n < 1) throw value_error(detail::cat("set_num_threads: n must be >= 1, got ", n));
#if defined(_OPENMP)
  omp_set_num_threads(n);
#endif
}

// The number of threads ops use; always 1 in a build without OpenMP.
inline int num_threads() noexcept {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

namespace detail {

// Upper bound on the threads a parallel_for may use: sizes per-thread scratch.
inline std::size_t max_threads() noexcept {
#if defined(_OPENMP)
  return static_cast<std::size_t>(omp_get_max_threads());
#else
  return 1;
#endif
}

// Whether the calling thread runs items of a parallel_for's own parallel region.
inline bool& in_own_region() noexcept {
  thread_local bool on = false;
  return on;
}

// Index of the calling thread inside a parallel_for, in [0, max_threads()): 0 when it runs
// serially, also inside a caller's own parallel region, whose thread numbers are not ours.
inline std::size_t thread_index() noexcept {
#if defined(_OPENMP)
  return in_own_region() ? static_cast<std::size_t>(omp_get_thread_num()) : 0;
#else
  return 0;
#endif
}

// How many SerialScopes the calling thread is inside. Thread-local: a scope never affects
// another thread, and it only decides whether work is split, never what is computed.
inline int& serial_scopes() noexcept {
  thread_local int depth = 0;
  return depth;
}

// Layer calls below this much work (about one unit per FMA or per element moved) run their
// passes on the calling thread alone: a parallel region's fork and join, and the second
// core fetching what the first just wrote, cost more than the work (a 1-channel 3x3
// convolution of 100k pixels, ~2.4M units, runs 0.052 ms on one thread, 0.066 ms on two).
inline constexpr double serial_work_limit = 3e6;

// Whether passes over n elements (no other work) are small enough to run serially.
inline bool serial_elements(std::size_t n) noexcept {
  return 8.0 * static_cast<double>(n) < serial_work_limit;
}

// While alive and `on`, parallel_for on this thread runs serially.
class SerialScope {
 public:
  explicit SerialScope(bool on) noexcept : on_(on) {
    if (on_) ++serial_scopes();
  }
  ~SerialScope() {
    if (on_) --serial_scopes();
  }
  SerialScope(const SerialScope&) = delete;
  SerialScope& operator=(const SerialScope&) = delete;

 private:
  bool on_;
};

// Runs f(i) for i in [0, n), each thread over a contiguous share of the indices (the first
// n % threads shares one longer), in rising order or, when Descending, from the share's end
// down.
template <bool Descending, class F>
void parallel_shares(std::size_t n, F&& f) {
  auto run = [&](std::size_t begin, std::size_t end) {
    if constexpr (Descending) {
      for (std::size_t i = end; i > begin; --i) f(i - 1);
    } else {
      for (std::size_t i = begin; i < end; ++i) f(i);
    }
  };
#if defined(_OPENMP)
  if (n > 1 && serial_scopes() == 0 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
    {
      in_own_region() = true;
      const std::size_t threads = static_cast<std::size_t>(omp_get_num_threads());
      const std::size_t t = static_cast<std::size_t>(omp_get_thread_num());
      const std::size_t q = n / threads, r = n % threads;
      const std::size_t begin = t * q + std::min(t, r);
      run(begin, begin + q + (t < r ? 1 : 0));
      in_own_region() = false;
    }
    return;
  }
#endif
  run(0, n);
}

// Runs f(i) for i in [0, n). Each index is independent, so the split over threads never
// changes a result; reductions use fixed-size chunks instead (see ops/).
template <class F>
void parallel_for(std::size_t n, F&& f) {
  parallel_shares<false>(n, f);
}

// parallel_for with each thread's share run from its last index down: a pass over an output
// that a parallel_for just wrote in rising order then starts on what is still in the
// thread's own L2.
template <class F>
void parallel_for_descending(std::size_t n, F&& f) {
  parallel_shares<true>(n, f);
}

}  // namespace detail
}  // namespace fusedcnn
