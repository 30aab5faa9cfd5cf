// Epilogues of the igemm kernel: what happens to a finished output tile while it is still
// hot. Each is a small struct called with the kernels::TileInfo of the tile.
#pragma once

#include <algorithm>
#include <cstddef>

#include "fusedcnn/kernels/tile.hpp"

namespace fusedcnn::kernels {

// y = tile + bias[k] (bias optional), then max(., 0) when Relu: plain conv, and the folded
// inference ConvBN whose BN scale lives in the packed weights and whose shift is the bias.
template <class T, bool Relu>
struct BiasActEpilogue {
  T* y;
  std::size_t ldy;
  const T* bias;  // may be null

  void operator()(const TileInfo<T>& t) const noexcept {
    for (std::size_t i = 0; i < t.m; ++i) {
      T* dst = y + (t.p0 + i) * ldy + t.k0;
      const T* src = t.data + i * t.ld;
      for (std::size_t j = 0; j < t.n; ++j) {
        const T v = bias ? src[j] + bias[t.k0 + j] : src[j];
        dst[j] = Relu ? std::max(v, T{0}) : v;
      }
    }
  }
};

// z = tile + bias[k] is stored, and the tile's per-channel moments are merged into its
// chunk's slot: slots[chunk] holds mean[K] then M2[K] (double). Within the tile the mean is
// taken in T and M2 gets the rounding correction sum(d)^2/m; the merge is Chan's. Chunks are
// the driver's fixed tile ranges, so the merged statistics do not depend on the thread count.
template <class T>
struct BiasStatsEpilogue {
  T* z;
  std::size_t ldz;  // = K, the channel count
  const T* bias;    // may be null
  double* slots;    // [chunks][2][K]

  // Columns per call are at most this many (the widest register tile).
  static constexpr std::size_t max_n = 64;

  void operator()(const TileInfo<T>& t) const noexcept {
    const std::size_t m = t.m, n = t.n, p0 = t.p0, k0 = t.k0;
    T sum[max_n] = {}, m2[max_n] = {}, sd[max_n] = {}, mean[max_n];
    for (std::size_t i = 0; i < m; ++i) {
      T* dst = z + (p0 + i) * ldz + k0;
      const T* src = t.data + i * t.ld;
      for (std::size_t j = 0; j < n; ++j) {
        const T v = bias ? src[j] + bias[k0 + j] : src[j];
        dst[j] = v;
        sum[j] += v;
      }
    }
    const T inv = T{1} / static_cast<T>(m);
    for (std::size_t j = 0; j < n; ++j) mean[j] = sum[j] * inv;
    for (std::size_t i = 0; i < m; ++i) {
      const T* row = z + (p0 + i) * ldz + k0;
      for (std::size_t j = 0; j < n; ++j) {
        const T d = row[j] - mean[j];
        m2[j] += d * d;
        sd[j] += d;
      }
    }
    const std::size_t K = ldz;
    double* smean = slots + t.chunk * 2 * K + k0;
    double* sm2 = smean + K;
    const double na = static_cast<double>(p0 - t.chunk_p0), nb = static_cast<double>(m);
    const double nt = na + nb;
    for (std::size_t j = 0; j < n; ++j) {
      const double tm2 = static_cast<double>(m2[j]) -
                         static_cast<double>(sd[j]) * static_cast<double>(sd[j]) / nb;
      const double delta = static_cast<double>(mean[j]) - smean[j];
      smean[j] += delta * (nb / nt);
      sm2[j] += std::max(tm2, 0.0) + delta * delta * (na * nb / nt);
    }
  }
};

}  // namespace fusedcnn::kernels
