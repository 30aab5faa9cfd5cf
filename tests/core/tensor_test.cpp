// Tensor, TensorView and the caching allocator.
#include <catch2/catch.hpp>

#include <cstdint>
#include <thread>
#include <vector>

#include <fusedcnn/fusedcnn.hpp>

using fusedcnn::Tensor;
using fusedcnn::TensorView;

TEST_CASE("Tensor construction, fill, access and alignment", "[tensor]") {
  Tensor<float> z({2, 3, 4, 5});
  CHECK(z.size() == 120);
  CHECK(z.shape() == fusedcnn::Shape<4>{2, 3, 4, 5});
  CHECK(reinterpret_cast<std::uintptr_t>(z.data()) % 64 == 0);
  for (std::size_t i = 0; i < z.size(); ++i) REQUIRE(z[i] == 0.0f);
  Tensor<double> y({2, 3, 4, 5}, 1.5);
  for (std::size_t i = 0; i < y.size(); ++i) REQUIRE(y[i] == 1.5);
  y(1, 2, 3, 4) = 7.0;  // row-major: the last element
  CHECK(y[119] == 7.0);
  y(0, 1, 0, 2) = 3.0;
  CHECK(y[(0 * 3 + 1) * 20 + 0 * 5 + 2] == 3.0);
  Tensor<float, 1> v({7}, 2.0f);
  CHECK(v.size() == 7);
  Tensor<float, 2> m({3, 4});
  m(2, 3) = 1.0f;
  CHECK(m[11] == 1.0f);
}

TEST_CASE("Tensor copies deeply, moves cheaply, and views share storage", "[tensor]") {
  Tensor<float> a({1, 2, 2, 1}, 1.0f);
  Tensor<float> b = a;
  b[0] = 5.0f;
  CHECK(a[0] == 1.0f);
  const float* p = b.data();
  Tensor<float> c = std::move(b);
  CHECK(c.data() == p);
  CHECK(c[0] == 5.0f);
  TensorView<float> view = c.view();
  view(0, 1, 1, 0) = 9.0f;
  CHECK(c[3] == 9.0f);
  TensorView<const float> cv = view;  // mutable view converts to const
  CHECK(cv(0, 1, 1, 0) == 9.0f);
  c.resize({2, 2, 2, 2});
  CHECK(c.size() == 16);
}

TEST_CASE("seeded random fills are reproducible", "[tensor][random]") {
  Tensor<float> a({2, 3, 3, 2}), b({2, 3, 3, 2}), c({2, 3, 3, 2});
  fusedcnn::fill_uniform(a, -1, 1, 42);
  fusedcnn::fill_uniform(b, -1, 1, 42);
  fusedcnn::fill_uniform(c, -1, 1, 43);
  bool same = true, differ = false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    same &= a[i] == b[i];
    differ |= a[i] != c[i];
    REQUIRE(a[i] >= -1.0f);
    REQUIRE(a[i] < 1.0f);
  }
  CHECK(same);
  CHECK(differ);
  Tensor<double> n({1, 100, 100, 1});
  fusedcnn::fill_normal(n, 2.0, 0.5, 7);
  double s = 0;
  for (std::size_t i = 0; i < n.size(); ++i) s += n[i];
  CHECK(s / double(n.size()) == Approx(2.0).margin(0.02));
}

TEST_CASE("the caching allocator reuses blocks and releases them", "[allocator]") {
  fusedcnn::release_cached_memory();
  CHECK(fusedcnn::cached_memory_bytes() == 0);
  const float* first;
  {
    Tensor<float> t({1, 64, 64, 16});
    first = t.data();
  }
  CHECK(fusedcnn::cached_memory_bytes() > 0);
  {
    Tensor<float> t({1, 64, 64, 16});
    CHECK(t.data() == first);  // same size class: the cached block comes back
  }
  fusedcnn::release_cached_memory();
  CHECK(fusedcnn::cached_memory_bytes() == 0);
}

TEST_CASE("the caching allocator is safe under concurrent use", "[allocator][threads]") {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t] {
      for (int i = 0; i < 200; ++i) {
        Tensor<float> a({1, 8 + std::size_t(t), 16, std::size_t(1 + i % 7)}, float(i));
        REQUIRE(a[a.size() - 1] == float(i));
      }
    });
  for (auto& th : threads) th.join();
  fusedcnn::release_cached_memory();
  CHECK(fusedcnn::cached_memory_bytes() == 0);
}
