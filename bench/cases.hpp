// The benchmark suites: named convolution shapes, each one Conv2D -> BatchNorm2D -> ReLU case.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <fusedcnn/fusedcnn.hpp>

namespace bench {

struct Case {
  std::string suite;
  std::size_t n, h, w, c, k;  // batch, input height/width, input/output channels
  std::size_t r, s, p, d;     // square kernel, stride, symmetric padding, dilation

  fusedcnn::Conv2DOptions conv_options() const {
    return {.kernel = {r, r},
            .stride = {s, s},
            .padding = fusedcnn::Padding::symmetric(p, p),
            .dilation = {d, d},
            .groups = 1,
            .bias = true};
  }
  fusedcnn::Shape<4> input_shape() const { return {n, h, w, c}; }
  std::size_t out_extent(std::size_t in) const {
    const std::size_t span = d * (r - 1) + 1;
    return in + 2 * p < span ? 0 : (in + 2 * p - span) / s + 1;
  }
  // The canonical problem string, e.g. n4h56w56c64k64r3s1p1 (d only when dilated).
  std::string name() const {
    std::string out = "n" + std::to_string(n) + "h" + std::to_string(h) + "w" + std::to_string(w) +
                      "c" + std::to_string(c) + "k" + std::to_string(k) + "r" + std::to_string(r) +
                      "s" + std::to_string(s) + "p" + std::to_string(p);
    if (d != 1) out += "d" + std::to_string(d);
    return out;
  }
  double conv_flops() const {
    return 2.0 * static_cast<double>(n * out_extent(h) * out_extent(w) * k * r * r * c);
  }
  // Whether the library runs this forward as Winograd F(2x2, 3x3): its GFLOP/s still count
  // the direct convolution's FLOPs, so they can pass the FMA peak.
  bool winograd() const {
    return fusedcnn::ops::plan_forward<float>(
               fusedcnn::ops::make_geometry(input_shape(), k, conv_options()))
        .by_winograd;
  }
  // Elements of the input plus the conv output: the data volume a pass touches.
  double volume_bytes() const {
    return 4.0 * static_cast<double>(n * h * w * c + n * out_extent(h) * out_extent(w) * k);
  }
};

// A valid random case: the dilated kernel fits, and BN has more than one value per channel.
template <class Draw>
Case draw_case(const std::string& suite, fusedcnn::Rng& rng, Draw&& draw) {
  for (;;) {
    Case c = draw(rng);
    c.suite = suite;
    const std::size_t ho = c.out_extent(c.h), wo = c.out_extent(c.w);
    if (ho && wo && c.n * ho * wo > 1) return c;
  }
}

// Drawn like the original numpy project: tiny channel counts, wide ranges of everything else.
inline std::vector<Case> seed_suite(std::uint64_t seed) {
  fusedcnn::Rng rng(seed);
  std::vector<Case> out;
  for (int i = 0; i < 15; ++i)
    out.push_back(draw_case("seed", rng, [](fusedcnn::Rng& g) {
      return Case{"", g.uniform_int(1, 9), g.uniform_int(1, 223), g.uniform_int(1, 223),
                  g.uniform_int(1, 2), g.uniform_int(1, 2), g.uniform_int(1, 4),
                  g.uniform_int(1, 2), g.uniform_int(0, 4), g.uniform_int(1, 5)};
    }));
  return out;
}

// Mid-sized random layers with 4-128 channels.
inline std::vector<Case> random_suite(std::uint64_t seed) {
  fusedcnn::Rng rng(seed ^ 0x52414E44ull);
  std::vector<Case> out;
  for (int i = 0; i < 15; ++i)
    out.push_back(draw_case("random", rng, [](fusedcnn::Rng& g) {
      const std::size_t r = 2 * g.uniform_int(0, 2) + 1;  // 1, 3, 5
      return Case{"", g.uniform_int(1, 8), g.uniform_int(7, 64), g.uniform_int(7, 64),
                  g.uniform_int(4, 128), g.uniform_int(4, 128), r, g.uniform_int(1, 2),
                  r / 2, 1};
    }));
  return out;
}

inline std::vector<Case> resnet_suite() {
  return {{"resnet", 4, 56, 56, 64, 64, 3, 1, 1, 1},    {"resnet", 4, 56, 56, 64, 256, 1, 1, 0, 1},
          {"resnet", 4, 28, 28, 128, 128, 3, 1, 1, 1},  {"resnet", 4, 14, 14, 256, 256, 3, 1, 1, 1},
          {"resnet", 4, 7, 7, 512, 512, 3, 1, 1, 1},    {"resnet", 4, 224, 224, 3, 64, 7, 2, 3, 1},
          {"resnet", 4, 56, 56, 256, 64, 1, 1, 0, 1}};
}

inline std::vector<Case> small_suite() {
  return {{"small", 8, 112, 112, 2, 2, 3, 1, 1, 1},
          {"small", 8, 224, 224, 1, 2, 3, 1, 1, 1},
          {"small", 4, 64, 64, 8, 8, 3, 1, 1, 1},
          {"small", 4, 128, 128, 16, 16, 3, 1, 1, 1}};
}

}  // namespace bench
