// Conv2D: a 2-D convolution layer over NHWC input with HWIO weights and an optional bias.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "fusedcnn/core/error.hpp"
#include "fusedcnn/core/options.hpp"
#include "fusedcnn/core/random.hpp"
#include "fusedcnn/core/tensor.hpp"
#include "fusedcnn/kernels/epilogues.hpp"
#include "fusedcnn/nn/detail.hpp"
#include "fusedcnn/ops/conv2d.hpp"

namespace fusedcnn {

template <class T>
  requires Scalar<T>
class ConvBN;

template <class T>
  requires Scalar<T>
class Conv2D {
 public:
  // Weights and bias start as PyTorch's: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = KH*KW*C_in/groups.
  // Options come by reference: GCC 12 at -O2 with AVX-512 miscompiles a braced designated
  // initializer passed by value here (Conv2D<double>(1, 1, {.kernel = {1, 1}}) got padding 1).
  Conv2D(std::size_t in_channels, std::size_t out_channels, const Conv2DOptions& opts = {})
      : in_(in_channels), out_(out_channels), opts_(validated(in_channels, out_channels, opts)),
        weight_({opts_.kernel[0], opts_.kernel[1], in_ / opts_.groups, out_}),
        weight_grad_(weight_.shape()) {
    if (opts_.bias) {
      bias_ = Tensor<T, 1>({out_});
      bias_grad_ = Tensor<T, 1>({out_});
    }
    reset_parameters(detail::next_init_seed());
  }

  // Re-draws weight and bias from `seed` (PyTorch's default distribution).
  void reset_parameters(std::uint64_t seed) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(weight_.size() / out_));
    fill_uniform(weight_, -bound, bound, seed);
    if (opts_.bias) fill_uniform(bias_, -bound, bound, seed ^ 0xB1A5ull);
  }

  Tensor<T> forward(const Tensor<T>& x) {
    Tensor<T> y;
    forward(x, y);
    return y;
  }

  // Writes the convolution of x into y (resized only when its shape differs).
  void forward(const Tensor<T>& x, Tensor<T>& y) {
    const ops::ConvGeometry g = geometry(x.shape());
    const detail::SerialScope serial(g.serial());
    const T* in = cache_input(x, g, &x == &y);
    detail::ensure_shape(y, g.out_shape());
    run_forward(g, in, y.data());
  }

  Tensor<T> backward(const Tensor<T>& dy) {
    Tensor<T> dx;
    backward(dy, dx);
    return dx;
  }

  // dx from dy; adds this batch's weight and bias gradients to weight_grad() / bias_grad().
  void backward(const Tensor<T>& dy, Tensor<T>& dx) {
    if (!has_cache_) detail::throw_no_forward("Conv2D");
    detail::check_dy("Conv2D", dy, geom_.out_shape());
    check_parameters();
    const detail::SerialScope serial(geom_.serial());
    if (&dy == &dx) {  // dx's resize would free dy under us
      Tensor<T> tmp;
      backward_from_dz(geom_, dy.data(), tmp);
      dx = std::move(tmp);
      return;
    }
    backward_from_dz(geom_, dy.data(), dx);
  }

  void zero_grad() noexcept {
    weight_grad_.fill(T{0});
    if (opts_.bias) bias_grad_.fill(T{0});
  }
  void train(bool on = true) noexcept { training_ = on; }
  void eval() noexcept { training_ = false; }
  bool training() const noexcept { return training_; }

  bool has_bias() const noexcept { return opts_.bias; }
  // Bytes of activation-sized data kept from forward for backward (the input, lent or copied).
  std::size_t saved_bytes() const noexcept { return cached_size() * sizeof(T); }
  std::size_t in_channels() const noexcept { return in_; }
  std::size_t out_channels() const noexcept { return out_; }
  const Conv2DOptions& options() const noexcept { return opts_; }

  Tensor<T>& weight() noexcept { return weight_; }
  const Tensor<T>& weight() const noexcept { return weight_; }
  Tensor<T>& weight_grad() noexcept { return weight_grad_; }
  const Tensor<T>& weight_grad() const noexcept { return weight_grad_; }
  Tensor<T, 1>& bias() { return bias_or_throw(bias_, "bias"); }
  const Tensor<T, 1>& bias() const { return bias_or_throw(bias_, "bias"); }
  Tensor<T, 1>& bias_grad() { return bias_or_throw(bias_grad_, "bias_grad"); }
  const Tensor<T, 1>& bias_grad() const { return bias_or_throw(bias_grad_, "bias_grad"); }

  // Validated geometry for an input of this shape; throws shape_error naming both shapes.
  ops::ConvGeometry geometry(const Shape<4>& xs) const {
    for (std::size_t d : xs)
      if (d == 0)
        throw shape_error(detail::cat("Conv2D: input has a zero-sized dimension (input N,H,W,C = ",
                                      detail::shape_str(xs), ")"));
    if (xs[3] != in_)
      throw shape_error(detail::cat("Conv2D: input has ", xs[3], " channels, weight expects ",
                                    in_, " (input N,H,W,C = ", detail::shape_str(xs), ")"));
    check_parameters();
    const ops::ConvGeometry g = ops::make_geometry(xs, out_, opts_);
    if (g.ho == 0 || g.wo == 0)
      throw shape_error(detail::cat(
          "Conv2D: kernel ", opts_.kernel[0], "x", opts_.kernel[1], " with dilation ",
          opts_.dilation[0], "x", opts_.dilation[1], " does not fit the padded input (input N,H,W,C = ",
          detail::shape_str(xs), ", padding t,b,l,r = ", g.pt, ",", g.pb, ",", g.pl, ",", g.pr,
          "): output size would be <= 0"));
    detail::checked_count<T>(g.out_shape());
    return g;
  }

  // Throws shape_error when a parameter or gradient was replaced by one of another shape.
  void check_parameters() const {
    const Shape<4> ws{opts_.kernel[0], opts_.kernel[1], in_ / opts_.groups, out_};
    detail::check_param("Conv2D", "weight", weight_, ws);
    detail::check_param("Conv2D", "weight_grad", weight_grad_, ws);
    if (opts_.bias) {
      detail::check_param("Conv2D", "bias", bias_, Shape<1>{out_});
      detail::check_param("Conv2D", "bias_grad", bias_grad_, Shape<1>{out_});
    }
  }

 private:
  friend class ConvBN<T>;

  // Seams for ConvBN: the same convolution with ConvBN's epilogues and dz.
  // Packs the (optionally per-output-channel scaled) weights for a forward with this plan.
  void pack_for_forward(const ops::ConvGeometry& g, const ops::ConvPlan& plan, const T* scale) {
    ops::pack_forward_weights(g, plan, weight_.data(), scale, ws_);
  }
  // Keeps what backward needs of x, and returns what the forward reads: x itself, lent
  // (Tensor::lend), so no copy is made unless x is later written or resized through its
  // interface; a forward whose output overwrites x reads a copy made here first. A strided
  // 1x1 layer keeps all of x too: copying the pixels it reads on the forward's pass made its
  // forward up to 1.6x slower on few output channels (8 x 60x27, 97 -> 30, stride 2) and the
  // training step no faster, and the layer before it keeps x anyway in most networks.
  const T* cache_input(const Tensor<T>& x, const ops::ConvGeometry& g, bool x_overwritten) {
    geom_ = g;
    has_cache_ = true;
    if (x_overwritten) {
      x_loan_.reset();
      detail::copy_into(x, x_);
      return x_.data();
    }
    x_loan_ = x.lend();
    x_ = Tensor<T>{};
    return x.data();
  }
  // The cached input's values, and how many there are.
  const T* cached_x() const noexcept { return x_loan_ ? x_loan_->data() : x_.data(); }
  std::size_t cached_size() const noexcept { return x_loan_ ? x_loan_->size() : x_.size(); }
  ops::ConvWorkspace<T>& workspace() noexcept { return ws_; }
  bool has_cache() const noexcept { return has_cache_; }
  const ops::ConvGeometry& cached_geometry() const noexcept { return geom_; }

  // Backward from a ready dz (N,Ho,Wo,K) of the cached forward: grads accumulate, dx written.
  // bias_grad: whether the bias gradient is summed from dz (a caller that knows its sum
  // otherwise adds it itself).
  void backward_from_dz(const ops::ConvGeometry& g, const T* dz, Tensor<T>& dx,
                        bool bias_grad = true) {
    ops::conv2d_backward_weights(g, cached_x(), dz, weight_grad_.data(), ws_);
    if (opts_.bias && bias_grad) ops::conv2d_backward_bias(g, dz, bias_grad_.data(), ws_);
    const ops::ConvPlan plan = ops::plan_backward_data<T>(g);
    ops::pack_backward_data_weights(g, plan, weight_.data(), ws_);
    detail::ensure_shape(dx, g.in_shape());
    ops::conv2d_backward_data(g, plan, dz, dx.data(), ws_);
  }


  // Whether backward_with_dz can run the backward of the cached forward of geometry g.
  bool takes_dz_prologue(const ops::ConvGeometry& g) const noexcept {
    return ops::backward_reads_planar_dz<T>(g);
  }
  // Backward of the cached forward with dz formed by make_dz(p0, np, dst) where the row kernels
  // read it (ops::rows_backward_with_dz): grads accumulate, dx written.
  template <class MakeDz>
  void backward_with_dz(const ops::ConvGeometry& g, MakeDz&& make_dz, Tensor<T>& dx,
                        bool bias_grad = true) {
    ops::rows_backward_with_dz(
        g, cached_x(), weight_.data(), make_dz, weight_grad_.data(),
        opts_.bias && bias_grad ? bias_grad_.data() : nullptr,
        [&] {
          detail::ensure_shape(dx, g.in_shape());
          return dx.data();
        },
        ws_);
  }

  static Conv2DOptions validated(std::size_t in, std::size_t out, const Conv2DOptions& o) {
    auto fail = [](auto... parts) { throw value_error(detail::cat("Conv2D: ", parts...)); };
    if (in == 0 || out == 0) fail("in_channels and out_channels must be >= 1, got ", in, " and ", out);
    if (o.kernel[0] == 0 || o.kernel[1] == 0)
      fail("kernel must be >= 1, got ", o.kernel[0], "x", o.kernel[1]);
    if (o.stride[0] == 0 || o.stride[1] == 0)
      fail("stride must be >= 1, got ", o.stride[0], "x", o.stride[1]);
    if (o.dilation[0] == 0 || o.dilation[1] == 0)
      fail("dilation must be >= 1 (1 is a dense kernel), got ", o.dilation[0], "x", o.dilation[1]);
    if (o.groups == 0 || in % o.groups != 0 || out % o.groups != 0)
      fail("groups = ", o.groups, " must divide in_channels = ", in, " and out_channels = ", out);
    // the packed and partial buffers multiply these; keep every product far from overflow
    detail::checked_count<T>(Shape<4>{o.kernel[0], o.kernel[1], in / o.groups, out});
    return o;
  }

  template <class Tn>
  Tn& bias_or_throw(Tn& t, const char* name) const {
    if (!opts_.bias)
      throw value_error(detail::cat("Conv2D: ", name, " requested but the layer was built with bias = false"));
    return t;
  }
  template <class Tn>
  const Tn& bias_or_throw(const Tn& t, const char* name) const {
    return const_cast<Conv2D*>(this)->bias_or_throw(const_cast<Tn&>(t), name);
  }

  // Packs the weights and runs the plain convolution (plus bias) of x into y.
  void run_forward(const ops::ConvGeometry& g, const T* x, T* y) {
    const ops::ConvPlan plan = ops::plan_forward<T>(g);
    ops::pack_forward_weights(g, plan, weight_.data(), static_cast<const T*>(nullptr), ws_);
    const T* bias = opts_.bias ? bias_.data() : nullptr;
    ops::conv2d_forward(g, plan, x, ws_, kernels::BiasActEpilogue<T, false>{y, g.k, bias});
  }

  std::size_t in_, out_;
  Conv2DOptions opts_;
  Tensor<T> weight_, weight_grad_;
  Tensor<T, 1> bias_, bias_grad_;
  bool training_ = true;
  bool has_cache_ = false;
  // The last forward's input, for the weight gradient: x itself, lent, or a copy in x_.
  std::shared_ptr<const detail::Loan<T>> x_loan_;
  Tensor<T> x_;
  ops::ConvGeometry geom_;
  ops::ConvWorkspace<T> ws_;
};

}  // namespace fusedcnn
