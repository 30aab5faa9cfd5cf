// One benchmark case set up twice on identical data: the unfused Conv2D -> BatchNorm2D -> ReLU
// chain and the fused ConvBN, with every output buffer preallocated (steady state).
#pragma once

#include <string>

#include <fusedcnn/fusedcnn.hpp>

#include "cases.hpp"

namespace bench {

enum class Mode { infer, train_fwd, train_step };

inline const char* mode_name(Mode m) {
  switch (m) {
    case Mode::infer: return "infer";
    case Mode::train_fwd: return "train_fwd";
    case Mode::train_step: return "train_step";
  }
  return "?";
}

template <class T>
struct Pair {
  Mode mode;
  fusedcnn::Conv2D<T> conv;
  fusedcnn::BatchNorm2D<T> bn;
  fusedcnn::ReLU<T> relu;
  fusedcnn::ConvBN<T> fused;
  fusedcnn::Tensor<T> x, z, y, dy, g, dz, dx, fy, fdx;

  Pair(const Case& c, Mode m, std::uint64_t seed)
      : mode(m), conv(c.c, c.k, c.conv_options()), bn(c.k), fused(make_fused(c, seed)) {
    conv.weight() = fused.conv().weight();
    conv.bias() = fused.conv().bias();
    bn.weight() = fused.bn().weight();
    bn.bias() = fused.bn().bias();
    bn.running_mean() = fused.bn().running_mean();
    bn.running_var() = fused.bn().running_var();
    if (m == Mode::infer) {
      conv.eval();
      bn.eval();
      relu.eval();
      fused.eval();
    }
    x = fusedcnn::Tensor<T>(c.input_shape());
    fusedcnn::fill_uniform(x, -1.0, 1.0, seed + 1);
    run_fused();  // sizes every buffer; the output shape gives dy's
    run_unfused();
    dy = fusedcnn::Tensor<T>(fy.shape());
    fusedcnn::fill_uniform(dy, -1.0, 1.0, seed + 2);
  }

  static fusedcnn::ConvBN<T> make_fused(const Case& c, std::uint64_t seed) {
    fusedcnn::ConvBN<T> f(c.c, c.k, c.conv_options(), {}, fusedcnn::Activation::relu);
    f.conv().reset_parameters(seed);
    fusedcnn::fill_uniform(f.bn().weight(), 0.5, 1.5, seed + 3);
    fusedcnn::fill_uniform(f.bn().bias(), -0.5, 0.5, seed + 4);
    fusedcnn::fill_uniform(f.bn().running_mean(), -0.1, 0.1, seed + 5);
    fusedcnn::fill_uniform(f.bn().running_var(), 0.5, 2.0, seed + 6);
    return f;
  }

  void run_unfused() {
    conv.forward(x, z);
    bn.forward(z, y);
    relu.forward(y, y);  // in place, as an unfused framework would
    if (mode == Mode::train_step && dy.size()) {
      relu.backward(dy, g);
      bn.backward(g, dz);
      conv.backward(dz, dx);
    }
  }

  void run_fused() {
    fused.forward(x, fy);
    if (mode == Mode::train_step && dy.size()) fused.backward(dy, fdx);
  }

  std::size_t unfused_saved_bytes() const {
    return conv.saved_bytes() + bn.saved_bytes() + relu.saved_bytes();
  }
  // Convolution FLOPs of one iteration: forward, plus both gradients in a training step.
  static double flops(const Case& c, Mode m) {
    return c.conv_flops() * (m == Mode::train_step ? 3.0 : 1.0);
  }
};

}  // namespace bench
