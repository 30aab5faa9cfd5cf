// Stateless batch-norm operators over (P rows x C channels) NHWC data: batch moments,
// scale-shift application, and the backward reductions and data gradient.
//
// Numerics: moments are computed per fixed chunk of rows (shifted sums of d and d^2 in one
// pass, see strip_moments), and chunks are merged in order with Chan's formula in double. A
// channel with mean 1e4 and std 1 keeps its variance; no E[z^2] - E[z]^2. Chunks are
// fixed-size, so results do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "fusedcnn/core/tensor.hpp"
#include "fusedcnn/core/threading.hpp"
#include "fusedcnn/kernels/config.hpp"
#include "fusedcnn/kernels/rows.hpp"

namespace fusedcnn::ops {

// Rows per reduction chunk: a chunk of 256 rows of up to 512 channels stays in L2.
inline constexpr std::size_t bn_rows_per_chunk = 256;

inline std::size_t bn_chunks(std::size_t rows) noexcept {
  return std::max<std::size_t>(1, (rows + bn_rows_per_chunk - 1) / bn_rows_per_chunk);
}

namespace detail {
// Fewer channels than this run through the super-row view (see bn_super_width).
inline constexpr std::size_t bn_narrow = 16;
}  // namespace detail

// Per-chunk partial moments or sums, [chunk][2][C] doubles (owned by the layer).
struct BnWorkspace {
  Tensor<double, 1> partial;
  double* ensure(std::size_t len) {
    if (partial.size() < len) partial = Tensor<double, 1>({len});
    return partial.data();
  }
};

// Running per-channel moments of a set of rows: count, mean, and M2 = sum of (z - mean)^2.
struct Moments {
  // Chan's parallel merge of (nb, mean_b, m2_b) into (na, mean_a, m2_a), channel by channel.
  static void merge(double na, double* mean_a, double* m2_a, double nb, const double* mean_b,
                    const double* m2_b, std::size_t C) noexcept {
    const double n = na + nb;
    if (nb == 0) return;
    for (std::size_t c = 0; c < C; ++c) {
      const double delta = mean_b[c] - mean_a[c];
      mean_a[c] += delta * (nb / n);
      m2_a[c] += m2_b[c] + delta * delta * (na * nb / n);
    }
  }
};

namespace detail {
// Mean and M2 of rows [r0, r1) of z for the w <= 4 vectors of channels at z (row stride C),
// in one pass: d = z - shift in T (exact near the shift, which is the mean of the first
// rows), sums of d and d^2 over blocks of 8 rows in T registers, each block widened into
// double, then M2 = sum d^2 - (sum d)^2 / n. The T arithmetic keeps the pass at the speed
// of the loads; the shift keeps a channel with mean 1e4 and std 1 exact to ~1e-7.
template <class T>
void strip_moments(const T* z, std::size_t r0, std::size_t r1, std::size_t C, std::size_t w,
                   double* mean, double* m2) noexcept {
  using V = kernels::RowVec<T>;
  constexpr std::size_t L = V::lanes, NV = 4, W = NV * L, B = 8;
  typename V::M mask[NV];
  for (std::size_t v = 0; v < NV; ++v) mask[v] = V::first(w > v * L ? w - v * L : 0);
  alignas(64) T shift[W] = {}, neg[W];
  const std::size_t head = std::min(r1 - r0, B);
  for (std::size_t r = r0; r < r0 + head; ++r)
    for (std::size_t j = 0; j < w; ++j) shift[j] += z[r * C + j];
  for (std::size_t j = 0; j < W; ++j) shift[j] /= static_cast<T>(head), neg[j] = -shift[j];
  typename V::R nv[NV];
  for (std::size_t v = 0; v < NV; ++v) nv[v] = V::loadu(neg + v * L);
  double s1[W] = {}, s2[W] = {};
  for (std::size_t rb = r0; rb < r1; rb += B) {
    const std::size_t re = std::min(r1, rb + B);
    typename V::R a[NV], q[NV];
    for (std::size_t v = 0; v < NV; ++v) a[v] = q[v] = V::zero();
    for (std::size_t r = rb; r < re; ++r) {
      const T* zr = z + r * C;
      for (std::size_t v = 0; v < NV; ++v) {
        const typename V::R d = V::add(V::load(mask[v], zr + v * L), nv[v]);  // 0 past w
        a[v] = V::add(a[v], d);
        q[v] = V::fma(d, d, q[v]);
      }
    }
    alignas(64) T ta[W], tq[W];
    for (std::size_t v = 0; v < NV; ++v) V::storeu(ta + v * L, a[v]), V::storeu(tq + v * L, q[v]);
    for (std::size_t j = 0; j < W; ++j) s1[j] += ta[j], s2[j] += tq[j];
  }
  const double n = static_cast<double>(r1 - r0);
  for (std::size_t j = 0; j < w; ++j) {
    mean[j] = static_cast<double>(shift[j]) + s1[j] / n;
    m2[j] = std::max(0.0, s2[j] - s1[j] * s1[j] / n);
  }
}
}  // namespace detail

// Mean and M2 of rows [r0, r1) of z, channel by channel, strip by strip of channels.
template <class T>
void chunk_moments(const T* z, std::size_t r0, std::size_t r1, std::size_t C, double* mean,
                   double* m2) noexcept {
  constexpr std::size_t W = 4 * kernels::RowVec<T>::lanes;
  for (std::size_t c0 = 0; c0 < C; c0 += W)
    detail::strip_moments(z + c0, r0, r1, C, std::min(W, C - c0), mean + c0, m2 + c0);
}

// Batch mean and biased variance of each channel of z (rows x C), in double.
template <class T>
void batch_moments(const T* z, std::size_t rows, std::size_t C, double* mean, double* var,
                   BnWorkspace& ws);

namespace detail {
// batch_moments for C < 16 through the super-row view: moments per super-column, merged
// into their channel in column order (Chan), then the rows past the last super-row.
template <class T>
void narrow_batch_moments(const T* z, std::size_t rows, std::size_t C, double* mean,
                          double* var, BnWorkspace& ws) {
  const std::size_t R = C * (64 / C), S = rows * C / R, done = S * R / C;  // as bn_super_width
  double wm[64], wv[64], tail[2 * 16];
  if (S) batch_moments(z, S, R, wm, wv, ws);
  if (done < rows) chunk_moments(z, done, rows, C, tail, tail + C);
  for (std::size_t c = 0; c < C; ++c) {
    double n = 0, mu = 0, m2 = 0;
    for (std::size_t j = c; S && j < R; j += C) {
      const double m2j = wv[j] * static_cast<double>(S);
      Moments::merge(n, &mu, &m2, static_cast<double>(S), &wm[j], &m2j, 1);  // n = 0: a copy
      n += static_cast<double>(S);
    }
    if (done < rows) {
      const double nb = static_cast<double>(rows - done);
      Moments::merge(n, &mu, &m2, nb, &tail[c], &tail[C + c], 1);
      n += nb;
    }
    mean[c] = mu;
    var[c] = m2 / n;
  }
}
}  // namespace detail

// Batch mean and biased variance of each channel of z (rows x C), in double.
template <class T>
void batch_moments(const T* z, std::size_t rows, std::size_t C, double* mean, double* var,
                   BnWorkspace& ws) {
  if (C < detail::bn_narrow) return detail::narrow_batch_moments(z, rows, C, mean, var, ws);
  const std::size_t nchunks = bn_chunks(rows);
  // each chunk: mean[C], m2[C]
  double* part = ws.ensure(nchunks * 2 * C);
  ::fusedcnn::detail::parallel_for(nchunks, [&](std::size_t ci) {
    const std::size_t r0 = ci * bn_rows_per_chunk, r1 = std::min(rows, r0 + bn_rows_per_chunk);
    chunk_moments(z, r0, r1, C, part + ci * 2 * C, part + ci * 2 * C + C);
  });
  std::copy_n(part, C, mean);
  double* m2 = part + C;  // chunk 0 accumulates the merge
  double n = static_cast<double>(std::min(rows, bn_rows_per_chunk));
  for (std::size_t ci = 1; ci < nchunks; ++ci) {
    const std::size_t r0 = ci * bn_rows_per_chunk, r1 = std::min(rows, r0 + bn_rows_per_chunk);
    const double nb = static_cast<double>(r1 - r0);
    Moments::merge(n, mean, m2, nb, part + ci * 2 * C, part + ci * 2 * C + C, C);
    n += nb;
  }
  for (std::size_t c = 0; c < C; ++c) var[c] = m2[c] / n;
}

// The batch-norm output (z - mean) * a[c] + beta[c], optionally through a ReLU. The mean is
// split into hi + lo parts in T, so z - hi is exact for z near the mean and a channel with
// mean 1e4 keeps its small deviations; a = gamma / sigma.
template <class T>
struct BnAffine {
  const T* mean_hi;
  const T* mean_lo;
  const T* a;
  const T* beta;
  T centred(T z, std::size_t c) const noexcept { return (z - mean_hi[c]) - mean_lo[c]; }
  T operator()(T z, std::size_t c) const noexcept { return centred(z, c) * a[c] + beta[c]; }
  // The same map for channels c0.. (every per-channel array advanced by c0).
  BnAffine offset(std::size_t c0) const noexcept {
    return {mean_hi + c0, mean_lo + c0, a + c0, beta + c0};
  }
};

// Splits double means into the hi + lo pairs BnAffine uses.
template <class T>
void split_mean(const double* mean, std::size_t C, T* hi, T* lo) noexcept {
  for (std::size_t c = 0; c < C; ++c) {
    hi[c] = static_cast<T>(mean[c]);
    lo[c] = static_cast<T>(mean[c] - static_cast<double>(hi[c]));
  }
}

namespace detail {
// Narrow rows would leave the channel-vectorised loops mostly empty, so rows x C data is
// viewed as super-rows of R = C * (64 / C) elements (64 / C pixels each) with every
// per-channel array repeated to R entries: the same arithmetic per element, on full vectors.
inline std::size_t bn_super_width(std::size_t C) noexcept { return C * (64 / C); }

// dst[j] = src[j % C] for j < R.
template <class T>
void repeat_channels(const T* src, std::size_t C, std::size_t R, T* dst) noexcept {
  for (std::size_t j = 0; j < R; j += C) std::copy_n(src, std::min(C, R - j), dst + j);
}

// A BnAffine repeated to R channels, with its storage.
template <class T>
struct WideAffine {
  T mh[64], ml[64], a[64], b[64];
  BnAffine<T> f;
  WideAffine(const BnAffine<T>& src, std::size_t C, std::size_t R) noexcept {
    repeat_channels(src.mean_hi, C, R, mh);
    repeat_channels(src.mean_lo, C, R, ml);
    repeat_channels(src.a, C, R, a);
    repeat_channels(src.beta, C, R, b);
    f = BnAffine<T>{mh, ml, a, b};
  }
};
}  // namespace detail

namespace detail {
// Rows [r0, r1) of y = f(z) (then max(., 0) when Relu), channel loop innermost and free of
// aliasing so it vectorises.
template <class T, bool Relu>
void bn_apply_rows(const T* z, std::size_t r0, std::size_t r1, std::size_t C,
                   const BnAffine<T>& f, T* y) noexcept {
  const T* __restrict mh = f.mean_hi;
  const T* __restrict ml = f.mean_lo;
  const T* __restrict a = f.a;
  const T* __restrict b = f.beta;
  for (std::size_t r = r0; r < r1; ++r) {
    const T* zr = z + r * C;
    T* yr = y + r * C;
    FUSEDCNN_IVDEP
    for (std::size_t c = 0; c < C; ++c) {
      const T v = ((zr[c] - mh[c]) - ml[c]) * a[c] + b[c];
      yr[c] = Relu ? (v < T{0} ? T{0} : v) : v;
    }
  }
}
}  // namespace detail

// y = f(z) per BnAffine, then max(., 0) when relu (NaN stays NaN); y may alias z.
template <class T>
void bn_apply(const T* z, std::size_t rows, std::size_t C, const BnAffine<T>& f, bool relu,
              T* y) {
  if (C < detail::bn_narrow) {
    const std::size_t R = detail::bn_super_width(C), S = rows * C / R, done = S * R / C;
    const detail::WideAffine<T> w(f, C, R);
    if (S) bn_apply(z, S, R, w.f, relu, y);
    if (relu) {
      detail::bn_apply_rows<T, true>(z, done, rows, C, f, y);
    } else {
      detail::bn_apply_rows<T, false>(z, done, rows, C, f, y);
    }
    return;
  }
  // descending: the conv that wrote z just now left the end of each thread's share in its L2
  ::fusedcnn::detail::parallel_for_descending(bn_chunks(rows), [&](std::size_t ci) {
    const std::size_t r0 = ci * bn_rows_per_chunk, r1 = std::min(rows, r0 + bn_rows_per_chunk);
    if (relu) {
      detail::bn_apply_rows<T, true>(z, r0, r1, C, f, y);
    } else {
      detail::bn_apply_rows<T, false>(z, r0, r1, C, f, y);
    }
  });
}

// The gradient reaching the batch norm's output: dy, or dy masked by a fused ReLU whose mask
// (BN output > 0) is recomputed from z, so the fused path needs no saved output.
template <class T>
struct BnGrad {
  const T* dy;
  const BnAffine<T>* relu_of = nullptr;  // non-null: a ReLU followed this affine map
};

namespace detail {
// Adds sums of g and g * (z - mean) over rows [r0, r1) for channels [0, cn) of rows of
// stride C into sg, sgx (in T: callers keep r1 - r0 small and widen the result).
template <class T, bool Relu>
void bn_sums_rows(const T* z, const BnGrad<T>& grad, std::size_t r0, std::size_t r1,
                  std::size_t C, const BnAffine<T>& centre, T* __restrict sg,
                  T* __restrict sgx, std::size_t cn) noexcept {
  const T* __restrict mh = centre.mean_hi;
  const T* __restrict ml = centre.mean_lo;
  const BnAffine<T> f = Relu ? *grad.relu_of : centre;
  const T* __restrict fa = f.a;
  const T* __restrict fb = f.beta;
  const T* __restrict fmh = f.mean_hi;
  const T* __restrict fml = f.mean_lo;
  for (std::size_t r = r0; r < r1; ++r) {
    const T* zr = z + r * C;
    const T* dyr = grad.dy + r * C;
    FUSEDCNN_IVDEP
    for (std::size_t c = 0; c < cn; ++c) {
      T g = dyr[c];
      if constexpr (Relu) g = ((zr[c] - fmh[c]) - fml[c]) * fa[c] + fb[c] > T{0} ? g : T{0};
      sg[c] += g;
      sgx[c] += g * ((zr[c] - mh[c]) - ml[c]);
    }
  }
}

// Rows [r0, r1) of dz = k1 g + k2 (z - mean) + k3.
template <class T, bool Relu>
void bn_dz_rows(const T* z, const BnGrad<T>& grad, std::size_t r0, std::size_t r1,
                std::size_t C, const BnAffine<T>& centre, const T* k1_, const T* k2_,
                const T* k3_, T* dz) noexcept {
  const T* __restrict mh = centre.mean_hi;
  const T* __restrict ml = centre.mean_lo;
  const T* __restrict k1 = k1_;
  const T* __restrict k2 = k2_;
  const T* __restrict k3 = k3_;
  const BnAffine<T> f = Relu ? *grad.relu_of : centre;
  const T* __restrict fa = f.a;
  const T* __restrict fb = f.beta;
  const T* __restrict fmh = f.mean_hi;
  const T* __restrict fml = f.mean_lo;
  for (std::size_t r = r0; r < r1; ++r) {
    const T* zr = z + r * C;
    const T* dyr = grad.dy + r * C;
    T* out = dz + r * C;
    FUSEDCNN_IVDEP
    for (std::size_t c = 0; c < C; ++c) {
      T g = dyr[c];
      if constexpr (Relu) g = ((zr[c] - fmh[c]) - fml[c]) * fa[c] + fb[c] > T{0} ? g : T{0};
      out[c] = k1[c] * g + k2[c] * ((zr[c] - mh[c]) - ml[c]) + k3[c];
    }
  }
}
}  // namespace detail

// Per-channel sum_g = sum g and sum_gx = sum g * (z - mean) over all rows, in double across
// chunks; `centre` supplies the mean.
template <class T>
void bn_backward_sums(const T* z, const BnGrad<T>& grad, std::size_t rows, std::size_t C,
                      const BnAffine<T>& centre, double* sum_g, double* sum_gx,
                      BnWorkspace& ws) {
  if (C < detail::bn_narrow) {
    const std::size_t R = detail::bn_super_width(C), S = rows * C / R, done = S * R / C;
    const detail::WideAffine<T> cen(centre, C, R);
    detail::WideAffine<T> relu(grad.relu_of ? *grad.relu_of : centre, C, R);
    double wg[64] = {}, wgx[64] = {};
    if (S) bn_backward_sums(z, BnGrad<T>{grad.dy, grad.relu_of ? &relu.f : nullptr}, S, R,
                            cen.f, wg, wgx, ws);
    alignas(64) T tg[64] = {}, tgx[64] = {};  // the < 64/C rows past the last super-row
    if (grad.relu_of) {
      detail::bn_sums_rows<T, true>(z, grad, done, rows, C, centre, tg, tgx, C);
    } else {
      detail::bn_sums_rows<T, false>(z, grad, done, rows, C, centre, tg, tgx, C);
    }
    for (std::size_t c = 0; c < C; ++c) {
      sum_g[c] = static_cast<double>(tg[c]);
      sum_gx[c] = static_cast<double>(tgx[c]);
      for (std::size_t j = c; j < R; j += C) sum_g[c] += wg[j], sum_gx[c] += wgx[j];
    }
    return;
  }
  const std::size_t nchunks = bn_chunks(rows);
  double* part = ws.ensure(nchunks * 2 * C);
  ::fusedcnn::detail::parallel_for(nchunks, [&](std::size_t ci) {
    // Channels in blocks that fit on the stack; rows in runs of 64 summed in T, then widened:
    // short runs keep float rounding near 64 ulp while the loop stays vectorised.
    constexpr std::size_t block = 256, run = 64;
    const std::size_t r0 = ci * bn_rows_per_chunk, r1 = std::min(rows, r0 + bn_rows_per_chunk);
    double* pg = part + ci * 2 * C;
    double* pgx = pg + C;
    std::fill_n(pg, 2 * C, 0.0);
    for (std::size_t c0 = 0; c0 < C; c0 += block) {
      const std::size_t cn = std::min(block, C - c0);
      const BnAffine<T> cen = centre.offset(c0);
      BnAffine<T> f{};
      if (grad.relu_of) f = grad.relu_of->offset(c0);
      const BnGrad<T> g{grad.dy + c0, grad.relu_of ? &f : nullptr};
      for (std::size_t s0 = r0; s0 < r1; s0 += run) {
        alignas(64) T sg[block] = {}, sgx[block] = {};
        const std::size_t s1 = std::min(r1, s0 + run);
        if (grad.relu_of) {
          detail::bn_sums_rows<T, true>(z + c0, g, s0, s1, C, cen, sg, sgx, cn);
        } else {
          detail::bn_sums_rows<T, false>(z + c0, g, s0, s1, C, cen, sg, sgx, cn);
        }
        for (std::size_t c = 0; c < cn; ++c) {
          pg[c0 + c] += static_cast<double>(sg[c]);
          pgx[c0 + c] += static_cast<double>(sgx[c]);
        }
      }
    }
  });
  std::fill_n(sum_g, C, 0.0);
  std::fill_n(sum_gx, C, 0.0);
  for (std::size_t ci = 0; ci < nchunks; ++ci)
    for (std::size_t c = 0; c < C; ++c) {
      sum_g[c] += part[ci * 2 * C + c];
      sum_gx[c] += part[ci * 2 * C + C + c];
    }
}

// dz = k1[c] * g + k2[c] * (z - mean[c]) + k3[c] for runs of rows, on the calling thread: the
// training-mode data gradient (gamma/sigma) * (g - sum_g/M - xhat * sum_gxhat/M) expanded per
// channel, or the eval-mode one (k2 = k3 = 0). `centre` supplies z - mean; grad.relu_of, when
// set, masks g. Fewer than bn_narrow channels run as super-rows of whole vectors, their
// coefficients widened once here. Not copyable (the widened maps point into themselves).
// bn_backward_data runs it over chunks; the prologue of a backward that forms dz where it is
// consumed (rows_backward_with_dz) runs it per output row.
template <class T>
class BnDz {
 public:
  BnDz(const BnAffine<T>* relu_of, std::size_t C, const BnAffine<T>& centre, const T* k1,
       const T* k2, const T* k3) noexcept
      : relu_of_(relu_of), C_(C), R_(detail::bn_super_width(C)), centre_(centre), k1_(k1),
        k2_(k2), k3_(k3), cen_(centre, C, R_), relu_(relu_of ? *relu_of : centre, C, R_) {
    if (C_ >= detail::bn_narrow) return;
    detail::repeat_channels(k1, C, R_, w1_);
    detail::repeat_channels(k2, C, R_, w2_);
    detail::repeat_channels(k3, C, R_, w3_);
  }
  BnDz(const BnDz&) = delete;
  BnDz& operator=(const BnDz&) = delete;

  // dz for `rows` rows of z and dy (dz may alias dy).
  void operator()(const T* z, const T* dy, std::size_t rows, T* dz) const noexcept {
    if (C_ >= detail::bn_narrow)
      return run(z, BnGrad<T>{dy, relu_of_}, 0, rows, C_, centre_, k1_, k2_, k3_, dz);
    const std::size_t S = rows * C_ / R_, done = S * R_ / C_;
    if (S)
      run(z, BnGrad<T>{dy, relu_of_ ? &relu_.f : nullptr}, 0, S, R_, cen_.f, w1_, w2_, w3_, dz);
    run(z, BnGrad<T>{dy, relu_of_}, done, rows, C_, centre_, k1_, k2_, k3_, dz);
  }

 private:
  static void run(const T* z, const BnGrad<T>& g, std::size_t r0, std::size_t r1,
                  std::size_t width, const BnAffine<T>& cen, const T* w1, const T* w2,
                  const T* w3, T* dz) noexcept {
    if (g.relu_of) {
      detail::bn_dz_rows<T, true>(z, g, r0, r1, width, cen, w1, w2, w3, dz);
    } else {
      detail::bn_dz_rows<T, false>(z, g, r0, r1, width, cen, w1, w2, w3, dz);
    }
  }

  const BnAffine<T>* relu_of_;
  std::size_t C_, R_;
  BnAffine<T> centre_;
  const T *k1_, *k2_, *k3_;
  detail::WideAffine<T> cen_, relu_;
  T w1_[64] = {}, w2_[64] = {}, w3_[64] = {};
};

// BnDz over all rows, in parallel chunks (of whole super-rows when narrow).
template <class T>
void bn_backward_data(const T* z, const BnGrad<T>& grad, std::size_t rows, std::size_t C,
                      const BnAffine<T>& centre, const T* k1, const T* k2, const T* k3, T* dz) {
  const BnDz<T> form(grad.relu_of, C, centre, k1, k2, k3);
  const std::size_t per =
      C < detail::bn_narrow ? bn_rows_per_chunk * (64 / C) : bn_rows_per_chunk;
  ::fusedcnn::detail::parallel_for((rows + per - 1) / per, [&](std::size_t ci) {
    const std::size_t r0 = ci * per, n = std::min(rows, r0 + per) - r0;
    form(z + r0 * C, grad.dy + r0 * C, n, dz + r0 * C);
  });
}

}  // namespace fusedcnn::ops
