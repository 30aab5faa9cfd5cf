// Thread-count control and the parallel loop every op uses (OpenMP when found, else serial).
#pragma once

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

// Index of the calling thread inside a parallel_for, in [0, max_threads()).
inline std::size_t thread_index() noexcept {
#if defined(_OPENMP)
  return static_cast<std::size_t>(omp_get_thread_num());
#else
  return 0;
#endif
}

// Runs f(i) for i in [0, n). Each index is independent, so the split over threads never
// changes a result; reductions use fixed-size chunks instead (see ops/).
template <class F>
void parallel_for(std::size_t n, F&& f) {
#if defined(_OPENMP)
  if (n > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
    const long long count = static_cast<long long>(n);
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < count; ++i) f(static_cast<std::size_t>(i));
    return;
  }
#endif
  for (std::size_t i = 0; i < n; ++i) f(i);
}

}  // namespace detail
}  // namespace fusedcnn
