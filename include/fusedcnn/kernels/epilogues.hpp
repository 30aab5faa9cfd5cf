// Epilogues of the igemm kernel: what happens to a finished output tile while it is still
// hot. Each is a small struct called with the kernels::TileInfo of the tile.
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "fusedcnn/kernels/rows.hpp"
#include "fusedcnn/kernels/tile.hpp"
#include "fusedcnn/kernels/transpose.hpp"

namespace fusedcnn::kernels {

namespace detail {
// Writes a channel-major tile of KB channels (element (i, j) at src[j*cs + i]) to pixel-major
// rows dst[i*ldd + j] as act(src + b[j]). When the rows are packed (ldd == KB) and KB is a
// power of two, 16 float pixels go at a time: bias and activation on each channel's vector,
// then merge_channels interleaves them in registers.
template <class T, std::size_t KB, bool Relu>
void store_channel_major(const T* src, std::size_t cs, std::size_t m, const T* b, T* dst,
                         std::size_t ldd) noexcept {
  T bias[KB];
  for (std::size_t j = 0; j < KB; ++j) bias[j] = b ? b[j] : T{0};
  auto act = [](T v) { return Relu ? (v < T{0} ? T{0} : v) : v; };
  if (ldd == KB) {
    std::size_t i = 0;
#if FUSEDCNN_ISA_AVX512
    if constexpr (std::is_same_v<T, float> && KB >= 2 && (KB & (KB - 1)) == 0) {
      using V = RowVec<T>;
      for (; i + 16 <= m; i += 16) {
        __m512 v[KB];
        for (std::size_t j = 0; j < KB; ++j) {
          v[j] = V::add(_mm512_loadu_ps(src + j * cs + i), V::bcast(bias + j));
          if constexpr (Relu) v[j] = V::relu(v[j]);
        }
        merge_channels<KB>(v);
        for (std::size_t q = 0; q < KB; ++q) _mm512_storeu_ps(dst + i * KB + 16 * q, v[q]);
      }
    }
#endif
    for (; i < m; ++i)
      for (std::size_t j = 0; j < KB; ++j) dst[i * KB + j] = act(src[j * cs + i] + bias[j]);
  } else {
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < KB; ++j) dst[i * ldd + j] = act(src[j * cs + i] + bias[j]);
  }
}

// Writes a row-major tile (element (i, j) at src[i*ld + j]) to rows dst[i*ldd + j] as
// act(src + b[j]), a vector of channels at a time: written out so that a bare copy does not
// become a library call per row.
template <class T, bool Relu>
void store_row_major(const T* src, std::size_t ld, std::size_t m, std::size_t n, const T* b,
                     T* dst, std::size_t ldd) noexcept {
  using V = RowVec<T>;
  for (std::size_t i = 0; i < m; ++i, src += ld, dst += ldd) {
    for (std::size_t j = 0; j < n; j += V::lanes) {
      const auto mask = V::first(n - j);
      typename V::R v = V::load(mask, src + j);
      if (b) v = V::add(v, V::load(mask, b + j));
      if constexpr (Relu) v = V::relu(v);
      V::store(mask, dst + j, v);
    }
  }
}

// store_channel_major for a runtime channel count n in [1, 4] or 8 (the row family's blocks).
template <class T, bool Relu>
void store_channel_major(const T* src, std::size_t cs, std::size_t m, std::size_t n, const T* b,
                         T* dst, std::size_t ldd) noexcept {
  switch (n) {
    case 1: return store_channel_major<T, 1, Relu>(src, cs, m, b, dst, ldd);
    case 2: return store_channel_major<T, 2, Relu>(src, cs, m, b, dst, ldd);
    case 3: return store_channel_major<T, 3, Relu>(src, cs, m, b, dst, ldd);
    case 8: return store_channel_major<T, 8, Relu>(src, cs, m, b, dst, ldd);
    default: return store_channel_major<T, 4, Relu>(src, cs, m, b, dst, ldd);
  }
}
}  // namespace detail

// y = tile + bias[k] (bias optional), then max(., 0) when Relu: plain conv, and the folded
// inference ConvBN whose BN scale lives in the packed weights and whose shift is the bias.
template <class T, bool Relu>
struct BiasActEpilogue {
  T* y;
  std::size_t ldy;
  const T* bias;  // may be null

  void operator()(const TileInfo<T>& t) const noexcept {
    if (t.cs != 1) {  // channel-major tile of the row family (at most 8 channels)
      detail::store_channel_major<T, Relu>(t.data, t.cs, t.m, t.n, bias ? bias + t.k0 : nullptr,
                                           y + t.p0 * ldy + t.k0, ldy);
      return;
    }
    detail::store_row_major<T, Relu>(t.data, t.ld, t.m, t.n, bias ? bias + t.k0 : nullptr,
                                     y + t.p0 * ldy + t.k0, ldy);
  }

  // The same for an igemm tile still in the kernel's accumulators (m x NV vectors, rows p0..,
  // channels k0..k0+n-1): the same adds and stores, without the stack tile in between.
  template <class V, std::size_t MR, std::size_t NV>
  void registers(const typename V::R (&acc)[MR][NV], const TileInfo<T>& t) const noexcept {
    const std::size_t m = t.m, n = t.n, p0 = t.p0, k0 = t.k0;
    T* dst = y + p0 * ldy + k0;
    typename V::R b[NV];
    typename V::M mask[NV];
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) {
      const std::size_t j = v * V::lanes;
      mask[v] = V::first(n > j ? n - j : 0);
      b[v] = bias ? V::load(mask[v], bias + k0 + j) : V::zero();
    }
    auto out = [&](std::size_t i, std::size_t v) {
      typename V::R r = bias ? V::add(acc[i][v], b[v]) : acc[i][v];
      if constexpr (Relu) r = V::relu(r);
      return r;
    };
    if (n == NV * V::lanes) {
#pragma GCC unroll 32
      for (std::size_t i = 0; i < MR; ++i) {
        if (i >= m) break;
#pragma GCC unroll 4
        for (std::size_t v = 0; v < NV; ++v) V::storeu(dst + i * ldy + v * V::lanes, out(i, v));
      }
      return;
    }
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t v = 0; v * V::lanes < n; ++v)
        V::store(mask[v], dst + i * ldy + v * V::lanes, out(i, v));
  }
};

// y = tile, row p of the tile's rows at row_of(p) (channel 0 of that row): for outputs whose
// rows are not evenly spaced, like the data gradient of a strided convolution, which runs one
// class of input pixels at a time.
template <class T, class RowOf>
struct MappedStoreEpilogue {
  RowOf row_of;

  void operator()(const TileInfo<T>& t) const noexcept {
    for (std::size_t i = 0; i < t.m; ++i) {
      T* dst = row_of(t.p0 + i) + t.k0;
      for (std::size_t j = 0; j < t.n; ++j) dst[j] = t.data[i * t.ld + j * t.cs];
    }
  }

  template <class V, std::size_t MR, std::size_t NV>
  void registers(const typename V::R (&acc)[MR][NV], const TileInfo<T>& t) const noexcept {
    typename V::M mask[NV];
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v)
      mask[v] = V::first(t.n > v * V::lanes ? t.n - v * V::lanes : 0);
#pragma GCC unroll 32
    for (std::size_t i = 0; i < MR; ++i) {
      if (i >= t.m) break;
      T* dst = row_of(t.p0 + i) + t.k0;
#pragma GCC unroll 4
      for (std::size_t v = 0; v < NV; ++v) V::store(mask[v], dst + v * V::lanes, acc[i][v]);
    }
  }
};

// z = tile + bias[k] is stored, and the tile's per-channel sums of d = z - shift and d^2 are
// added to its chunk's slot, [chunks][3][K] doubles: shift, sum d, sum d^2. The shift is the
// mean of the chunk's first tile (rounded to T), so d stays small even for a channel with mean
// 1e4 and nothing cancels; sums within a tile run in T (eight interleaved partials), across
// tiles in double. Chunks are fixed row ranges visited in row order, so the statistics do not
// depend on the thread count; the layer turns each slot into a mean and M2 and merges them.
// The vector paths read the shift back from a T copy: building it from the doubles through a
// stack array (scalar stores, one vector load) made every tile wait for the store buffer to
// drain past its own z stores, which nearly doubled a 1x1 64->256 training forward.
template <class T>
struct BiasStatsEpilogue {
  T* z;
  std::size_t ldz;  // = K, the channel count
  const T* bias;    // may be null
  double* slots;    // [chunks][3][K]
  T* shifts;        // [chunks][K]: each chunk's shift, as T

  void operator()(const TileInfo<T>& t) const noexcept {
    const std::size_t K = ldz;
    double* shift = slots + t.chunk * 3 * K + t.k0;
    const bool first = t.p0 == t.chunk_p0;
    if (t.cs != 1) {  // channel-major (row family, at most 8 channels): pixels contiguous
      for (std::size_t j0 = 0, nb = 0; j0 < t.n; j0 += nb) {  // blocks of 8, 4, 3, 2, 1
        const std::size_t left = t.n - j0;
        nb = left >= 8 ? 8 : left >= 4 ? 4 : left;
        TileInfo<T> part = t;
        part.data += j0 * t.cs, part.k0 += j0, part.n = nb;
        if (nb == 8) channel_major<8>(part, shift + j0, first);
        else if (nb == 4) channel_major<4>(part, shift + j0, first);
        else if (nb == 3) channel_major<3>(part, shift + j0, first);
        else if (nb == 2) channel_major<2>(part, shift + j0, first);
        else channel_major<1>(part, shift + j0, first);
      }
      detail::store_channel_major<T, false>(t.data, t.cs, t.m, t.n, bias ? bias + t.k0 : nullptr,
                                            z + t.p0 * ldz + t.k0, ldz);
      return;
    }
    if (t.n <= RowVec<T>::lanes) return one_vector(t, first);
    for (std::size_t j0 = 0; j0 < t.n; j0 += block) row_major(t, j0, std::min(block, t.n - j0), first);
  }

  // The sums of row_major, in its order, for an igemm tile still in the kernel's
  // accumulators (rows p0.., channels k0..k0+n-1): z is stored from the registers and summed
  // there, without a stack tile stored, reloaded and summed through arrays in memory.
  template <class V, std::size_t MR, std::size_t NV>
  void registers(const typename V::R (&acc)[MR][NV], const TileInfo<T>& t) const noexcept {
    const std::size_t K = ldz, m = t.m;
    double* shift = slots + t.chunk * 3 * K + t.k0;
    T* dst = z + t.p0 * ldz + t.k0;
    typename V::R zv[MR][NV] = {};  // every element is set below; GCC 12 cannot tell
    typename V::M mask[NV];
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) {
      const std::size_t j = v * V::lanes;
      mask[v] = V::first(t.n > j ? t.n - j : 0);
      const typename V::R b = bias ? V::load(mask[v], bias + t.k0 + j) : V::zero();
#pragma GCC unroll 32
      for (std::size_t i = 0; i < MR; ++i) {
        zv[i][v] = bias ? V::add(acc[i][v], b) : acc[i][v];
        if (i < m) V::store(mask[v], dst + i * ldz + j, zv[i][v]);
      }
    }
    alignas(64) T lane[NV * V::lanes], sq[NV * V::lanes];
    T* shift_t = shifts + t.chunk * K + t.k0;
    if (t.p0 == t.chunk_p0) {  // the chunk's shift: this tile's mean
#pragma GCC unroll 4
      for (std::size_t v = 0; v < NV; ++v) {
        typename V::R s = V::zero();
#pragma GCC unroll 32
        for (std::size_t i = 0; i < MR; ++i) {
          if (i >= m) break;
          s = V::add(s, zv[i][v]);
        }
        V::storeu(lane + v * V::lanes, s);
      }
      for (std::size_t j = 0; j < t.n; ++j)
        set_shift(shift, shift_t, j, lane[j] / static_cast<T>(m));
    }
    const T minus_one = T{-1};
    const typename V::R neg = V::bcast(&minus_one);
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) {
      const typename V::R sh = V::load(mask[v], shift_t + v * V::lanes);
      typename V::R s1 = V::zero(), s2 = V::zero();
#pragma GCC unroll 32
      for (std::size_t i = 0; i < MR; ++i) {
        if (i >= m) break;
        const typename V::R d = V::fma(sh, neg, zv[i][v]);  // z - shift, exactly rounded
        s1 = V::add(s1, d);
        s2 = V::fma(d, d, s2);
      }
      V::storeu(lane + v * V::lanes, s1);
      V::storeu(sq + v * V::lanes, s2);
    }
    for (std::size_t j = 0; j < t.n; ++j) {
      shift[K + j] += static_cast<double>(lane[j]);
      shift[2 * K + j] += static_cast<double>(sq[j]);
    }
  }

 private:
  static constexpr std::size_t block = 64;  // channels per pass over a row-major tile

  // Channel j's shift, in both of its copies.
  static void set_shift(double* shift, T* shift_t, std::size_t j, T value) noexcept {
    shift[j] = static_cast<double>(value);
    shift_t[j] = value;
  }
  
  // Sum of a vector's lanes, in lane order.
  template <class V>
  static T lane_sum(typename V::R r) noexcept {
    alignas(64) T lanes[V::lanes];
    V::storeu(lanes, r);
    T s = lanes[0];
    for (std::size_t l = 1; l < V::lanes; ++l) s += lanes[l];
    return s;
  }

  // The sums of a channel-major tile of N channels (row family), each channel's in pixel
  // order (vectors, lanes summed in order, then a scalar tail): the tile mean of z (the
  // chunk's shift, on its first tile; its tail a masked vector) and the sums of d = z - shift
  // and d^2. A vector of pixels of every channel at a time, so the N channels' add chains
  // interleave instead of each waiting on its own adds (a quarter of an 8-channel training
  // forward went to those waits).
  template <std::size_t N>
  void channel_major(const TileInfo<T>& t, double* shift, bool first) const noexcept {
    using V = RowVec<T>;
    const std::size_t K = ldz, m = t.m, full = m / V::lanes * V::lanes;
    const T* src = t.data;
    T b[N], neg[N];
    for (std::size_t j = 0; j < N; ++j) b[j] = bias ? bias[t.k0 + j] : T{0};
    typename V::R a[N], q[N];
    if (first) {
      for (std::size_t j = 0; j < N; ++j) a[j] = V::zero();
      for (std::size_t i = 0; i < full; i += V::lanes)
        for (std::size_t j = 0; j < N; ++j) a[j] = V::add(a[j], V::loadu(src + j * t.cs + i));
      if (full < m)
        for (std::size_t j = 0; j < N; ++j)
          a[j] = V::add(a[j], V::load(V::first(m - full), src + j * t.cs + full));
      for (std::size_t j = 0; j < N; ++j)
        set_shift(shift, shifts + t.chunk * K + t.k0, j,
                  lane_sum<V>(a[j]) / static_cast<T>(m) + b[j]);
    }
    for (std::size_t j = 0; j < N; ++j) {
      neg[j] = -static_cast<T>(shift[j]);
      a[j] = V::zero(), q[j] = V::zero();
    }
    for (std::size_t i = 0; i < full; i += V::lanes)
      for (std::size_t j = 0; j < N; ++j) {
        const typename V::R d =
            V::add(V::add(V::loadu(src + j * t.cs + i), V::bcast(b + j)), V::bcast(neg + j));
        a[j] = V::add(a[j], d);
        q[j] = V::fma(d, d, q[j]);
      }
    for (std::size_t j = 0; j < N; ++j) {
      T ta = lane_sum<V>(a[j]), tq = lane_sum<V>(q[j]);
      for (std::size_t i = full; i < m; ++i) {
        const T d = (src[j * t.cs + i] + b[j]) + neg[j];
        ta += d;
        tq += d * d;
      }
      shift[K + j] += static_cast<double>(ta);
      shift[2 * K + j] += static_cast<double>(tq);
    }
  }

  // A row-major tile of at most one vector of channels (strips, narrow igemm tiles): the same
  // sums as row_major, in the same order, one vector register per sum.
  void one_vector(const TileInfo<T>& t, bool first) const noexcept {
    using V = RowVec<T>;
    const std::size_t K = ldz;
    double* shift = slots + t.chunk * 3 * K + t.k0;
    const auto mask = V::first(t.n);
    const typename V::R bv = bias ? V::load(mask, bias + t.k0) : V::zero();
    typename V::R s1 = V::zero(), s2 = V::zero(), sh;
    T* dst = z + t.p0 * ldz + t.k0;
    for (std::size_t i = 0; i < t.m; ++i) {  // store z (and sum it when the shift is new)
      const typename V::R v = V::add(V::load(mask, t.data + i * t.ld), bv);
      V::store(mask, dst + i * ldz, v);
      if (first) s1 = V::add(s1, v);
    }
    alignas(64) T lane[V::lanes];
    T* shift_t = shifts + t.chunk * K + t.k0;
    if (first) {
      V::storeu(lane, s1);
      for (std::size_t j = 0; j < t.n; ++j)
        set_shift(shift, shift_t, j, lane[j] / static_cast<T>(t.m));
      s1 = V::zero();
    }
    sh = V::load(mask, shift_t);
    const T minus_one = T{-1};
    const typename V::R neg = V::bcast(&minus_one);
    for (std::size_t i = 0; i < t.m; ++i) {
      const typename V::R d = V::fma(sh, neg, V::add(V::load(mask, t.data + i * t.ld), bv));
      s1 = V::add(s1, d);
      s2 = V::fma(d, d, s2);
    }
    alignas(64) T q[V::lanes];
    V::storeu(lane, s1);
    V::storeu(q, s2);
    for (std::size_t j = 0; j < t.n; ++j) {
      shift[K + j] += static_cast<double>(lane[j]);
      shift[2 * K + j] += static_cast<double>(q[j]);
    }
  }

  // Channels [j0, j0 + n) of a row-major tile (igemm, depthwise): the channel loop is
  // innermost and contiguous, so it vectorises across channels.
  void row_major(const TileInfo<T>& t, std::size_t j0, std::size_t n, bool first) const noexcept {
    const std::size_t K = ldz;
    double* shift = slots + t.chunk * 3 * K + t.k0 + j0;
    T sh[block], s1[block] = {}, s2[block] = {};
    const T* bj = bias ? bias + t.k0 + j0 : nullptr;
    for (std::size_t i = 0; i < t.m; ++i) {  // store z (and sum it when the shift is new)
      T* dst = z + (t.p0 + i) * ldz + t.k0 + j0;
      const T* src = t.data + i * t.ld + j0;
      for (std::size_t j = 0; j < n; ++j) {
        const T v = bj ? src[j] + bj[j] : src[j];
        dst[j] = v;
        s1[j] += v;
      }
    }
    for (std::size_t j = 0; j < n; ++j) {
      if (first) set_shift(shift, shifts + t.chunk * K + t.k0 + j0, j, s1[j] / static_cast<T>(t.m));
      sh[j] = static_cast<T>(shift[j]);
      s1[j] = T{0};
    }
    for (std::size_t i = 0; i < t.m; ++i) {
      const T* row = z + (t.p0 + i) * ldz + t.k0 + j0;
      for (std::size_t j = 0; j < n; ++j) {
        const T d = row[j] - sh[j];
        s1[j] += d;
        s2[j] += d * d;
      }
    }
    for (std::size_t j = 0; j < n; ++j) {
      shift[K + j] += static_cast<double>(s1[j]);
      shift[2 * K + j] += static_cast<double>(s2[j]);
    }
  }
};

}  // namespace fusedcnn::kernels
