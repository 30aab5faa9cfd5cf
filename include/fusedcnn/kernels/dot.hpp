// Dot micro-kernel: convolutions whose groups have few output channels (at most 8) but many
// input channels, as in a 120 -> 6 channel head. A channel-vectorised igemm tile would leave
// most of its lanes on zero columns (6 of 16), and the row family's planar rows would be as
// many as the input channels; this kernel vectorises over the contraction (the input
// channels of a run) instead, and sums each output's lanes once at the end.
//
// Tile: MR output pixels by all KB output channels of a group. Per vector of a run it loads
// MR input vectors and KB weight vectors for MR * KB FMAs (MR = 4, KB = 6: 10 loads, 24 FMAs,
// 29 of AVX-512's 32 registers); dot_mr picks MR from the register file.
//
// Contract: rows[t * MR + i] is where run t of pixel i starts (kernels/igemm.hpp's row
// pointers, as ops/conv2d_gather.hpp builds them); the pixel reads its kc values from
// aoff on. w is [k][t][kcp], kcp = kc rounded up to whole vectors, zero past kc, so the last
// partial vector needs only its input load masked (no read past a run). vs receives MR * KB
// sums of L lanes each, [i][k][lane]; no allocation, no threads.
#pragma once

#include <cstddef>

#include "fusedcnn/kernels/rows.hpp"

namespace fusedcnn::kernels {

// Output pixels per dot tile for kb output channels: MR * kb accumulators, MR input vectors
// and one weight vector within the ISA's registers (one spare), at most 8.
template <class T>
constexpr std::size_t dot_mr(std::size_t kb) noexcept {
  const std::size_t mr = (RowVec<T>::registers - 2) / (kb + 1);
  return mr < 8 ? mr : 8;
}

// The most output channels a dot tile takes: 8 where 32 registers hold 3 pixels of them and
// a vector has 8 lanes or more (8 doubles on AVX-512: 6 output channels on 120 inputs ran
// 1.3x faster than on the igemm tile's 8 lanes), else half a vector.
template <class T>
inline constexpr std::size_t dot_max_kb =
    RowVec<T>::registers >= 32 && RowVec<T>::lanes >= 8 ? 8 : RowVec<T>::lanes / 2;

// vs[(i * KB + k) * L + lane] = the lane's share of sum over t < taps, c < kc of
// rows[t * MR + i][aoff + c] * w[(k * taps + t) * kcp + c].
template <class T, std::size_t MR, std::size_t KB>
void dot_mrxkb(std::size_t taps, std::size_t kc, std::size_t kcp, const T* const* rows,
               std::size_t aoff, const T* w, T* vs) noexcept {
  using V = RowVec<T>;
  constexpr std::size_t L = V::lanes;
  typename V::R acc[MR][KB];
#pragma GCC unroll 8
  for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (std::size_t k = 0; k < KB; ++k) acc[i][k] = V::zero();
  const std::size_t full = kc / L * L, ldk = taps * kcp;
  // one vector of the run at c: the inputs of every pixel, then each channel's weights
  auto step = [&](const T* const* r, const T* wt, std::size_t c, auto load) {
    typename V::R xv[MR];
#pragma GCC unroll 8
    for (std::size_t i = 0; i < MR; ++i) xv[i] = load(r[i] + c);
#pragma GCC unroll 8
    for (std::size_t k = 0; k < KB; ++k) {
      const typename V::R wv = V::loadu(wt + k * ldk + c);
#pragma GCC unroll 8
      for (std::size_t i = 0; i < MR; ++i) acc[i][k] = V::fma(xv[i], wv, acc[i][k]);
    }
  };
  const auto tail = V::first(kc - full);
  for (std::size_t t = 0; t < taps; ++t) {
    const T* r[MR];
#pragma GCC unroll 8
    for (std::size_t i = 0; i < MR; ++i) r[i] = rows[t * MR + i] + aoff;
    const T* wt = w + t * kcp;
    for (std::size_t c = 0; c < full; c += L)
      step(r, wt, c, [](const T* p) { return V::loadu(p); });
    if (full < kc) step(r, wt, full, [tail](const T* p) { return V::load(tail, p); });
  }
#pragma GCC unroll 8
  for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (std::size_t k = 0; k < KB; ++k) V::storeu(vs + (i * KB + k) * L, acc[i][k]);
}

// Calls f.template operator()<KB, dot_mr<T>(KB)>() for runtime kb in [1, dot_max_kb<T>].
template <class T, class F>
void with_dot_kb(std::size_t kb, F&& f) {
  auto call = [&]<std::size_t KB>() {
    if constexpr (KB <= dot_max_kb<T>) f.template operator()<KB, dot_mr<T>(KB)>();
  };
  switch (kb) {
    case 1: return call.template operator()<1>();
    case 2: return call.template operator()<2>();
    case 3: return call.template operator()<3>();
    case 4: return call.template operator()<4>();
    case 5: return call.template operator()<5>();
    case 6: return call.template operator()<6>();
    case 7: return call.template operator()<7>();
    default: return call.template operator()<8>();
  }
}

}  // namespace fusedcnn::kernels
