// Compile-time ISA selection and the register-tile sizes of the igemm micro-kernel.
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

// Register tile of the igemm kernel: MR output pixels x NR output channels. NR is two vectors
// wide and MR leaves room for the A broadcasts and B loads: 8x2 = 16 accumulators of the 32
// AVX-512 registers, 4x2 = 8 of the 16 AVX2/NEON ones.
template <class T>
struct IgemmTile {
  static constexpr std::size_t nr = 2 * vector_lanes<T>;
  static constexpr std::size_t mr = vector_bytes >= 64 ? 8 : 4;
};

}  // namespace fusedcnn::kernels
