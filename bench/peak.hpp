// Measures the machine's fp32 FMA peak for this build's vector layer, in the same run as the
// kernels (the clock differs from one window to the next on these shared machines).
#pragma once

#include <chrono>
#include <cstddef>

#include <fusedcnn/fusedcnn.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace bench {

#if !FUSEDCNN_ISA_GENERIC
// `steps` steps of Chains FMA chains (acc[i] = acc[i] * b + c). Out of line, so the chains
// live in registers: inlined between the clock calls, which clobber every vector register,
// GCC 12 kept them in memory and measured a quarter of the peak.
template <class V, int Chains>
[[gnu::noinline]] void fma_chains(typename V::R* acc, typename V::R b, typename V::R c,
                                  int steps) {
  typename V::R a[Chains];
#pragma GCC unroll 16
  for (int i = 0; i < Chains; ++i) a[i] = acc[i];
  for (int r = 0; r < steps; ++r)
#pragma GCC unroll 16
    for (int i = 0; i < Chains; ++i) a[i] = V::fma(a[i], b, c);
#pragma GCC unroll 16
  for (int i = 0; i < Chains; ++i) acc[i] = a[i];
}

// One thread's fp32 GFLOP/s over ~`seconds`: 16 independent FMA chains hide the latency.
// Each chain starts from its own value: chains that start equal are one chain to an
// optimiser, which then runs one FMA per step at its latency and reports twice the peak.
inline double fma_peak_one_thread(double seconds) {
  using V = fusedcnn::kernels::Vec<float>;
  constexpr int chains = 16, steps = 100000;
  alignas(64) float init[V::lanes * (chains + 2)];
  for (std::size_t i = 0; i < V::lanes * (chains + 2); ++i)
    init[i] = 1.0f + 1e-7f * static_cast<float>(i);
  const typename V::R b = V::load(init), c = V::load(init + V::lanes);
  typename V::R acc[chains];
  for (int i = 0; i < chains; ++i) acc[i] = V::load(init + (2 + i) * V::lanes);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  long long iters = 0;
  double elapsed = 0;
  do {
    fma_chains<V, chains>(acc, b, c, steps);
    iters += steps;
    elapsed = std::chrono::duration<double>(clock::now() - t0).count();
  } while (elapsed < seconds);
  alignas(64) float sink[V::lanes];
  typename V::R s = acc[0];
  for (int i = 1; i < chains; ++i) s = V::add(s, acc[i]);
  V::store(sink, s);
  volatile float keep = sink[0];
  (void)keep;
  return 2.0 * chains * V::lanes * static_cast<double>(iters) / elapsed / 1e9;
}
#endif

// fp32 peak in GFLOP/s with `threads` threads (0 for the portable build: no vector layer).
inline double fma_peak(int threads, double seconds = 0.1) {
#if FUSEDCNN_ISA_GENERIC
  (void)threads;
  (void)seconds;
  return 0;
#else
  double total = 0;
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads) reduction(+ : total)
  total += fma_peak_one_thread(seconds);
#else
  (void)threads;
  total = fma_peak_one_thread(seconds);
#endif
  return total;
#endif
}

}  // namespace bench
