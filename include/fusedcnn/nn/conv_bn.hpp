// ConvBN: the fused Conv2D -> BatchNorm2D (-> ReLU) unit. Same numbers as the three layers
// run one after another, fewer passes over activation-sized memory.
//
// Passes over activation-sized memory (X input, Z conv output, Y output, G upstream grad):
//   batch statistics forward:  conv writes Z and merges per-channel moments from each output
//                              tile while it is hot (no statistics pass); one pass Z -> Y.
//   running statistics forward: BN folded into the packed weights and the bias, ReLU in the
//                              conv epilogue: the conv writes Y and that is all.
//   backward: one pass over G and Z gives sum g and sum g*xhat with the ReLU mask recomputed
//             from Z (no saved mask, no ReLU pass), one pass forms dZ, which feeds both
//             convolution gradients. Where both run through the row kernels (few channels),
//             dZ is formed as their planar dZ is made, a chunk in L1 at a time, and never
//             stored (ops::rows_backward_with_dz). With running statistics, backward first
//             recomputes Z.
// Kept between forward and backward: X (lent by the caller's tensor, see Tensor::lend) and Z
// (the unfused chain also keeps a copy of Z in BN and the ReLU mask); with running
// statistics only X.
#pragma once

#include <cstddef>
#include <string_view>

#include "fusedcnn/core/error.hpp"
#include "fusedcnn/core/options.hpp"
#include "fusedcnn/core/tensor.hpp"
#include "fusedcnn/kernels/epilogues.hpp"
#include "fusedcnn/nn/batchnorm2d.hpp"
#include "fusedcnn/nn/conv2d.hpp"
#include "fusedcnn/nn/detail.hpp"
#include "fusedcnn/ops/batchnorm.hpp"
#include "fusedcnn/ops/conv2d.hpp"

namespace fusedcnn {

template <class T>
  requires Scalar<T>
class ConvBN {
 public:
  ConvBN(std::size_t in_channels, std::size_t out_channels, const Conv2DOptions& conv_opts = {},
         const BatchNormOptions& bn_opts = {}, Activation act = Activation::none)
      : conv_(in_channels, out_channels, conv_opts), bn_(out_channels, bn_opts), act_(act) {}

  // Takes over the layers' parameters, gradients and running statistics, and the BN's mode.
  ConvBN(Conv2D<T> conv, BatchNorm2D<T> bn, Activation act = Activation::none)
      : conv_(checked(std::move(conv), bn)), bn_(std::move(bn)), act_(act) {
    conv_.train(bn_.training());
  }

  Tensor<T> forward(const Tensor<T>& x) {
    Tensor<T> y;
    forward(x, y);
    return y;
  }

  // Writes act(bn(conv(x))) into y (resized only when its shape differs).
  void forward(const Tensor<T>& x, Tensor<T>& y) {
    const ops::ConvGeometry g = conv_.geometry(x.shape());
    bn_.check_input(g.out_shape());
    const detail::SerialScope serial(g.serial());
    bn_.ensure_coefficients();
    bn_.used_batch_ = bn_.uses_batch_stats();
    // The folded forward writes y while it reads x: if they are one tensor, x is copied first.
    // The batch-statistics forward writes y only after its convolution has read x.
    const auto in = conv_.cache_input(x, g, !bn_.used_batch_ && &x == &y);
    if (bn_.used_batch_) {
      forward_batch_stats(g, in, y);
    } else {
      forward_folded(g, in, y);
    }
    bn_.has_cache_ = true;
  }

  Tensor<T> backward(const Tensor<T>& dy) {
    Tensor<T> dx;
    backward(dy, dx);
    return dx;
  }

  // dx from dy; adds the parameter gradients of the conv and the BN, exactly as the chain.
  void backward(const Tensor<T>& dy, Tensor<T>& dx) {
    if (!conv_.has_cache() || !bn_.has_cache_) detail::throw_no_forward("ConvBN");
    const ops::ConvGeometry& g = conv_.cached_geometry();
    detail::check_dy("ConvBN", dy, g.out_shape());
    conv_.check_parameters();
    bn_.check_parameters();
    const detail::SerialScope serial(g.serial());
    if (!z_valid_) recompute_z(g);
    const std::size_t rows = g.pixels();
    const ops::BnAffine<T> f = bn_.affine();
    const ops::BnGrad<T> grad{dy.data(), act_ == Activation::relu ? &f : nullptr};
    bn_.backward_coefficients(grad, rows);
    const ops::BnAffine<T> centre = bn_.affine();  // refreshed: gamma may have changed
    // The conv bias gradient, the sum of dz = k1 g + k2 (z - mean) + k3 over the M pixels,
    // comes from the BN's sums: k1 sum(g) + M k3, since sum(z - mean) is zero with batch
    // statistics and k2 is zero without. No pass over dz sums it.
    if (conv_.has_bias()) {
      T* db = conv_.bias_grad().data();
      const double M = static_cast<double>(rows);
      for (std::size_t k = 0; k < g.k; ++k)
        db[k] += static_cast<T>(static_cast<double>(bn_.k1_[k]) * bn_.sum_g_[k] +
                                M * static_cast<double>(bn_.k3_[k]));
    }
    if (conv_.takes_dz_prologue(g)) {  // dz formed where the row kernels read it, never stored
      const ops::BnDz<T> form(grad.relu_of, g.k, centre, bn_.k1_.data(), bn_.k2_.data(),
                              bn_.k3_.data());
      auto make_dz = [&](std::size_t p0, std::size_t np, T* dst) {
        form(bn_.z_.data() + p0 * g.k, dy.data() + p0 * g.k, np, dst);
      };
      // dy is read before dx is written: dx may be dy
      conv_.backward_with_dz(g, make_dz, dx, false);
      return;
    }
    // dz takes Z's place: Z is read for the last time here, so dz needs no buffer of its own
    // and its stores hit the lines just read (a backward again without a forward in between
    // computes Z anew).
    T* dz = bn_.z_.data();
    ops::bn_backward_data(static_cast<const T*>(dz), grad, rows, g.k, centre, bn_.k1_.data(),
                          bn_.k2_.data(), bn_.k3_.data(), dz);
    z_valid_ = false;
    conv_.backward_from_dz(g, dz, dx, false);  // dy is no longer read: dx may be dy
  }

  void zero_grad() noexcept {
    conv_.zero_grad();
    bn_.zero_grad();
  }
  void train(bool on = true) noexcept {
    conv_.train(on);
    bn_.train(on);
  }
  void eval() noexcept { train(false); }
  bool training() const noexcept { return bn_.training(); }

  Conv2D<T>& conv() noexcept { return conv_; }
  const Conv2D<T>& conv() const noexcept { return conv_; }
  BatchNorm2D<T>& bn() noexcept { return bn_; }
  const BatchNorm2D<T>& bn() const noexcept { return bn_; }
  Activation activation() const noexcept { return act_; }

  // Which computation the last forward ran, for reports and tests.
  std::string_view path() const noexcept { return path_; }

  // Bytes of activation-sized data kept from forward for backward.
  std::size_t saved_bytes() const noexcept {
    return (conv_.cached_size() + (z_valid_ ? bn_.z_.size() : 0)) * sizeof(T);
  }

 private:
  static Conv2D<T> checked(Conv2D<T>&& conv, const BatchNorm2D<T>& bn) {
    if (conv.out_channels() != bn.num_features())
      throw shape_error(detail::cat("ConvBN: conv has ", conv.out_channels(),
                                    " output channels, bn has ", bn.num_features(),
                                    " channels (conv weight KH,KW,I,O = ",
                                    detail::shape_str(conv.weight().shape()), ")"));
    return std::move(conv);
  }

  // Batch statistics: the conv epilogue stores Z into the BN's cache and accumulates shifted
  // per-chunk sums; then the chunks are merged in order, running statistics updated, Z -> Y.
  void forward_batch_stats(const ops::ConvGeometry& g, const T* in, Tensor<T>& y) {
    const ops::ConvPlan plan = ops::plan_forward<T>(g);
    const std::size_t K = g.k, rows = g.pixels();
    const std::size_t chunks = plan.chunks, chunk_rows = plan.chunk_rows;
    double* slots = conv_with_stats(g, plan, in);

    // Each chunk's (shift, sum d, sum d^2) becomes its mean and M2 in place, then the chunks
    // are merged in order (Chan) into chunk 0's.
    for (std::size_t c = 0; c < chunks; ++c) {
      const double nc = static_cast<double>(std::min(rows, (c + 1) * chunk_rows) - c * chunk_rows);
      double* sh = slots + c * 3 * K;
      for (std::size_t k = 0; k < K; ++k) {
        const double s1 = sh[K + k], s2 = sh[2 * K + k];
        sh[k] += s1 / nc;                                  // mean
        sh[K + k] = std::max(s2 - s1 * s1 / nc, 0.0);      // M2
      }
    }
    double* mean = bn_.mean_.data();
    double* var = bn_.var_.data();
    std::copy_n(slots, K, mean);
    double* m2 = slots + K;
    double n = static_cast<double>(std::min(rows, chunk_rows));
    for (std::size_t c = 1; c < chunks; ++c) {
      const double nb = static_cast<double>(std::min(rows, (c + 1) * chunk_rows) - c * chunk_rows);
      ops::Moments::merge(n, mean, m2, nb, slots + c * 3 * K, slots + c * 3 * K + K, K);
      n += nb;
    }
    for (std::size_t c = 0; c < K; ++c) var[c] = m2[c] / n;
    if (bn_.training_) bn_.update_running(mean, var, rows);
    bn_.set_affine(mean, var);

    detail::ensure_shape(y, g.out_shape());
    ops::bn_apply(bn_.z_.data(), rows, K, bn_.affine(), act_ == Activation::relu, y.data());
    path_ = "fused: batch statistics in the conv epilogue";
  }

  // Z into the BN's cache through the statistics epilogue, each chunk's shifted sums into
  // slots_, which it returns.
  double* conv_with_stats(const ops::ConvGeometry& g, const ops::ConvPlan& plan, const T* in) {
    const std::size_t K = g.k, chunks = plan.chunks;
    if (slots_.size() < chunks * 3 * K) slots_ = Tensor<double, 1>({chunks * 3 * K});
    if (chunk_shifts_.size() < chunks * K) chunk_shifts_ = Tensor<T, 1>({chunks * K});
    double* slots = slots_.data();
    std::fill_n(slots, chunks * 3 * K, 0.0);
    detail::ensure_shape(bn_.z_, g.out_shape());
    conv_.pack_for_forward(g, plan, nullptr);
    const T* bias = conv_.has_bias() ? conv_.bias().data() : nullptr;
    kernels::BiasStatsEpilogue<T> stats{bn_.z_.data(), K, bias, slots, chunk_shifts_.data()};
    ops::conv2d_forward(g, plan, in, conv_.workspace(), stats);
    z_valid_ = true;
    return slots;
  }

  // Running statistics: y = act(conv(x; W * a) + (bias - mean) * a + beta), one pass.
  void forward_folded(const ops::ConvGeometry& g, const T* in, Tensor<T>& y) {
    bn_.set_affine_from_running();
    const std::size_t K = g.k;
    shift_.resize({K});
    const ops::BnAffine<T> f = bn_.affine();
    for (std::size_t k = 0; k < K; ++k) {
      const T b = conv_.has_bias() ? conv_.bias()[k] : T{0};
      shift_[k] = f(b, k);  // (b - mean) * a + beta
    }
    const ops::ConvPlan plan = ops::plan_forward<T>(g);
    conv_.pack_for_forward(g, plan, bn_.a_.data());
    z_valid_ = false;
    detail::ensure_shape(y, g.out_shape());
    if (act_ == Activation::relu) {
      ops::conv2d_forward(g, plan, in, conv_.workspace(),
                          kernels::BiasActEpilogue<T, true>{y.data(), K, shift_.data()});
    } else {
      ops::conv2d_forward(g, plan, in, conv_.workspace(),
                          kernels::BiasActEpilogue<T, false>{y.data(), K, shift_.data()});
    }
    path_ = "fused: BN folded into the conv weights";
  }

  // The backward needs Z, which the folded forward never wrote and a backward without the
  // dz prologue leaves as dz: it is computed again from the cached input (and the current
  // weights). After a batch-statistics forward, through the same epilogue, so that Z comes
  // out bit for bit as that forward wrote it (its sums are not used).
  void recompute_z(const ops::ConvGeometry& g) {
    if (bn_.used_batch_) {
      conv_with_stats(g, ops::plan_forward<T>(g), conv_.cached_x());
      return;
    }
    detail::ensure_shape(bn_.z_, g.out_shape());
    conv_.run_forward(g, conv_.cached_x(), bn_.z_.data());
    z_valid_ = true;
  }

  Conv2D<T> conv_;
  BatchNorm2D<T> bn_;
  Activation act_;
  bool z_valid_ = false;  // bn_.z_ holds the last forward's Z (not dz)
  Tensor<double, 1> slots_;
  Tensor<T, 1> chunk_shifts_;  // the statistics epilogue's shifts, as T
  Tensor<T, 1> shift_;
  std::string_view path_ = "none";
};

// Inference-time folding of the BN's running statistics into the conv's weights and bias
// (PyTorch's fuse_conv_bn_eval). Works whatever the BN's mode; the result has a bias and
// starts in eval mode.
template <class T>
Conv2D<T> fold(const Conv2D<T>& conv, const BatchNorm2D<T>& bn) {
  if (!bn.options().track_running_stats)
    throw value_error("fold: the BatchNorm2D has no running statistics (track_running_stats = false)");
  if (conv.out_channels() != bn.num_features())
    throw shape_error(detail::cat("fold: conv has ", conv.out_channels(), " output channels, bn has ",
                                  bn.num_features()));
  conv.check_parameters();
  Conv2DOptions opts = conv.options();
  opts.bias = true;
  Conv2D<T> out(conv.in_channels(), conv.out_channels(), opts);
  const std::size_t K = conv.out_channels();
  const bool affine = bn.options().affine;
  const Tensor<T, 1>& rm = bn.running_mean();
  const Tensor<T, 1>& rv = bn.running_var();
  const T* w = conv.weight().data();
  T* fw = out.weight().data();
  const std::size_t rowsw = conv.weight().size() / K;
  for (std::size_t k = 0; k < K; ++k) {
    const double gamma = affine ? static_cast<double>(bn.weight()[k]) : 1.0;
    const double beta = affine ? static_cast<double>(bn.bias()[k]) : 0.0;
    const double a = gamma / std::sqrt(static_cast<double>(rv[k]) + bn.options().eps);
    const double b = conv.has_bias() ? static_cast<double>(conv.bias()[k]) : 0.0;
    for (std::size_t r = 0; r < rowsw; ++r)
      fw[r * K + k] = static_cast<T>(static_cast<double>(w[r * K + k]) * a);
    out.bias()[k] = static_cast<T>((b - static_cast<double>(rm[k])) * a + beta);
  }
  out.eval();
  return out;
}

}  // namespace fusedcnn
