// Tensor, TensorView and the caching allocator.
#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <thread>
#include <utility>
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

namespace {
// A 24-value tensor holding 0, 1, 2, ...
Tensor<float> iota_tensor() {
  Tensor<float> t({1, 2, 3, 4});
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(i);
  return t;
}
bool holds_iota(const float* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != static_cast<float>(i)) return false;
  return true;
}
}  // namespace

TEST_CASE("a loan reads the tensor's own storage until the tensor is written", "[tensor][loan]") {
  const Tensor<float> x = iota_tensor();
  const auto loan = x.lend();
  CHECK(loan->data() == x.data());  // nothing copied
  CHECK(loan->size() == x.size());
  CHECK(x.lend() == loan);  // one loan per storage, however many readers
  Tensor<float> copy = x;   // reading (even copying) the tensor leaves the loan in place
  CHECK(loan->data() == x.data());
  copy[0] = 99.0f;  // a deep copy's writes are its own
  CHECK(holds_iota(loan->data(), loan->size()));
}

TEST_CASE("every write through the tensor's interface first gives the loan its own copy",
          "[tensor][loan]") {
  // Each write path: the readers keep the values as lent, the tensor keeps its address and
  // holds the new values.
  using Write = void (*)(Tensor<float>&);
  const std::pair<const char*, Write> writes[] = {
      {"data()", [](Tensor<float>& t) { t.data()[5] = -1.0f; }},
      {"operator()", [](Tensor<float>& t) { t(0, 0, 1, 1) = -1.0f; }},
      {"operator[]", [](Tensor<float>& t) { t[5] = -1.0f; }},
      {"begin()", [](Tensor<float>& t) { *(t.begin() + 5) = -1.0f; }},
      {"end()", [](Tensor<float>& t) { *(t.end() - 19) = -1.0f; }},
      {"view()", [](Tensor<float>& t) { t.view()[5] = -1.0f; }},
      {"fill", [](Tensor<float>& t) { t.fill(-1.0f); }},
      {"copy assignment",
       [](Tensor<float>& t) {
         const Tensor<float> v({1, 2, 3, 4}, -1.0f);
         t = v;
       }},
  };
  for (const auto& [name, write] : writes) {
    INFO(name);
    Tensor<float> x = iota_tensor();
    const float* address = x.data();
    const auto loan = x.lend();
    const Tensor<float> other_copy = x;
    write(x);
    CHECK(loan->data() != x.data());
    CHECK(holds_iota(loan->data(), loan->size()));
    CHECK(x.data() == address);
    CHECK(x[5] == -1.0f);
    CHECK(x.lend() != loan);  // the next loan is of the new values
    CHECK(x.lend()->data() == std::as_const(x).data());
  }
}

TEST_CASE("storage the tensor gives up stays with the loan, uncopied", "[tensor][loan]") {
  std::shared_ptr<const fusedcnn::detail::Loan<float>> loan;
  const float* address = nullptr;
  {
    Tensor<float> x = iota_tensor();
    address = x.data();
    loan = x.lend();
  }  // destroyed: the storage is the loan's now, not the allocator's to hand out again
  const Tensor<float> reuse({1, 2, 3, 4}, -5.0f);
  CHECK(loan->data() == address);
  CHECK(holds_iota(loan->data(), loan->size()));

  Tensor<float> y = iota_tensor();
  address = y.data();
  loan = y.lend();
  Tensor<float> moved = std::move(y);  // the loan moves with the storage
  CHECK(std::as_const(moved).data() == address);
  moved = Tensor<float>({2, 2}, 5.0f);  // move assignment lets the old storage go
  const Tensor<float> reuse2({1, 2, 3, 4}, -5.0f);
  CHECK(loan->data() == address);
  CHECK(holds_iota(loan->data(), loan->size()));

  Tensor<float> z = iota_tensor();
  loan = z.lend();
  z.resize({1, 1, 1, 3});  // a different element count: new storage, the old one kept
  const Tensor<float> reuse3({1, 2, 3, 4}, -5.0f);
  CHECK(holds_iota(loan->data(), loan->size()));
  CHECK(z[0] == 0.0f);
  Tensor<float> w = iota_tensor();
  loan = w.lend();
  w.resize({4, 3, 2, 1});  // the same count: only the shape changes, nothing is copied
  CHECK(loan->data() == std::as_const(w).data());
}

TEST_CASE("a loan nobody holds any more costs nothing on the next write", "[tensor][loan]") {
  Tensor<float> x = iota_tensor();
  const float* before = nullptr;
  {
    const auto loan = x.lend();
    before = loan->data();
  }
  x[0] = 7.0f;  // no reader left: written in place, no copy taken
  CHECK(x.data() == before);
  CHECK(x[0] == 7.0f);
}

TEST_CASE("lending from several threads at once hands out one loan", "[tensor][loan][threads]") {
  const Tensor<float> x = iota_tensor();
  std::vector<std::shared_ptr<const fusedcnn::detail::Loan<float>>> loans(4);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < loans.size(); ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) loans[t] = x.lend();
    });
  for (auto& th : threads) th.join();
  for (const auto& l : loans) CHECK(l == loans[0]);
  CHECK(loans[0]->data() == x.data());
}
