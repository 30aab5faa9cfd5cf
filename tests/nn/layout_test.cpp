// hwio_from_oihw / oihw_from_hwio: element mapping and round trip.
#include <catch2/catch.hpp>

#include <fusedcnn/fusedcnn.hpp>

TEST_CASE("OIHW <-> HWIO conversions map every element", "[layout]") {
  fusedcnn::Tensor<float> oihw({5, 3, 2, 4});  // O, I, H, W
  for (std::size_t i = 0; i < oihw.size(); ++i) oihw[i] = static_cast<float>(i);
  const fusedcnn::Tensor<float> hwio = fusedcnn::hwio_from_oihw(oihw);
  CHECK(hwio.shape() == fusedcnn::Shape<4>{2, 4, 3, 5});
  for (std::size_t o = 0; o < 5; ++o)
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t h = 0; h < 2; ++h)
        for (std::size_t w = 0; w < 4; ++w) REQUIRE(hwio(h, w, i, o) == oihw(o, i, h, w));
  const fusedcnn::Tensor<float> back = fusedcnn::oihw_from_hwio(hwio);
  CHECK(back.shape() == oihw.shape());
  for (std::size_t i = 0; i < oihw.size(); ++i) REQUIRE(back[i] == oihw[i]);
}
