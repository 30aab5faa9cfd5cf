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
        const T v = bias ? src[j * t.cs] + bias[t.k0 + j] : src[j * t.cs];
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

  void operator()(const TileInfo<T>& t) const noexcept {
    const std::size_t K = ldz;
    double* smean = slots + t.chunk * 2 * K + t.k0;
    double* sm2 = smean + K;
    const double na = static_cast<double>(t.p0 - t.chunk_p0), nb = static_cast<double>(t.m);
    const double nt = na + nb;
    for (std::size_t j = 0; j < t.n; ++j) {
      const T b = bias ? bias[t.k0 + j] : T{0};
      T mean, m2, sd;
      T* dst = z + t.p0 * K + t.k0 + j;
      if (t.ld == 1) {  // channel-major tile: the loads are contiguous and vectorise
        channel_moments<1>(t.data + j * t.cs, 1, t.m, b, dst, K, mean, m2, sd);
      } else {
        channel_moments<0>(t.data + j * t.cs, t.ld, t.m, b, dst, K, mean, m2, sd);
      }
      const double tm2 = static_cast<double>(m2) - static_cast<double>(sd) * static_cast<double>(sd) / nb;
      const double delta = static_cast<double>(mean) - smean[j];
      smean[j] += delta * (nb / nt);
      sm2[j] += std::max(tm2, 0.0) + delta * delta * (na * nb / nt);
    }
  }

 private:
  // Stores v_i = src[i*ld] + b to dst[i*ldd] and returns their mean, sum of squared
  // deviations and sum of deviations; eight interleaved partial sums keep the adds
  // independent (a single running sum would serialise on the add latency).
  // LD, when nonzero, is ld known at compile time.
  template <std::size_t LD>
  static void channel_moments(const T* src, std::size_t ld_, std::size_t m, T b, T* dst,
                              std::size_t ldd, T& mean, T& m2, T& sd) noexcept {
    const std::size_t ld = LD ? LD : ld_;
    constexpr std::size_t U = 8;
    T s[U] = {};
    std::size_t i = 0;
    for (; i + U <= m; i += U)
      for (std::size_t u = 0; u < U; ++u) {
        const T v = src[(i + u) * ld] + b;
        dst[(i + u) * ldd] = v;
        s[u] += v;
      }
    for (; i < m; ++i) {
      const T v = src[i * ld] + b;
      dst[i * ldd] = v;
      s[0] += v;
    }
    T sum = T{0};
    for (std::size_t u = 0; u < U; ++u) sum += s[u];
    mean = sum / static_cast<T>(m);
    T q[U] = {}, e[U] = {};
    for (i = 0; i + U <= m; i += U)
      for (std::size_t u = 0; u < U; ++u) {
        const T d = (src[(i + u) * ld] + b) - mean;
        q[u] += d * d;
        e[u] += d;
      }
    for (; i < m; ++i) {
      const T d = (src[i * ld] + b) - mean;
      q[0] += d * d;
      e[0] += d;
    }
    m2 = sd = T{0};
    for (std::size_t u = 0; u < U; ++u) m2 += q[u], sd += e[u];
  }
};

}  // namespace fusedcnn::kernels
