// Central finite-difference gradient checks in double for every parameter and input of
// Conv2D, BatchNorm2D, ReLU and ConvBN, with the loss L = sum(r * y) for a fixed random r.
#include <catch2/catch.hpp>

#include <functional>

#include <fusedcnn/fusedcnn.hpp>

#include "support.hpp"

using fusedcnn::Tensor;

namespace {

// Compares analytic gradient g of loss() with respect to every element of p against central
// differences; the layer's state must not depend on how often loss() runs (eval-mode BN, or
// running statistics restored by loss()).
template <std::size_t R>
void check_grad(const char* what, Tensor<double, R>& p, const Tensor<double, R>& g,
                const std::function<double()>& loss) {
  INFO(what);
  const double h = 1e-6;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double saved = p.data()[i];
    p.data()[i] = saved + h;
    const double up = loss();
    p.data()[i] = saved - h;
    const double down = loss();
    p.data()[i] = saved;
    const double fd = (up - down) / (2 * h);
    INFO("element " << i << ": analytic " << g.data()[i] << ", finite difference " << fd);
    REQUIRE(std::abs(g.data()[i] - fd) <= 1e-6 * (1 + std::abs(fd)));
  }
}

// sum(r * y)
double dot(const Tensor<double>& r, const Tensor<double>& y) {
  double s = 0;
  for (std::size_t i = 0; i < y.size(); ++i) s += r.data()[i] * y.data()[i];
  return s;
}

}  // namespace

TEST_CASE("Conv2D gradients match finite differences", "[gradcheck][conv2d]") {
  std::mt19937_64 rng(31);
  for (int i = 0; i < 6; ++i) {
    support::ConvCase cc = support::random_conv(rng, 3);
    cc.n = std::min<std::size_t>(cc.n, 2), cc.h = std::min<std::size_t>(cc.h, 7), cc.w = std::min<std::size_t>(cc.w, 7);
    if (cc.problem().out_h() < 1 || cc.problem().out_w() < 1) continue;
    INFO(cc.str());
    fusedcnn::Conv2D<double> conv(cc.c, cc.k, cc.opts);
    Tensor<double> x({cc.n, cc.h, cc.w, cc.c});
    support::fill(x, rng);
    const Tensor<double> y0 = conv.forward(x);
    Tensor<double> r(y0.shape());
    support::fill(r, rng);
    const Tensor<double> dx = conv.backward(r);
    auto loss = [&] { return dot(r, conv.forward(x)); };
    check_grad("x", x, dx, loss);
    check_grad("weight", conv.weight(), conv.weight_grad(), loss);
    if (cc.opts.bias) check_grad("bias", conv.bias(), conv.bias_grad(), loss);
  }
}

TEST_CASE("BatchNorm2D gradients match finite differences", "[gradcheck][batchnorm]") {
  std::mt19937_64 rng(37);
  for (const bool affine : {true, false})
    for (const bool training : {true, false}) {
      INFO("affine " << affine << " training " << training);
      fusedcnn::BatchNormOptions o;
      o.affine = affine;
      fusedcnn::BatchNorm2D<double> bn(3, o);
      support::fill(bn.running_mean(), rng);
      support::fill(bn.running_var(), rng, 0.5, 1.5);
      if (affine) support::fill(bn.weight(), rng, 0.5, 1.5), support::fill(bn.bias(), rng);
      bn.train(training);
      Tensor<double> x({2, 3, 2, 3});
      support::fill(x, rng, -2, 2);
      const Tensor<double> y0 = bn.forward(x);
      Tensor<double> r(y0.shape());
      support::fill(r, rng);
      const Tensor<double> dx = bn.backward(r);
      const Tensor<double, 1> rm = bn.running_mean(), rv = bn.running_var();
      auto loss = [&] {
        const double l = dot(r, bn.forward(x));
        bn.running_mean() = rm, bn.running_var() = rv;  // a training forward moves them
        return l;
      };
      check_grad("x", x, dx, loss);
      if (affine) {
        check_grad("gamma", bn.weight(), bn.weight_grad(), loss);
        check_grad("beta", bn.bias(), bn.bias_grad(), loss);
      }
    }
}

TEST_CASE("ReLU gradient matches finite differences away from 0", "[gradcheck][relu]") {
  std::mt19937_64 rng(41);
  Tensor<double> x({1, 3, 3, 2});
  support::fill(x, rng);
  for (std::size_t i = 0; i < x.size(); ++i)
    if (std::abs(x.data()[i]) < 0.05) x.data()[i] = 0.5;
  fusedcnn::ReLU<double> relu;
  const Tensor<double> y0 = relu.forward(x);
  Tensor<double> r(y0.shape());
  support::fill(r, rng);
  const Tensor<double> dx = relu.backward(r);
  check_grad("x", x, dx, [&] { return dot(r, relu.forward(x)); });
}

TEST_CASE("ConvBN gradients match finite differences", "[gradcheck][conv_bn]") {
  std::mt19937_64 rng(43);
  for (const bool training : {true, false})
    for (const auto act : {fusedcnn::Activation::none, fusedcnn::Activation::relu}) {
      INFO("training " << training << " relu " << (act == fusedcnn::Activation::relu));
      fusedcnn::Conv2DOptions co;
      co.padding = fusedcnn::Padding::same();
      co.stride = {2, 1};
      fusedcnn::ConvBN<double> f(2, 3, co, {}, act);
      support::fill(f.bn().running_var(), rng, 0.5, 1.5);
      support::fill(f.bn().weight(), rng, 0.5, 1.5);
      support::fill(f.bn().bias(), rng);
      f.train(training);
      Tensor<double> x({2, 5, 4, 2});
      support::fill(x, rng);
      const Tensor<double> y0 = f.forward(x);
      Tensor<double> r(y0.shape());
      support::fill(r, rng);
      const Tensor<double> dx = f.backward(r);
      const Tensor<double, 1> rm = f.bn().running_mean(), rv = f.bn().running_var();
      auto loss = [&] {
        const double l = dot(r, f.forward(x));
        f.bn().running_mean() = rm, f.bn().running_var() = rv;
        return l;
      };
      check_grad("x", x, dx, loss);
      check_grad("conv weight", f.conv().weight(), f.conv().weight_grad(), loss);
      check_grad("bn gamma", f.bn().weight(), f.bn().weight_grad(), loss);
      check_grad("bn beta", f.bn().bias(), f.bn().bias_grad(), loss);
      if (!training) check_grad("conv bias", f.conv().bias(), f.conv().bias_grad(), loss);
    }
}
