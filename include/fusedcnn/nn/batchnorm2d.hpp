// BatchNorm2D: per-channel batch normalisation of NHWC input, with PyTorch's semantics.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "fusedcnn/core/error.hpp"
#include "fusedcnn/core/options.hpp"
#include "fusedcnn/core/tensor.hpp"
#include "fusedcnn/nn/detail.hpp"
#include "fusedcnn/ops/batchnorm.hpp"

namespace fusedcnn {

template <class T>
  requires Scalar<T>
class ConvBN;

// Training mode normalises with the biased batch variance and updates the running statistics
// with the unbiased one; eval mode uses the running statistics (or, without them, the batch's).
// num_batches_tracked() counts training forwards while running statistics are tracked, and is
// 0 without them.
template <class T>
  requires Scalar<T>
class BatchNorm2D {
 public:
  explicit BatchNorm2D(std::size_t channels, const BatchNormOptions& opts = {})
      : c_(channels), opts_(validated(channels, opts)) {
    if (opts_.affine) {
      gamma_ = Tensor<T, 1>({c_}, T{1});
      beta_ = Tensor<T, 1>({c_});
      gamma_grad_ = Tensor<T, 1>({c_});
      beta_grad_ = Tensor<T, 1>({c_});
    }
    if (opts_.track_running_stats) {
      running_mean_ = Tensor<T, 1>({c_});
      running_var_ = Tensor<T, 1>({c_}, T{1});
    }
  }

  Tensor<T> forward(const Tensor<T>& x) {
    Tensor<T> y;
    forward(x, y);
    return y;
  }

  // Writes the normalised x into y (resized only when its shape differs).
  void forward(const Tensor<T>& x, Tensor<T>& y) {
    check_input(x.shape());
    const std::size_t rows = x.size() / c_;
    const detail::SerialScope serial(detail::serial_elements(x.size()));
    ensure_coefficients();
    detail::copy_into(x, z_);
    used_batch_ = uses_batch_stats();
    if (used_batch_) {
      ops::batch_moments(z_.data(), rows, c_, mean_.data(), var_.data(), ws_);
      set_affine(mean_.data(), var_.data());
      if (training_) update_running(mean_.data(), var_.data(), rows);
    } else {
      set_affine_from_running();
    }
    has_cache_ = true;
    detail::ensure_shape(y, x.shape());
    ops::bn_apply(z_.data(), rows, c_, affine(), false, y.data());
  }

  Tensor<T> backward(const Tensor<T>& dy) {
    Tensor<T> dx;
    backward(dy, dx);
    return dx;
  }

  // dx from dy; adds this batch's gamma and beta gradients to weight_grad() / bias_grad().
  void backward(const Tensor<T>& dy, Tensor<T>& dx) {
    if (!has_cache_) detail::throw_no_forward("BatchNorm2D");
    detail::check_dy("BatchNorm2D", dy, z_.shape());
    check_parameters();
    const std::size_t rows = z_.size() / c_;
    const detail::SerialScope serial(detail::serial_elements(z_.size()));
    const ops::BnGrad<T> grad{dy.data()};
    backward_coefficients(grad, rows);
    detail::ensure_shape(dx, z_.shape());  // a no-op when dx is dy: dz overwrites it in place
    ops::bn_backward_data(z_.data(), grad, rows, c_, affine(), k1_.data(), k2_.data(),
                          k3_.data(), dx.data());
  }

  void zero_grad() noexcept {
    if (opts_.affine) {
      gamma_grad_.fill(T{0});
      beta_grad_.fill(T{0});
    }
  }
  void train(bool on = true) noexcept { training_ = on; }
  void eval() noexcept { training_ = false; }
  bool training() const noexcept { return training_; }

  std::size_t num_features() const noexcept { return c_; }
  // Bytes of activation-sized data kept from forward for backward (the input copy).
  std::size_t saved_bytes() const noexcept { return z_.size() * sizeof(T); }
  const BatchNormOptions& options() const noexcept { return opts_; }
  std::int64_t num_batches_tracked() const noexcept { return batches_; }

  Tensor<T, 1>& weight() { return present(gamma_, opts_.affine, "weight", "affine"); }
  const Tensor<T, 1>& weight() const { return present(gamma_, opts_.affine, "weight", "affine"); }
  Tensor<T, 1>& bias() { return present(beta_, opts_.affine, "bias", "affine"); }
  const Tensor<T, 1>& bias() const { return present(beta_, opts_.affine, "bias", "affine"); }
  Tensor<T, 1>& weight_grad() { return present(gamma_grad_, opts_.affine, "weight_grad", "affine"); }
  const Tensor<T, 1>& weight_grad() const {
    return present(gamma_grad_, opts_.affine, "weight_grad", "affine");
  }
  Tensor<T, 1>& bias_grad() { return present(beta_grad_, opts_.affine, "bias_grad", "affine"); }
  const Tensor<T, 1>& bias_grad() const {
    return present(beta_grad_, opts_.affine, "bias_grad", "affine");
  }
  Tensor<T, 1>& running_mean() {
    return present(running_mean_, opts_.track_running_stats, "running_mean", "track_running_stats");
  }
  const Tensor<T, 1>& running_mean() const {
    return present(running_mean_, opts_.track_running_stats, "running_mean", "track_running_stats");
  }
  Tensor<T, 1>& running_var() {
    return present(running_var_, opts_.track_running_stats, "running_var", "track_running_stats");
  }
  const Tensor<T, 1>& running_var() const {
    return present(running_var_, opts_.track_running_stats, "running_var", "track_running_stats");
  }

 private:
  friend class ConvBN<T>;

  static BatchNormOptions validated(std::size_t c, const BatchNormOptions& o) {
    if (c == 0) throw value_error("BatchNorm2D: channels must be >= 1, got 0");
    if (!(o.eps > 0) || !std::isfinite(o.eps))
      throw value_error(detail::cat("BatchNorm2D: eps must be a finite value > 0, got ", o.eps));
    if (o.momentum && !(*o.momentum >= 0 && *o.momentum <= 1))
      throw value_error(detail::cat("BatchNorm2D: momentum must be in [0, 1], got ", *o.momentum));
    return o;
  }

  template <class Tn>
  Tn& present(Tn& t, bool on, const char* name, const char* option) const {
    if (!on)
      throw value_error(detail::cat("BatchNorm2D: ", name, " requested but the layer was built with ",
                                    option, " = false"));
    return t;
  }
  template <class Tn>
  const Tn& present(const Tn& t, bool on, const char* name, const char* option) const {
    return const_cast<BatchNorm2D*>(this)->present(const_cast<Tn&>(t), on, name, option);
  }

  bool uses_batch_stats() const noexcept { return training_ || !opts_.track_running_stats; }

  // Throws before any state changes: channels, empty input, parameter shapes, and a batch
  // with a single value per channel when batch statistics are needed.
  void check_input(const Shape<4>& xs) const {
    for (std::size_t d : xs)
      if (d == 0)
        throw shape_error(detail::cat("BatchNorm2D: input has a zero-sized dimension (input N,H,W,C = ",
                                      detail::shape_str(xs), ")"));
    if (xs[3] != c_)
      throw shape_error(detail::cat("BatchNorm2D: input has ", xs[3], " channels, expected ", c_,
                                    " (input N,H,W,C = ", detail::shape_str(xs), ")"));
    check_parameters();
    if (uses_batch_stats() && xs[0] * xs[1] * xs[2] == 1)
      throw value_error(detail::cat(
          "BatchNorm2D: expected more than 1 value per channel when using batch statistics "
          "(input N,H,W,C = ", detail::shape_str(xs), ")"));
  }

  void check_parameters() const {
    const Shape<1> s{c_};
    if (opts_.affine) {
      detail::check_param("BatchNorm2D", "weight", gamma_, s);
      detail::check_param("BatchNorm2D", "bias", beta_, s);
      detail::check_param("BatchNorm2D", "weight_grad", gamma_grad_, s);
      detail::check_param("BatchNorm2D", "bias_grad", beta_grad_, s);
    }
    if (opts_.track_running_stats) {
      detail::check_param("BatchNorm2D", "running_mean", running_mean_, s);
      detail::check_param("BatchNorm2D", "running_var", running_var_, s);
    }
  }

  T gamma(std::size_t c) const noexcept { return opts_.affine ? gamma_[c] : T{1}; }
  T beta(std::size_t c) const noexcept { return opts_.affine ? beta_[c] : T{0}; }

  void ensure_coefficients() {
    if (a_.size() == c_) return;
    for (auto* t : {&a_, &b_, &mean_hi_, &mean_lo_, &k1_, &k2_, &k3_}) *t = Tensor<T, 1>({c_});
    for (auto* v : {&save_mean_, &save_invstd_, &mean_, &var_, &sum_g_, &sum_gx_}) v->assign(c_, 0.0);
  }

  // Records the statistics this forward normalises with and the affine map they give.
  void set_affine(const double* mean, const double* var) {
    ensure_coefficients();
    for (std::size_t c = 0; c < c_; ++c) {
      save_mean_[c] = mean[c];
      save_invstd_[c] = 1.0 / std::sqrt(var[c] + opts_.eps);
    }
    refresh_affine();
  }
  void set_affine_from_running() {
    ensure_coefficients();
    for (std::size_t c = 0; c < c_; ++c) {
      mean_[c] = static_cast<double>(running_mean_[c]);
      var_[c] = static_cast<double>(running_var_[c]);
    }
    set_affine(mean_.data(), var_.data());
  }
  // a = gamma * invstd and beta from the saved statistics and the current parameters.
  void refresh_affine() {
    ops::split_mean(save_mean_.data(), c_, mean_hi_.data(), mean_lo_.data());
    for (std::size_t c = 0; c < c_; ++c) {
      a_[c] = static_cast<T>(static_cast<double>(gamma(c)) * save_invstd_[c]);
      b_[c] = beta(c);
    }
  }
  ops::BnAffine<T> affine() const noexcept {
    return {mean_hi_.data(), mean_lo_.data(), a_.data(), b_.data()};
  }

  // running = (1 - f) * running + f * batch, unbiased variance; f = momentum, or 1/count.
  void update_running(const double* mean, const double* var, std::size_t rows) {
    if (!opts_.track_running_stats) return;
    ++batches_;
    const double f = opts_.momentum ? *opts_.momentum : 1.0 / static_cast<double>(batches_);
    const double unbias = static_cast<double>(rows) / static_cast<double>(rows - 1);
    for (std::size_t c = 0; c < c_; ++c) {
      running_mean_[c] = static_cast<T>((1 - f) * running_mean_[c] + f * mean[c]);
      running_var_[c] = static_cast<T>((1 - f) * running_var_[c] + f * var[c] * unbias);
    }
  }

  // From the per-channel sums of g and g * (z - mean): accumulates the gamma/beta gradients
  // and sets k1..k3 of dz = k1 g + k2 (z - mean) + k3.
  void backward_coefficients(const ops::BnGrad<T>& grad, std::size_t rows) {
    refresh_affine();  // gamma may have been updated since forward
    ops::bn_backward_sums(z_.data(), grad, rows, c_, affine(), sum_g_.data(),
                          sum_gx_.data(), ws_);
    const bool batch = used_batch_;
    const double M = static_cast<double>(rows);
    for (std::size_t c = 0; c < c_; ++c) {
      const double is = save_invstd_[c], gm = static_cast<double>(gamma(c));
      if (opts_.affine) {
        gamma_grad_[c] += static_cast<T>(sum_gx_[c] * is);
        beta_grad_[c] += static_cast<T>(sum_g_[c]);
      }
      k1_[c] = static_cast<T>(gm * is);
      k2_[c] = batch ? static_cast<T>(-gm * is * is * is * sum_gx_[c] / M) : T{0};
      k3_[c] = batch ? static_cast<T>(-gm * is * sum_g_[c] / M) : T{0};
    }
  }

  std::size_t c_;
  BatchNormOptions opts_;
  Tensor<T, 1> gamma_, beta_, gamma_grad_, beta_grad_, running_mean_, running_var_;
  std::int64_t batches_ = 0;
  bool training_ = true;
  bool has_cache_ = false;
  bool used_batch_ = true;
  Tensor<T> z_;  // the last forward's input
  std::vector<double> save_mean_, save_invstd_, mean_, var_, sum_g_, sum_gx_;
  Tensor<T, 1> a_, b_, mean_hi_, mean_lo_, k1_, k2_, k3_;
  ops::BnWorkspace ws_;
};

}  // namespace fusedcnn
