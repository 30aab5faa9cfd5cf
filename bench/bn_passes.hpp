// `bench --bn_passes`: the batch-norm passes alone, in GB/s and as a share of the stream triad
// bandwidth measured in the same run (the passes are memory-bound: that is their roofline).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include <fusedcnn/fusedcnn.hpp>

namespace bench {

// Median seconds of `reps` runs of f after one warm-up run.
template <class F>
double median_seconds(F&& f, int reps = 9) {
  f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Stream triad a = b + s * c over 3 x 48 MiB, counted as 3 arrays moved (GB/s).
inline double triad_gbps() {
  const std::size_t n = std::size_t{12} << 20;
  fusedcnn::Tensor<float, 1> a({n}), b({n}, 1.0f), c({n}, 2.0f);
  const double s = median_seconds([&] {
    float* __restrict pa = a.data();
    const float* __restrict pb = b.data();
    const float* __restrict pc = c.data();
    fusedcnn::detail::parallel_for(64, [&](std::size_t blk) {
      const std::size_t i0 = blk * (n / 64), i1 = i0 + n / 64;
      for (std::size_t i = i0; i < i1; ++i) pa[i] = pb[i] + 3.0f * pc[i];
    });
  }, 5);
  return 3.0 * 4.0 * static_cast<double>(n) / s / 1e9;
}

// Prints GB/s of each pass on resnet-like and few-channel activations.
inline void print_bn_passes() {
  const double triad = triad_gbps();
  std::printf("batch-norm passes, float, %d thread(s); stream triad %.1f GB/s\n", fusedcnn::num_threads(), triad);
  std::printf("%-22s %-16s %9s %8s\n", "pass", "N,H,W,C", "GB/s", "% triad");
  const fusedcnn::Shape<4> shapes[] = {{4, 56, 56, 64}, {4, 28, 28, 128}, {8, 112, 112, 2}, {8, 224, 224, 1}, {4, 64, 64, 8}};
  for (const auto& sh : shapes) {
    const std::size_t C = sh[3], rows = sh[0] * sh[1] * sh[2];
    fusedcnn::Tensor<float> z(sh), dy(sh), y(sh), dz(sh);
    fusedcnn::fill_normal(z, 0.5, 1.0, 1);
    fusedcnn::fill_normal(dy, 0.0, 1.0, 2);
    std::vector<double> mean(C), var(C), sg(C), sgx(C);
    std::vector<float> hi(C, 0.5f), lo(C, 0.0f), a(C, 1.1f), b(C, 0.1f), k1(C, 1.0f), k2(C, 0.1f), k3(C, 0.01f);
    const fusedcnn::ops::BnAffine<float> f{hi.data(), lo.data(), a.data(), b.data()};
    fusedcnn::ops::BnWorkspace ws;
    const fusedcnn::ops::BnGrad<float> grad{dy.data(), &f};
    const double bytes = 4.0 * static_cast<double>(rows * C);
    struct Pass {
      const char* name;
      double arrays;
      std::function<void()> run;
    };
    const Pass passes[] = {
        {"statistics", 1, [&] { fusedcnn::ops::batch_moments(z.data(), rows, C, mean.data(), var.data(), ws); }},
        {"apply (+ReLU)", 2, [&] { fusedcnn::ops::bn_apply(z.data(), rows, C, f, true, y.data()); }},
        {"backward sums (+mask)", 2,
         [&] { fusedcnn::ops::bn_backward_sums(z.data(), grad, rows, C, f, sg.data(), sgx.data(), ws); }},
        {"backward dz (+mask)", 3,
         [&] { fusedcnn::ops::bn_backward_data(z.data(), grad, rows, C, f, k1.data(), k2.data(), k3.data(), dz.data()); }},
    };
    for (const Pass& p : passes) {
      const double gbps = p.arrays * bytes / median_seconds(p.run) / 1e9;
      std::printf("%-22s %-16s %9.1f %8.0f\n", p.name, fusedcnn::detail::shape_str(sh).c_str(), gbps,
                  100.0 * gbps / triad);
    }
  }
}

}  // namespace bench
