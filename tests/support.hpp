// Shared test helpers: random convolution problems covering every option, tensor fills, and
// the bridge from a library Conv2D to the reference's problem description.
#pragma once

#include <cstddef>
#include <random>
#include <sstream>
#include <string>

#include <fusedcnn/fusedcnn.hpp>

#include "reference/reference.hpp"

namespace support {

using fusedcnn::Conv2DOptions;
using fusedcnn::Padding;

// Fills t with values uniform in [lo, hi) from rng.
template <class T, std::size_t R>
void fill(fusedcnn::Tensor<T, R>& t, std::mt19937_64& rng, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> d(lo, hi);
  for (std::size_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<T>(d(rng));
}

// A random convolution: input shape, channel counts and options, drawn so that 1s and primes
// appear in every dimension and every padding mode, stride, dilation and grouping occurs.
struct ConvCase {
  std::size_t n, h, w, c, k;
  Conv2DOptions opts;

  std::string str() const {
    std::ostringstream os;
    const auto& o = opts;
    os << "x=" << n << "," << h << "," << w << "," << c << " k=" << k << " kernel=" << o.kernel[0]
       << "x" << o.kernel[1] << " stride=" << o.stride[0] << "x" << o.stride[1] << " dil="
       << o.dilation[0] << "x" << o.dilation[1] << " groups=" << o.groups << " bias=" << o.bias
       << " pad=" << int(o.padding.mode) << ":" << o.padding.top << "," << o.padding.bottom << ","
       << o.padding.left << "," << o.padding.right;
    return os.str();
  }

  // The reference's description, with 'same'/'valid' padding resolved.
  ref::Conv problem() const {
    ref::Conv p{n, h, w, c, k, opts.kernel[0], opts.kernel[1]};
    p.sh = opts.stride[0], p.sw = opts.stride[1], p.dh = opts.dilation[0], p.dw = opts.dilation[1];
    p.groups = opts.groups;
    switch (opts.padding.mode) {
      case fusedcnn::PaddingMode::same: {
        auto [t, b] = ref::same_padding(h, p.kh, p.sh, p.dh);
        auto [l, r] = ref::same_padding(w, p.kw, p.sw, p.dw);
        p.pt = t, p.pb = b, p.pl = l, p.pr = r;
        break;
      }
      case fusedcnn::PaddingMode::valid:
        break;
      default:
        p.pt = opts.padding.top, p.pb = opts.padding.bottom;
        p.pl = opts.padding.left, p.pr = opts.padding.right;
    }
    return p;
  }
};

// One of 1, a prime, or a small composite, up to hi.
inline std::size_t pick(std::mt19937_64& rng, std::size_t hi) {
  static constexpr std::size_t values[] = {1, 2, 3, 4, 5, 6, 7, 8, 11, 13, 16, 17};
  std::size_t v;
  do v = values[std::uniform_int_distribution<std::size_t>(0, std::size(values) - 1)(rng)];
  while (v > hi);
  return v;
}

// A random valid convolution case (output at least 1x1), channels up to max_ch per group.
inline ConvCase random_conv(std::mt19937_64& rng, std::size_t max_ch = 8) {
  auto u = [&](std::size_t lo, std::size_t hi) {
    return std::uniform_int_distribution<std::size_t>(lo, hi)(rng);
  };
  for (;;) {
    ConvCase cc;
    Conv2DOptions& o = cc.opts;
    o.kernel = {pick(rng, 5), pick(rng, 5)};
    o.stride = {u(1, 3), u(1, 3)};
    o.dilation = {u(0, 3) == 0 ? u(2, 3) : 1, u(0, 3) == 0 ? u(2, 3) : 1};
    const std::size_t kind = u(0, 9);
    const std::size_t groups = kind == 0 ? 0 /* depthwise */ : kind <= 2 ? u(2, 3) : 1;
    if (groups == 0) {
      cc.c = pick(rng, 13);
      cc.k = cc.c * u(1, 2);
      o.groups = cc.c;
    } else {
      cc.c = groups * pick(rng, max_ch);
      cc.k = groups * pick(rng, max_ch);
      o.groups = groups;
    }
    o.bias = u(0, 3) != 0;
    switch (u(0, 4)) {
      case 0: o.padding = Padding::same(); break;
      case 1: o.padding = Padding::valid(); break;
      case 2: o.padding = Padding{}; break;
      default: o.padding = Padding{u(0, 3), u(0, 3), u(0, 3), u(0, 3)};
    }
    cc.n = u(1, 3);
    cc.h = pick(rng, 13);
    cc.w = pick(rng, 17);
    const ref::Conv p = cc.problem();
    if (p.out_h() >= 1 && p.out_w() >= 1) return cc;
  }
}

// The reference problem of a layer's input shape.
inline ref::Conv problem_of(const ConvCase& cc) { return cc.problem(); }

}  // namespace support
