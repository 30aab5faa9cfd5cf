// What an igemm micro-kernel hands its epilogue: one finished output tile and where it goes.
#pragma once

#include <cstddef>

namespace fusedcnn::kernels {

// Rows p0..p0+m-1 and channels k0..k0+n-1 of the output; element (i, j) is data[i*ld + j*cs]
// (igemm tiles are row-major, cs = 1; row-family tiles are channel-major, ld = 1). The tile
// belongs to reduction chunk `chunk`, whose first row is chunk_p0 (for per-chunk statistics).
template <class T>
struct TileInfo {
  const T* data;
  std::size_t ld, m, n, p0, k0, chunk, chunk_p0;
  std::size_t cs = 1;
};

}  // namespace fusedcnn::kernels
