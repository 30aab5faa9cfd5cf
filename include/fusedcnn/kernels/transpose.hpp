// Block transposes for the packing routines: the data gradient's weight panels read HWIO rows
// across and write them down panel columns, a strided scalar store per value otherwise.
#pragma once

#include <cstddef>
#include <type_traits>

#include "fusedcnn/kernels/config.hpp"

#if FUSEDCNN_ISA_AVX512
#include <immintrin.h>
#endif

namespace fusedcnn::kernels {

#if FUSEDCNN_ISA_AVX512
// dst[j * ldd + i] = src[i * lds + j] for a 16 x 16 float block, in registers: four rounds of
// shuffles, each pairing rows that lie twice as far apart as the round before. The masked
// forms with every lane set take their pass-through from an argument: the plain forms start
// from GCC 12's self-initialised "undefined" vector, which -Wuninitialized reports in every
// caller (GCC bug 105593).
inline void transpose_16x16(const float* src, std::size_t lds, float* dst,
                            std::size_t ldd) noexcept {
  constexpr __mmask16 all = 0xFFFF;
  __m512 r[16], t[16];
  for (std::size_t i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (std::size_t i = 0; i < 16; i += 2) {  // 2 x 2 blocks of single values
    t[i] = _mm512_mask_unpacklo_ps(r[i], all, r[i], r[i + 1]);
    t[i + 1] = _mm512_mask_unpackhi_ps(r[i], all, r[i], r[i + 1]);
  }
  for (std::size_t i = 0; i < 16; i += 4) {  // 2 x 2 blocks of pairs
    r[i] = _mm512_mask_shuffle_ps(t[i], all, t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_mask_shuffle_ps(t[i], all, t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_mask_shuffle_ps(t[i + 1], all, t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_mask_shuffle_ps(t[i + 1], all, t[i + 1], t[i + 3], 0xEE);
  }
  for (std::size_t i = 0; i < 16; i += 8) {  // 2 x 2 blocks of 128-bit lanes
    for (std::size_t j = 0; j < 4; ++j) {
      t[i + j] = _mm512_mask_shuffle_f32x4(r[i + j], all, r[i + j], r[i + j + 4], 0x88);
      t[i + j + 4] = _mm512_mask_shuffle_f32x4(r[i + j], all, r[i + j], r[i + j + 4], 0xDD);
    }
  }
  for (std::size_t j = 0; j < 8; ++j) {  // 2 x 2 blocks of 256-bit halves
    r[j] = _mm512_mask_shuffle_f32x4(t[j], all, t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_mask_shuffle_f32x4(t[j], all, t[j], t[j + 8], 0xDD);
  }
  for (std::size_t j = 0; j < 16; ++j) _mm512_storeu_ps(dst + j * ldd, r[j]);
}
#endif

// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols, one value at a time.
template <class T>
inline void transpose_scalar(const T* src, std::size_t lds, std::size_t rows, std::size_t cols,
                             T* dst, std::size_t ldd) noexcept {
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols (the blocks must not overlap):
// whole 16 x 16 float blocks in registers where the ISA has them, the ragged rest by value.
template <class T>
inline void transpose(const T* src, std::size_t lds, std::size_t rows, std::size_t cols, T* dst,
                      std::size_t ldd) noexcept {
  std::size_t r16 = 0, c16 = 0;  // rows and columns done in whole blocks
#if FUSEDCNN_ISA_AVX512
  if constexpr (std::is_same_v<T, float>) {
    r16 = rows / 16 * 16, c16 = cols / 16 * 16;
    for (std::size_t i = 0; i < r16; i += 16)
      for (std::size_t j = 0; j < c16; j += 16)
        transpose_16x16(src + i * lds + j, lds, dst + j * ldd + i, ldd);
  }
#endif
  transpose_scalar(src + c16, lds, r16, cols - c16, dst + c16 * ldd, ldd);  // right of blocks
  transpose_scalar(src + r16 * lds, lds, rows - r16, cols, dst + r16, ldd);  // below them
}

}  // namespace fusedcnn::kernels
