// Results are bitwise identical with 1, 2 and 3 threads: every reduction runs over fixed
// chunks merged in a fixed order.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include <fusedcnn/fusedcnn.hpp>

#include "support.hpp"

namespace {

// Every output, input gradient, parameter gradient and running statistic of one training
// step (and one eval step) of a ConvBN and of the unfused layers, as raw bytes.
std::vector<unsigned char> run(const support::ConvCase& cc, int threads) {
  fusedcnn::set_num_threads(threads);
  std::vector<unsigned char> bytes;
  auto keep = [&](const auto& t) {
    const auto* p = reinterpret_cast<const unsigned char*>(t.data());
    bytes.insert(bytes.end(), p, p + t.size() * sizeof(*t.data()));
  };
  std::mt19937_64 rng(1234);
  fusedcnn::Tensor<float> x({cc.n, cc.h, cc.w, cc.c});
  support::fill(x, rng);
  fusedcnn::Conv2D<float> conv(cc.c, cc.k, cc.opts);
  fusedcnn::fill_uniform(conv.weight(), -0.5, 0.5, 99);  // init draws differ per layer built
  fusedcnn::fill_uniform(conv.bias(), -0.5, 0.5, 98);
  fusedcnn::BatchNorm2D<float> bn(cc.k);
  fusedcnn::ReLU<float> relu;
  fusedcnn::ConvBN<float> fused(conv, bn, fusedcnn::Activation::relu);
  for (const bool training : {true, false}) {
    fused.train(training);
    conv.train(training), bn.train(training);
    const auto y = fused.forward(x);
    const auto yc = relu.forward(bn.forward(conv.forward(x)));
    fusedcnn::Tensor<float> dy(y.shape());
    support::fill(dy, rng);
    keep(y), keep(yc);
    keep(fused.backward(dy));
    keep(conv.backward(bn.backward(relu.backward(dy))));
    keep(fused.conv().weight_grad()), keep(fused.conv().bias_grad());
    keep(fused.bn().weight_grad()), keep(fused.bn().running_var()), keep(fused.bn().running_mean());
    keep(conv.weight_grad()), keep(bn.weight_grad()), keep(bn.running_var());
  }
  return bytes;
}

}  // namespace

TEST_CASE("every op gives the same bits with 1, 2 and 3 threads", "[threads][determinism]") {
  const int saved = fusedcnn::num_threads();
  auto conv_case = [](std::size_t n, std::size_t h, std::size_t c, std::size_t k, std::size_t kernel,
                      std::size_t groups) {
    fusedcnn::Conv2DOptions o;
    o.kernel = {kernel, kernel};
    o.padding = fusedcnn::Padding::same();
    o.groups = groups;
    return support::ConvCase{n, h, h, c, k, o};
  };
  // The Winograd family, igemm with many chunks, a pointwise GEMM, depthwise, the row family,
  // grouped, the strips and transposed weight-gradient tiles, the 8-channel row tile, and many
  // output channels on few pixels (column blocks and output-channel parts as work items), and
  // few output channels on many input channels (the dot tile), and the Winograd family with
  // its weights transformed panel by panel (two chunks). Each is above the size under which
  // layers run on one thread (detail::serial_work_limit), so that every pass really is split.
  const support::ConvCase cases[] = {
      conv_case(2, 40, 32, 48, 3, 1), conv_case(2, 30, 32, 48, 5, 1),
      conv_case(2, 36, 40, 24, 1, 1),
      conv_case(2, 64, 16, 16, 3, 16), conv_case(2, 150, 2, 2, 3, 1),
      conv_case(3, 60, 6, 9, 3, 3),    conv_case(2, 30, 16, 16, 3, 1),
      conv_case(2, 48, 8, 8, 3, 1),    conv_case(2, 5, 96, 200, 3, 1),
      conv_case(3, 24, 40, 6, 3, 1),   {8, 8, 5, 384, 72, conv_case(1, 1, 1, 1, 3, 1).opts}};
  for (const auto& cc : cases)
    REQUIRE_FALSE(fusedcnn::ops::make_geometry({cc.n, cc.h, cc.w, cc.c}, cc.k, cc.opts).serial());
  for (const auto& cc : cases) {
    INFO(cc.str());
    const auto one = run(cc, 1);
    const auto two = run(cc, 2);
    const auto three = run(cc, 3);
    REQUIRE(one.size() == two.size());
    REQUIRE(one.size() == three.size());
    CHECK(std::memcmp(one.data(), two.data(), one.size()) == 0);
    CHECK(std::memcmp(one.data(), three.data(), one.size()) == 0);
  }
  fusedcnn::set_num_threads(saved);
}

TEST_CASE("layers called from the caller's own parallel region", "[threads]") {
  // Each thread of a caller's team (more threads than fusedcnn is set to use) runs its own
  // layer: passes then run serially on that thread, with scratch for one thread, and give
  // the same bits as a call from outside any parallel region.
  const int saved = fusedcnn::num_threads();
  fusedcnn::set_num_threads(2);
  fusedcnn::Conv2DOptions o;
  o.kernel = {3, 3};
  o.padding = fusedcnn::Padding::same();
  std::mt19937_64 rng(77);
  fusedcnn::Tensor<float> x({2, 40, 40, 32});
  support::fill(x, rng);
  auto run = [&] {
    fusedcnn::ConvBN<float> unit(32, 48, o, {}, fusedcnn::Activation::relu);
    fusedcnn::fill_uniform(unit.conv().weight(), -0.5, 0.5, 5);  // init draws differ per layer
    fusedcnn::fill_uniform(unit.conv().bias(), -0.5, 0.5, 6);
    fusedcnn::Tensor<float> y = unit.forward(x);
    fusedcnn::Tensor<float> dx = unit.backward(y);
    return std::vector<fusedcnn::Tensor<float>>{y, dx, unit.conv().weight_grad()};
  };
  const auto expected = run();
  constexpr int team = 4;
  std::vector<std::vector<fusedcnn::Tensor<float>>> got(team);
  std::vector<std::size_t> index(team), bound(team);  // per-thread scratch slot and count
#if defined(_OPENMP)
#pragma omp parallel for num_threads(team) schedule(static, 1)
#endif
  for (int i = 0; i < team; ++i) {
    const auto u = static_cast<std::size_t>(i);
    index[u] = fusedcnn::detail::thread_index();
    bound[u] = fusedcnn::detail::max_threads();
    got[u] = run();
  }
  for (int i = 0; i < team; ++i) CHECK(index[i] < bound[i]);
  for (const auto& g : got) {
    REQUIRE(g.size() == expected.size());
    for (std::size_t t = 0; t < g.size(); ++t) {
      REQUIRE(g[t].size() == expected[t].size());
      CHECK(std::memcmp(g[t].data(), expected[t].data(), g[t].size() * sizeof(float)) == 0);
    }
  }
  fusedcnn::set_num_threads(saved);
}
