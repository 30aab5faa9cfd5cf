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

// Where an igemm kernel's tile goes: epi(TileInfo) from the tile stored row-major (ld = NR),
// or, when the epilogue can take the accumulators themselves (Epi::registers), straight from
// the registers, without the trip through a stack tile (a tenth of a 1x1 layer's time with
// 64 input channels).
template <class T, std::size_t NR, class Epi>
struct TileSink {
  Epi& epi;
  std::size_t p0, k0, chunk, chunk_p0;

  void operator()(const T* tile, std::size_t m, std::size_t n) const {
    epi(TileInfo<T>{tile, NR, m, n, p0, k0, chunk, chunk_p0});
  }
  template <class V, std::size_t MR, std::size_t NV>
    requires requires(const Epi& e, const typename V::R (&a)[MR][NV], const TileInfo<T>& t) {
      e.template registers<V, MR, NV>(a, t);
    }
  void registers(const typename V::R (&acc)[MR][NV], std::size_t m, std::size_t n) const {
    epi.template registers<V, MR, NV>(acc, TileInfo<T>{nullptr, 0, m, n, p0, k0, chunk, chunk_p0});
  }
};

// A kernel's sink (a TileSink, the Winograd point GEMMs' sink) that also has the kernel fetch
// the lines from `ahead` on into the L2, one a c step, while it runs: the next tile's rows of
// a 1x1 layer, the next panel of streamed Winograd weights.
template <class Sink, class T>
struct FetchAhead : Sink {
  const T* ahead;
};

}  // namespace fusedcnn::kernels
