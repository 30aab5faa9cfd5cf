// Portable strip micro-kernel: R consecutive output pixels of one row by one vector of output
// channels, for convolutions of unit horizontal stride and dilation with few output channels.
//
// Contract (shared by every ISA family):
//   out[r * L + k] = sum over a < kh, c < C, b < KW of xrows[a][(r + b) * C + c] * w[((a * KW + b) * C + c) * L + k]
//   for r < R, k < L (L = the family's vector lanes).
//   - xrows[a]: the zero-padded input row of kernel row a from the strip's first input column,
//     R + KW - 1 pixels of C channels readable.
//   - w: [kh][KW][C][L], zero past the layer's output channels. out: R * L values.
//   Never allocates, throws, or touches globals.
#pragma once

#include <cstddef>

namespace fusedcnn::kernels::generic {

template <class T, std::size_t L, std::size_t R, std::size_t KW>
inline void strip_rxkw(std::size_t kh, std::size_t C, const T* const* xrows, const T* w,
                       T* out) noexcept {
  T acc[R][L] = {};
  for (std::size_t a = 0; a < kh; ++a)
    for (std::size_t b = 0; b < KW; ++b)
      for (std::size_t c = 0; c < C; ++c) {
        const T* wv = w + ((a * KW + b) * C + c) * L;
        for (std::size_t r = 0; r < R; ++r) {
          const T v = xrows[a][(r + b) * C + c];
          for (std::size_t k = 0; k < L; ++k) acc[r][k] += v * wv[k];
        }
      }
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t k = 0; k < L; ++k) out[r * L + k] = acc[r][k];
}

}  // namespace fusedcnn::kernels::generic
