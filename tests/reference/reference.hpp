// Naive double-precision references for the tests: plain loops over NHWC / HWIO data, written
// to be obviously right rather than fast. Nothing here shares code with the library.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <vector>

#include <fusedcnn/fusedcnn.hpp>

namespace ref {

using Vec = std::vector<double>;

// Copies any tensor's elements to doubles.
template <class T, std::size_t R>
Vec to_vec(const fusedcnn::Tensor<T, R>& t) {
  return Vec(t.data(), t.data() + t.size());
}

// ||a - b|| / max(||b||, tiny): the normwise relative error of a against reference b.
template <class T, std::size_t R>
double rel_err(const fusedcnn::Tensor<T, R>& a, const Vec& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const double d = static_cast<double>(a.data()[i]) - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

// Whether every a[i] is within tol * (|b[i]| + scale[i]) of b[i]: for sums whose terms
// cancel, where the rounding error scales with the sum of the terms' magnitudes (scale).
template <class T, std::size_t R>
bool close_to_sum(const fusedcnn::Tensor<T, R>& a, const Vec& b, const Vec& scale, double tol) {
  for (std::size_t i = 0; i < b.size(); ++i)
    if (std::abs(static_cast<double>(a.data()[i]) - b[i]) > tol * (std::abs(b[i]) + scale[i])) return false;
  return true;
}

// A convolution problem with every padding side resolved.
struct Conv {
  std::size_t n, h, w, c, k;
  std::size_t kh, kw, sh = 1, sw = 1, dh = 1, dw = 1, groups = 1;
  std::size_t pt = 0, pb = 0, pl = 0, pr = 0;
  // Output extent along one axis, 0 when the dilated kernel does not fit the padded input.
  static long extent(std::size_t in, std::size_t pad, std::size_t k, std::size_t s, std::size_t d) {
    const long span = long(d * (k - 1) + 1), padded = long(in + pad);
    return padded < span ? 0 : (padded - span) / long(s) + 1;
  }
  long out_h() const { return extent(h, pt + pb, kh, sh, dh); }
  long out_w() const { return extent(w, pl + pr, kw, sw, dw); }
  std::size_t ho() const { return std::size_t(out_h()); }
  std::size_t wo() const { return std::size_t(out_w()); }
};

// TensorFlow's 'same' padding along one axis: {before, after}.
inline std::pair<std::size_t, std::size_t> same_padding(std::size_t in, std::size_t kernel,
                                                        std::size_t stride,
                                                        std::size_t dilation) {
  const std::size_t out = (in + stride - 1) / stride;
  const long need = long((out - 1) * stride + dilation * (kernel - 1) + 1) - long(in);
  const std::size_t total = need > 0 ? std::size_t(need) : 0;
  return {total / 2, total - total / 2};
}

// Visits every (output pixel, output channel, tap, input channel) term whose input is inside
// the image, with flat indices into x (NHWC), w (HWIO) and y (NHWC).
template <class F>
void for_each_term(const Conv& p, F&& f) {
  const std::size_t cg = p.c / p.groups, kg = p.k / p.groups, ho = p.ho(), wo = p.wo();
  for (std::size_t n = 0; n < p.n; ++n)
    for (std::size_t oh = 0; oh < ho; ++oh)
      for (std::size_t ow = 0; ow < wo; ++ow)
        for (std::size_t k = 0; k < p.k; ++k) {
          const std::size_t g = k / kg;
          const std::size_t yi = ((n * ho + oh) * wo + ow) * p.k + k;
          for (std::size_t a = 0; a < p.kh; ++a)
            for (std::size_t b = 0; b < p.kw; ++b) {
              const long ih = long(oh * p.sh + a * p.dh) - long(p.pt);
              const long iw = long(ow * p.sw + b * p.dw) - long(p.pl);
              if (ih < 0 || iw < 0 || ih >= long(p.h) || iw >= long(p.w)) continue;
              for (std::size_t c = 0; c < cg; ++c) {
                const std::size_t xi = ((n * p.h + std::size_t(ih)) * p.w + std::size_t(iw)) * p.c + g * cg + c;
                const std::size_t wi = ((a * p.kw + b) * cg + c) * p.k + k;
                f(yi, xi, wi);
              }
            }
        }
}

// y = conv(x, w) + bias (bias may be empty).
inline Vec conv_forward(const Conv& p, const Vec& x, const Vec& w, const Vec& bias) {
  Vec y(p.n * p.ho() * p.wo() * p.k, 0.0);
  for_each_term(p, [&](std::size_t yi, std::size_t xi, std::size_t wi) { y[yi] += x[xi] * w[wi]; });
  if (!bias.empty())
    for (std::size_t i = 0; i < y.size(); ++i) y[i] += bias[i % p.k];
  return y;
}

struct ConvGrads {
  Vec dx, dw, db;
};

// dx, dw and db of the convolution for upstream gradient dy.
inline ConvGrads conv_backward(const Conv& p, const Vec& x, const Vec& w, const Vec& dy) {
  ConvGrads g{Vec(x.size(), 0.0), Vec(w.size(), 0.0), Vec(p.k, 0.0)};
  for_each_term(p, [&](std::size_t yi, std::size_t xi, std::size_t wi) {
    g.dx[xi] += w[wi] * dy[yi];
    g.dw[wi] += x[xi] * dy[yi];
  });
  for (std::size_t i = 0; i < dy.size(); ++i) g.db[i % p.k] += dy[i];
  return g;
}

// Per-channel batch mean and biased variance of rows x C data.
inline void moments(const Vec& z, std::size_t C, Vec& mean, Vec& var) {
  const std::size_t rows = z.size() / C;
  mean.assign(C, 0.0);
  var.assign(C, 0.0);
  for (std::size_t i = 0; i < z.size(); ++i) mean[i % C] += z[i];
  for (auto& m : mean) m /= double(rows);
  for (std::size_t i = 0; i < z.size(); ++i) var[i % C] += (z[i] - mean[i % C]) * (z[i] - mean[i % C]);
  for (auto& v : var) v /= double(rows);
}

// Batch-norm state as PyTorch keeps it.
struct BnState {
  Vec gamma, beta, running_mean, running_var;  // gamma/beta empty when not affine
  double eps = 1e-5;
  std::optional<double> momentum = 0.1;
  long long num_batches_tracked = 0;
  bool track = true;
};

struct BnCache {
  Vec xhat, inv_std;
  bool batch_stats = true;
};

// y = gamma * (z - mean) / sqrt(var + eps) + beta; batch statistics in training (and whenever
// running statistics are not tracked), updating the running ones as PyTorch does.
inline Vec bn_forward(BnState& s, const Vec& z, std::size_t C, bool training, BnCache& cache) {
  const std::size_t rows = z.size() / C;
  Vec mean, var;
  cache.batch_stats = training || !s.track;
  if (cache.batch_stats) {
    moments(z, C, mean, var);
    if (training && s.track) {
      ++s.num_batches_tracked;
      const double m = s.momentum ? *s.momentum : 1.0 / double(s.num_batches_tracked);
      for (std::size_t c = 0; c < C; ++c) {
        s.running_mean[c] = (1 - m) * s.running_mean[c] + m * mean[c];
        s.running_var[c] = (1 - m) * s.running_var[c] + m * var[c] * double(rows) / double(rows - 1);
      }
    }
  } else {
    mean = s.running_mean;
    var = s.running_var;
  }
  cache.inv_std.resize(C);
  for (std::size_t c = 0; c < C; ++c) cache.inv_std[c] = 1.0 / std::sqrt(var[c] + s.eps);
  cache.xhat.resize(z.size());
  Vec y(z.size());
  for (std::size_t i = 0; i < z.size(); ++i) {
    const std::size_t c = i % C;
    cache.xhat[i] = (z[i] - mean[c]) * cache.inv_std[c];
    y[i] = s.gamma.empty() ? cache.xhat[i] : s.gamma[c] * cache.xhat[i] + s.beta[c];
  }
  return y;
}

struct BnGrads {
  Vec dz, dgamma, dbeta;
  Vec dgamma_abs, dbeta_abs;  // sums of the terms' magnitudes: the scale of rounding errors
};

// Backward of bn_forward: with batch statistics the full formula, with running ones dz = g*gamma/sigma.
inline BnGrads bn_backward(const BnState& s, const BnCache& cache, const Vec& dy, std::size_t C) {
  const std::size_t rows = dy.size() / C;
  BnGrads g{Vec(dy.size()), Vec(C, 0.0), Vec(C, 0.0), Vec(C, 0.0), Vec(C, 0.0)};
  for (std::size_t i = 0; i < dy.size(); ++i) {
    g.dbeta[i % C] += dy[i];
    g.dgamma[i % C] += dy[i] * cache.xhat[i];
    g.dbeta_abs[i % C] += std::abs(dy[i]);
    g.dgamma_abs[i % C] += std::abs(dy[i] * cache.xhat[i]);
  }
  for (std::size_t i = 0; i < dy.size(); ++i) {
    const std::size_t c = i % C;
    const double gm = s.gamma.empty() ? 1.0 : s.gamma[c];
    if (cache.batch_stats) {
      g.dz[i] = gm * cache.inv_std[c] *
                (dy[i] - g.dbeta[c] / double(rows) - cache.xhat[i] * g.dgamma[c] / double(rows));
    } else {
      g.dz[i] = gm * cache.inv_std[c] * dy[i];
    }
  }
  return g;
}

// ReLU forward and backward (gradient mask x > 0).
inline Vec relu_forward(const Vec& x) {
  Vec y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] > 0 ? x[i] : 0.0;
  return y;
}
inline Vec relu_backward(const Vec& x, const Vec& dy) {
  Vec dx(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) dx[i] = x[i] > 0 ? dy[i] : 0.0;
  return dx;
}

}  // namespace ref
