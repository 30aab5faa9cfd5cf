// Compile-time ISA selection: the name of the kernel family this build uses.
#pragma once

#include <cstddef>

namespace fusedcnn::kernels {

#if defined(FUSEDCNN_FORCE_GENERIC)
inline constexpr const char* isa_name = "generic";
inline constexpr std::size_t vector_bytes = 16;
#elif defined(__AVX512F__)
inline constexpr const char* isa_name = "avx512";
inline constexpr std::size_t vector_bytes = 64;
#elif defined(__AVX2__) && defined(__FMA__)
inline constexpr const char* isa_name = "avx2";
inline constexpr std::size_t vector_bytes = 32;
#elif defined(__ARM_NEON)
inline constexpr const char* isa_name = "neon";
inline constexpr std::size_t vector_bytes = 16;
#else
inline constexpr const char* isa_name = "generic";
inline constexpr std::size_t vector_bytes = 16;
#endif

// Lanes of T in one vector register.
template <class T>
inline constexpr std::size_t vector_lanes = vector_bytes / sizeof(T);

}  // namespace fusedcnn::kernels
