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

namespace detail {
// Lane indices for permutex2var over (a, b): the even or odd values of the 32 in a then b,
// and the low or high halves of a and b zipped.
inline __m512i split_index(bool odd) noexcept {
  return _mm512_add_epi32(
      _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0),
      _mm512_set1_epi32(odd ? 1 : 0));
}
inline __m512i zip_index(bool high) noexcept {
  return _mm512_add_epi32(
      _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0),
      _mm512_set1_epi32(high ? 8 : 0));
}

// v[0..P) holds a stream whose value i is channel i % P; afterwards v[j] holds the 16 values
// of channel bit_reverse(j): each round splits a stream into its even and odd values, which
// are streams of half the period (the even and the odd channels).
template <std::size_t P>
inline void split_stream(__m512* v) noexcept {
  if constexpr (P > 1) {
    const __m512i even = split_index(false), odd = split_index(true);
    __m512 e[P / 2], o[P / 2];
    for (std::size_t q = 0; q < P / 2; ++q) {
      e[q] = _mm512_permutex2var_ps(v[2 * q], even, v[2 * q + 1]);
      o[q] = _mm512_permutex2var_ps(v[2 * q], odd, v[2 * q + 1]);
    }
    for (std::size_t q = 0; q < P / 2; ++q) v[q] = e[q], v[P / 2 + q] = o[q];
    split_stream<P / 2>(v);
    split_stream<P / 2>(v + P / 2);
  }
}

// The inverse of split_stream: v[j] holds channel bit_reverse(j) before, the stream after.
template <std::size_t P>
inline void merge_stream(__m512* v) noexcept {
  if constexpr (P > 1) {
    merge_stream<P / 2>(v);
    merge_stream<P / 2>(v + P / 2);
    const __m512i low = zip_index(false), high = zip_index(true);
    __m512 s[P];
    for (std::size_t q = 0; q < P / 2; ++q) {
      s[2 * q] = _mm512_permutex2var_ps(v[q], low, v[P / 2 + q]);
      s[2 * q + 1] = _mm512_permutex2var_ps(v[q], high, v[P / 2 + q]);
    }
    for (std::size_t j = 0; j < P; ++j) v[j] = s[j];
  }
}

constexpr std::size_t bit_reverse(std::size_t j, std::size_t n) noexcept {
  std::size_t r = 0;
  for (std::size_t m = 1; m < n; m <<= 1, j >>= 1) r = r << 1 | (j & 1);
  return r;
}
}  // namespace detail

// 16 pixels of C interleaved channels (C a power of two up to 16), in memory order in
// v[0..C), become one vector per channel: v[c] = channel c of the 16 pixels. C log2(C)
// two-source permutes, the same count as a 16 x 16 transpose's shuffles when C = 16.
template <std::size_t C>
inline void split_channels(__m512* v) noexcept {
  static_assert(C >= 1 && C <= 16 && (C & (C - 1)) == 0);
  detail::split_stream<C>(v);
  __m512 t[C];
  for (std::size_t c = 0; c < C; ++c) t[c] = v[detail::bit_reverse(c, C)];
  for (std::size_t c = 0; c < C; ++c) v[c] = t[c];
}

// The inverse of split_channels: one vector per channel in, 16 interleaved pixels out.
template <std::size_t C>
inline void merge_channels(__m512* v) noexcept {
  static_assert(C >= 1 && C <= 16 && (C & (C - 1)) == 0);
  __m512 t[C];
  for (std::size_t c = 0; c < C; ++c) t[detail::bit_reverse(c, C)] = v[c];
  detail::merge_stream<C>(t);
  for (std::size_t c = 0; c < C; ++c) v[c] = t[c];
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

// dst[c * ldd + i] = src[i * C + c] for i < w, c < C: a row of pixels with C interleaved
// channels split into one run per channel; 16 float pixels at a time in registers where the
// ISA has them and C is a power of two (the compiler leaves the plain loop scalar).
template <class T, std::size_t C>
inline void deinterleave(const T* __restrict src, std::size_t w, T* __restrict dst,
                         std::size_t ldd) noexcept {
  std::size_t i = 0;
#if FUSEDCNN_ISA_AVX512
  if constexpr (std::is_same_v<T, float> && C >= 2 && C <= 16 && (C & (C - 1)) == 0) {
    for (; i + 16 <= w; i += 16) {
      __m512 v[C];
      for (std::size_t q = 0; q < C; ++q) v[q] = _mm512_loadu_ps(src + i * C + 16 * q);
      split_channels<C>(v);
      for (std::size_t c = 0; c < C; ++c) _mm512_storeu_ps(dst + c * ldd + i, v[c]);
    }
  }
#endif
  for (; i < w; ++i)
    for (std::size_t c = 0; c < C; ++c) dst[c * ldd + i] = src[i * C + c];
}

// dst[i * C + c] = src[c * lds + i] for i < w, c < C: one run per channel back into a row of
// interleaved pixels, in registers like deinterleave.
template <class T, std::size_t C>
inline void interleave(const T* __restrict src, std::size_t lds, std::size_t w,
                       T* __restrict dst) noexcept {
  std::size_t i = 0;
#if FUSEDCNN_ISA_AVX512
  if constexpr (std::is_same_v<T, float> && C >= 2 && C <= 16 && (C & (C - 1)) == 0) {
    for (; i + 16 <= w; i += 16) {
      __m512 v[C];
      for (std::size_t c = 0; c < C; ++c) v[c] = _mm512_loadu_ps(src + c * lds + i);
      merge_channels<C>(v);
      for (std::size_t q = 0; q < C; ++q) _mm512_storeu_ps(dst + i * C + 16 * q, v[q]);
    }
  }
#endif
  for (; i < w; ++i)
    for (std::size_t c = 0; c < C; ++c) dst[i * C + c] = src[c * lds + i];
}

// out[j] = vs[j*L] + vs[j*L + 1] + ... + vs[j*L + L-1], in that order, for j < n: blocks of
// 64 sums are transposed so that each lane's values lie in a row and the adds run across
// sums, in vectors, instead of down one sum's dependent chain.
template <class T, std::size_t L>
void sum_lanes(const T* vs, std::size_t n, T* out) noexcept {
  constexpr std::size_t B = 64;
  T t[L * B];
  for (std::size_t j0 = 0; j0 < n; j0 += B) {
    const std::size_t nb = n - j0 < B ? n - j0 : B;
    transpose(vs + j0 * L, L, nb, L, t, B);
    for (std::size_t j = 0; j < nb; ++j) out[j0 + j] = t[j];
    for (std::size_t q = 1; q < L; ++q)
      for (std::size_t j = 0; j < nb; ++j) out[j0 + j] += t[q * B + j];
  }
}

}  // namespace fusedcnn::kernels
