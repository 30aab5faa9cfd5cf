// What an igemm micro-kernel hands its epilogue: one finished output tile and where it goes.
#pragma once

#include <cstddef>

namespace fusedcnn::kernels {

// Rows p0..p0+m-1 and channels k0..k0+n-1 of the output, row-major with stride ld; the tile
// belongs to reduction chunk `chunk`, whose first row is chunk_p0 (for per-chunk statistics).
template <class T>
struct TileInfo {
  const T* data;
  std::size_t ld, m, n, p0, k0, chunk, chunk_p0;
};

}  // namespace fusedcnn::kernels
