// BatchNorm2D against the naive double reference: every option, several steps, both modes.
#include <catch2/catch.hpp>

#include <fusedcnn/fusedcnn.hpp>

#include "reference/reference.hpp"
#include "support.hpp"

using fusedcnn::BatchNorm2D;
using fusedcnn::BatchNormOptions;
using fusedcnn::Tensor;

namespace {
template <class T>
constexpr double tol() {
  return sizeof(T) == 4 ? 1e-5 : 1e-12;
}

// Random options: affine, tracking, momentum (incl. cumulative), eps.
BatchNormOptions random_options(std::mt19937_64& rng) {
  auto u = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  BatchNormOptions o;
  o.eps = u(0, 2) == 0 ? 1e-3 : 1e-5;
  const int m = u(0, 4);
  o.momentum = m == 0 ? std::optional<double>{} : m == 1 ? 1.0 : m == 2 ? 0.0 : 0.1 * m;
  o.affine = u(0, 3) != 0;
  o.track_running_stats = u(0, 4) != 0;
  return o;
}
}  // namespace

TEMPLATE_TEST_CASE("BatchNorm2D matches the reference on 200 random cases", "[batchnorm][random]",
                   float, double) {
  std::mt19937_64 rng(sizeof(TestType) == 4 ? 303 : 404);
  double worst = 0;
  for (int i = 0; i < 200; ++i) {
    const BatchNormOptions o = random_options(rng);
    const std::size_t n = support::pick(rng, 5), h = support::pick(rng, 7), w = support::pick(rng, 11);
    const std::size_t C = support::pick(rng, 17);
    if (n * h * w < 2) continue;  // one value per channel: refused in training (tested elsewhere)
    INFO("case " << i << ": x=" << n << "," << h << "," << w << "," << C << " eps=" << o.eps
                 << " momentum=" << (o.momentum ? *o.momentum : -1.0) << " affine=" << o.affine
                 << " track=" << o.track_running_stats);
    BatchNorm2D<TestType> bn(C, o);
    ref::BnState s;
    s.eps = o.eps, s.momentum = o.momentum, s.track = o.track_running_stats;
    if (o.affine) {
      support::fill(bn.weight(), rng, 0.5, 1.5);
      support::fill(bn.bias(), rng);
      s.gamma = ref::to_vec(bn.weight()), s.beta = ref::to_vec(bn.bias());
    }
    if (o.track_running_stats) {
      support::fill(bn.running_mean(), rng);
      support::fill(bn.running_var(), rng, 0.5, 2);
      s.running_mean = ref::to_vec(bn.running_mean()), s.running_var = ref::to_vec(bn.running_var());
    }
    const int steps = 1 + i % 3;
    ref::Vec gamma_grad(C, 0.0), beta_grad(C, 0.0), gamma_scale(C, 0.0), beta_scale(C, 0.0);
    for (int step = 0; step <= steps; ++step) {
      const bool training = step < steps;  // the last step runs in eval mode
      bn.train(training);
      Tensor<TestType> x({n, h, w, C});
      support::fill(x, rng, -2, 3);
      ref::BnCache cache;
      const ref::Vec yr = ref::bn_forward(s, ref::to_vec(x), C, training, cache);
      Tensor<TestType> y, dx;
      if (step % 2) {
        bn.forward(x, y);
      } else {
        y = bn.forward(x);
      }
      Tensor<TestType> dy(y.shape());
      support::fill(dy, rng);
      const ref::BnGrads g = ref::bn_backward(s, cache, ref::to_vec(dy), C);
      bn.backward(dy, dx);
      const double ey = ref::rel_err(y, yr), edx = ref::rel_err(dx, g.dz);
      CHECK(ey <= tol<TestType>());
      CHECK(edx <= tol<TestType>());
      worst = std::max({worst, ey, edx});
      if (o.affine) {
        for (std::size_t c = 0; c < C; ++c) {
          gamma_grad[c] += g.dgamma[c], beta_grad[c] += g.dbeta[c];
          gamma_scale[c] += g.dgamma_abs[c], beta_scale[c] += g.dbeta_abs[c];
        }
        // sums over pixels whose terms may cancel: error relative to the terms' magnitudes
        CHECK(ref::close_to_sum(bn.weight_grad(), gamma_grad, gamma_scale, tol<TestType>()));
        CHECK(ref::close_to_sum(bn.bias_grad(), beta_grad, beta_scale, tol<TestType>()));
      }
      if (o.track_running_stats) {
        CHECK(ref::rel_err(bn.running_mean(), s.running_mean) <= tol<TestType>());
        CHECK(ref::rel_err(bn.running_var(), s.running_var) <= tol<TestType>());
        CHECK(bn.num_batches_tracked() == s.num_batches_tracked);
      }
    }
  }
  WARN("BatchNorm2D<" << (sizeof(TestType) == 4 ? "float" : "double") << "> worst relative error " << worst);
}

TEST_CASE("BatchNorm2D keeps the variance of a channel with mean 1e4 and std 1 in float",
          "[batchnorm][numerics]") {
  // momentum 1 makes running_var the unbiased batch variance, so it can be read directly.
  BatchNormOptions o;
  o.momentum = 1.0;
  BatchNorm2D<float> bn(3, o);
  std::mt19937_64 rng(5);
  std::normal_distribution<double> nd;
  const double means[3] = {1e4, -3e4, 0.0}, stds[3] = {1.0, 0.5, 1e-2};
  Tensor<float> x({4, 33, 31, 3});
  ref::Vec xr(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    x.data()[i] = static_cast<float>(means[i % 3] + stds[i % 3] * nd(rng));
    xr[i] = x.data()[i];  // the reference sees exactly the float inputs
  }
  const Tensor<float> y = bn.forward(x);
  ref::Vec mean, var;
  ref::moments(xr, 3, mean, var);
  const double rows = static_cast<double>(x.size() / 3);
  for (std::size_t c = 0; c < 3; ++c) {
    INFO("channel " << c);
    const double unbiased = var[c] * rows / (rows - 1);
    CHECK(std::abs(bn.running_var()[c] - unbiased) / unbiased <= 1e-6);
    CHECK(std::abs(bn.running_mean()[c] - mean[c]) <= 1e-6 * std::abs(mean[c]) + 1e-6);
    // the normalised output has mean 0 and variance var / (var + eps) to float precision
    double s = 0, s2 = 0;
    for (std::size_t i = c; i < y.size(); i += 3) s += y.data()[i], s2 += double(y.data()[i]) * y.data()[i];
    CHECK(std::abs(s / rows) <= 1e-4);
    CHECK(std::abs(s2 / rows - var[c] / (var[c] + 1e-5)) <= 1e-4);
  }
}
