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
// taken in T, then mean and M2 get the rounding corrections sum(d)/m and sum(d)^2/m; the merge
// is Chan's. Chunks are
// the driver's fixed tile ranges, so the merged statistics do not depend on the thread count.
template <class T>
struct BiasStatsEpilogue {
  T* z;
  std::size_t ldz;  // = K, the channel count
  const T* bias;    // may be null
  double* slots;    // [chunks][2][K]

  void operator()(const TileInfo<T>& t) const noexcept {
    if (t.cs != 1) {  // channel-major (row family): each channel's pixels are contiguous
      for (std::size_t j = 0; j < t.n; ++j) {
        const T b = bias ? bias[t.k0 + j] : T{0};
        T mean, m2, sd;
        channel_moments(t.data + j * t.cs, t.m, b, z + t.p0 * ldz + t.k0 + j, ldz, mean, m2, sd);
        merge(t, j, mean, m2, sd);
      }
      return;
    }
    for (std::size_t j0 = 0; j0 < t.n; j0 += block) row_major(t, j0, std::min(block, t.n - j0));
  }

 private:
  static constexpr std::size_t block = 64;  // channels per pass over a row-major tile

  // Chan's merge of one channel's tile moments into its chunk slot.
  void merge(const TileInfo<T>& t, std::size_t j, T mean, T m2, T sd) const noexcept {
    const std::size_t K = ldz;
    double* smean = slots + t.chunk * 2 * K + t.k0 + j;
    double* sm2 = smean + K;
    const double na = static_cast<double>(t.p0 - t.chunk_p0), nb = static_cast<double>(t.m);
    const double nt = na + nb;
    // The tile mean in T is off by up to a few ulp of the data's magnitude; sd, the sum of the
    // deviations from it, corrects it (and M2) to first order. Merging the unrefined mean would
    // let that error into the between-tile term of every merge (mean 1e4: 1e-5 relative).
    const double tm2 =
        static_cast<double>(m2) - static_cast<double>(sd) * static_cast<double>(sd) / nb;
    const double tmean = static_cast<double>(mean) + static_cast<double>(sd) / nb;
    const double delta = tmean - *smean;
    *smean += delta * (nb / nt);
    *sm2 += std::max(tm2, 0.0) + delta * delta * (na * nb / nt);
  }

  // Channels [j0, j0 + n) of a row-major tile (igemm, depthwise): the channel loop is
  // innermost and contiguous, so it vectorises across channels.
  void row_major(const TileInfo<T>& t, std::size_t j0, std::size_t n) const noexcept {
    T sum[block] = {}, m2[block] = {}, sd[block] = {}, mean[block];
    const T* bj = bias ? bias + t.k0 + j0 : nullptr;
    for (std::size_t i = 0; i < t.m; ++i) {
      T* dst = z + (t.p0 + i) * ldz + t.k0 + j0;
      const T* src = t.data + i * t.ld + j0 * t.cs;
      for (std::size_t j = 0; j < n; ++j) {
        const T v = bj ? src[j] + bj[j] : src[j];
        dst[j] = v;
        sum[j] += v;
      }
    }
    const T inv = T{1} / static_cast<T>(t.m);
    for (std::size_t j = 0; j < n; ++j) mean[j] = sum[j] * inv;
    for (std::size_t i = 0; i < t.m; ++i) {
      const T* row = z + (t.p0 + i) * ldz + t.k0 + j0;
      for (std::size_t j = 0; j < n; ++j) {
        const T d = row[j] - mean[j];
        m2[j] += d * d;
        sd[j] += d;
      }
    }
    for (std::size_t j = 0; j < n; ++j) merge(t, j0 + j, mean[j], m2[j], sd[j]);
  }

  // Stores v_i = src[i] + b to dst[i*ldd] and returns their mean, sum of squared
  // deviations and sum of deviations; eight interleaved partial sums keep the adds
  // independent (a single running sum would serialise on the add latency).
  static void channel_moments(const T* src, std::size_t m, T b, T* dst, std::size_t ldd,
                              T& mean, T& m2, T& sd) noexcept {
    constexpr std::size_t U = 8;
    T s[U] = {};
    std::size_t i = 0;
    for (; i + U <= m; i += U)
      for (std::size_t u = 0; u < U; ++u) {
        const T v = src[i + u] + b;
        dst[(i + u) * ldd] = v;
        s[u] += v;
      }
    for (; i < m; ++i) {
      const T v = src[i] + b;
      dst[i * ldd] = v;
      s[0] += v;
    }
    T sum = T{0};
    for (std::size_t u = 0; u < U; ++u) sum += s[u];
    mean = sum / static_cast<T>(m);
    T q[U] = {}, e[U] = {};
    for (i = 0; i + U <= m; i += U)
      for (std::size_t u = 0; u < U; ++u) {
        const T d = (src[i + u] + b) - mean;
        q[u] += d * d;
        e[u] += d;
      }
    for (; i < m; ++i) {
      const T d = (src[i] + b) - mean;
      q[0] += d * d;
      e[0] += d;
    }
    m2 = sd = T{0};
    for (std::size_t u = 0; u < U; ++u) m2 += q[u], sd += e[u];
  }
};

}  // namespace fusedcnn::kernels
