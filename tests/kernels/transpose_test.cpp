// The block transpose of the weight packing, against the definition, on every edge case of its
// 16 x 16 register path (whole blocks, ragged rows and columns, padded strides).
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
