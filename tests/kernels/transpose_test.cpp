// The block transposes and channel (de)interleaves of the packing routines and the row family,
// against their definitions, on every edge case of their register paths (whole blocks, ragged
// rows and columns, padded strides), and the lane sums of the row weight gradient.
#include <catch2/catch.hpp>

#include <cstddef>
#include <vector>

#include <fusedcnn/fusedcnn.hpp>

namespace {

template <class T>
void check_transpose(std::size_t rows, std::size_t cols, std::size_t lds, std::size_t ldd) {
  std::vector<T> src(rows * lds + 1), dst(cols * ldd + 1, T{-7});
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<T>(i) + T{0.25};
  fusedcnn::kernels::transpose(src.data(), lds, rows, cols, dst.data(), ldd);
  for (std::size_t j = 0; j < cols; ++j)
    for (std::size_t i = 0; i < ldd; ++i) {
      const T want = i < rows ? src[i * lds + j] : T{-7};  // nothing past the block is written
      if (dst[j * ldd + i] != want) {
        INFO("rows " << rows << " cols " << cols << " lds " << lds << " ldd " << ldd << " at (" << j
                     << ", " << i << ")");
        REQUIRE(dst[j * ldd + i] == want);
      }
    }
  CHECK(dst.back() == T{-7});
}

}  // namespace

TEMPLATE_TEST_CASE("kernels::transpose writes dst[j][i] = src[i][j] and nothing else", "[kernels]",
                   float, double) {
  for (std::size_t rows : {1, 5, 16, 17, 32, 35})
    for (std::size_t cols : {1, 3, 16, 20, 48})
      for (std::size_t pad : {0, 7}) check_transpose<TestType>(rows, cols, cols + pad, rows + pad);
}

namespace {

// deinterleave then interleave against their definitions; runs are padded so that a write
// past a run's w values would show.
template <class T, std::size_t C>
void check_interleave(std::size_t w) {
  const std::size_t ld = w + 5;
  std::vector<T> px(w * C), runs(C * ld, T{-7}), back(w * C + 1, T{-7});
  for (std::size_t i = 0; i < px.size(); ++i) px[i] = static_cast<T>(i) * T{0.5} - T{3};
  fusedcnn::kernels::deinterleave<T, C>(px.data(), w, runs.data(), ld);
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t i = 0; i < ld; ++i) {
      const T want = i < w ? px[i * C + c] : T{-7};
      if (runs[c * ld + i] != want) {
        INFO("C " << C << " w " << w << " channel " << c << " pixel " << i);
        REQUIRE(runs[c * ld + i] == want);
      }
    }
  fusedcnn::kernels::interleave<T, C>(runs.data(), ld, w, back.data());
  for (std::size_t i = 0; i < w * C; ++i) {
    INFO("C " << C << " w " << w << " value " << i);
    REQUIRE(back[i] == px[i]);
  }
  CHECK(back.back() == T{-7});
}

// The row family's channel-major store: act(src[j*cs + i] + b[j]) to dst[i*ldd + j].
template <class T, std::size_t KB, bool Relu>
void check_store_channel_major(std::size_t m, std::size_t ldd, bool bias) {
  const std::size_t cs = m + 3;
  std::vector<T> src(KB * cs), b(KB), dst(m * ldd + 1, T{-7});
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<T>(i % 7) - T{3.25};
  for (std::size_t j = 0; j < KB; ++j) b[j] = T{0.5} * static_cast<T>(j) - T{1};
  fusedcnn::kernels::detail::store_channel_major<T, KB, Relu>(src.data(), cs, m,
                                                              bias ? b.data() : nullptr,
                                                              dst.data(), ldd);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < ldd; ++j) {
      T want = T{-7};  // columns past KB are not written
      if (j < KB) {
        want = src[j * cs + i] + (bias ? b[j] : T{0});
        if (Relu && want < T{0}) want = T{0};
      }
      if (dst[i * ldd + j] != want) {
        INFO("KB " << KB << " m " << m << " ldd " << ldd << " relu " << Relu << " bias " << bias
                   << " at (" << i << ", " << j << ")");
        REQUIRE(dst[i * ldd + j] == want);
      }
    }
  CHECK(dst.back() == T{-7});
}

template <class T, std::size_t KB>
void check_store_channel_major_all() {
  for (std::size_t m : {1, 15, 16, 17, 40})
    for (std::size_t extra : {0, 3})
      for (bool bias : {false, true}) {
        check_store_channel_major<T, KB, false>(m, KB + extra, bias);
        check_store_channel_major<T, KB, true>(m, KB + extra, bias);
      }
}

}  // namespace

TEMPLATE_TEST_CASE("kernels::deinterleave and interleave split pixels into channel runs and back",
                   "[kernels]", float, double) {
  for (std::size_t w : {1, 15, 16, 17, 40, 64}) {
    check_interleave<TestType, 1>(w);
    check_interleave<TestType, 2>(w);
    check_interleave<TestType, 3>(w);
    check_interleave<TestType, 4>(w);
    check_interleave<TestType, 8>(w);
    check_interleave<TestType, 16>(w);
  }
}

TEMPLATE_TEST_CASE("The row family's channel-major store adds the bias, applies ReLU and interleaves",
                   "[kernels]", float, double) {
  check_store_channel_major_all<TestType, 1>();
  check_store_channel_major_all<TestType, 2>();
  check_store_channel_major_all<TestType, 3>();
  check_store_channel_major_all<TestType, 4>();
  check_store_channel_major_all<TestType, 8>();
}

TEMPLATE_TEST_CASE("sum_lanes adds each sum's lanes in order", "[kernels]", float, double) {
  constexpr std::size_t L = 16;
  for (std::size_t n : {1, 16, 63, 64, 65, 200}) {
    std::vector<TestType> vs(n * L), out(n + 1, TestType{-7});
    for (std::size_t i = 0; i < vs.size(); ++i)
      vs[i] = static_cast<TestType>((i * 2654435761u) % 1000) / TestType{7} - TestType{60};
    fusedcnn::kernels::sum_lanes<TestType, L>(vs.data(), n, out.data());
    for (std::size_t j = 0; j < n; ++j) {
      TestType s = vs[j * L];
      for (std::size_t q = 1; q < L; ++q) s += vs[j * L + q];
      INFO("n " << n << " sum " << j);
      REQUIRE(out[j] == s);  // same order, same bits
    }
    CHECK(out[n] == TestType{-7});
  }
}
