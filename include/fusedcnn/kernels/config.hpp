// Compile-time ISA selection from the compiler's macros; FUSEDCNN_FORCE_GENERIC picks the
// portable kernels whatever the target supports (so they are tested on every machine).
#pragma once

#if defined(FUSEDCNN_FORCE_GENERIC)
#define FUSEDCNN_ISA_GENERIC 1
#elif defined(__AVX512F__)
#define FUSEDCNN_ISA_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#define FUSEDCNN_ISA_AVX2 1
#elif defined(__ARM_NEON) && defined(__aarch64__)
#define FUSEDCNN_ISA_NEON 1
#else
#define FUSEDCNN_ISA_GENERIC 1
#endif

// Marks a loop whose iterations are independent (an output may alias an input only at the
// same index), so the compiler vectorises it without runtime alias checks.
#if defined(__clang__)
#define FUSEDCNN_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define FUSEDCNN_IVDEP _Pragma("GCC ivdep")
#else
#define FUSEDCNN_IVDEP
#endif

namespace fusedcnn::kernels {

// The kernel family this translation unit uses, for reports.
inline constexpr const char* isa_name =
#if FUSEDCNN_ISA_AVX512
    "avx512";
#elif FUSEDCNN_ISA_AVX2
    "avx2";
#elif FUSEDCNN_ISA_NEON
    "neon";
#else
    "generic";
#endif

// Asks for the cache line holding p (a hint: never faults, whatever p).
inline void prefetch(const void* p) noexcept {
#if defined(__GNUC__)
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}

// Asks for the cache line holding p to be loaded into the L2, not the L1: data wanted a while
// later, that would evict what the L1 holds now.
inline void prefetch_l2(const void* p) noexcept {
#if defined(__GNUC__)
  __builtin_prefetch(p, 0, 2);
#else
  (void)p;
#endif
}

// Fetches the cache line at p ahead, to be written.
inline void prefetch_write(const void* p) noexcept {
#if defined(__GNUC__)
  __builtin_prefetch(p, 1);
#else
  (void)p;
#endif
}

}  // namespace fusedcnn::kernels
