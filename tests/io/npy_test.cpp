// save_npy / load_npy: round trips, files written by NumPy, and malformed files.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include <fusedcnn/fusedcnn.hpp>

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
// A scratch path unique to this test run, removed when the object goes.
struct TempFile {
  fs::path path;
  explicit TempFile(const std::string& name)
      : path(fs::temp_directory_path() / ("fusedcnn_npy_" + std::to_string(::getpid()) + "_" + name)) {}
  ~TempFile() { fs::remove(path); }
  std::string str() const { return path.string(); }
};

// Writes a v1.0 .npy file with the given header dict and payload bytes.
void write_npy(const std::string& path, std::string dict, const std::string& payload,
               const std::string& magic = "\x93NUMPY") {
  while ((10 + dict.size() + 1) % 64) dict += ' ';
  dict += '\n';
  std::ofstream out(path, std::ios::binary);
  out << magic << '\x01' << '\x00' << char(dict.size() & 0xff) << char(dict.size() >> 8) << dict << payload;
}
}  // namespace

TEMPLATE_TEST_CASE("npy round trip for every rank", "[npy]", float, double) {
  TempFile f("rt.npy");
  fusedcnn::Tensor<TestType> t4({2, 3, 4, 5});
  fusedcnn::fill_uniform(t4, -1, 1, 3);
  fusedcnn::save_npy(f.str(), t4);
  const auto back4 = fusedcnn::load_npy<TestType, 4>(f.str());
  REQUIRE(back4.shape() == t4.shape());
  for (std::size_t i = 0; i < t4.size(); ++i) REQUIRE(back4[i] == t4[i]);
  fusedcnn::Tensor<TestType, 1> t1({7}, TestType(2.5));
  fusedcnn::save_npy(f.str(), t1);
  CHECK(fusedcnn::load_npy<TestType, 1>(f.str())[6] == TestType(2.5));
  fusedcnn::Tensor<TestType, 2> t2({3, 2}, TestType(-1));
  fusedcnn::save_npy(f.str(), t2);
  CHECK(fusedcnn::load_npy<TestType, 2>(f.str()).shape() == fusedcnn::Shape<2>{3, 2});
  fusedcnn::Tensor<TestType, 3> t3({1, 2, 3}, TestType(4));
  fusedcnn::save_npy(f.str(), t3);
  CHECK(fusedcnn::load_npy<TestType, 3>(f.str())[5] == TestType(4));
}

TEST_CASE("npy reads a file laid out as NumPy writes it", "[npy]") {
  TempFile f("numpy.npy");
  const float values[6] = {1, 2, 3, 4, 5, 6};
  write_npy(f.str(), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            std::string(reinterpret_cast<const char*>(values), sizeof values));
  const auto t = fusedcnn::load_npy<float, 2>(f.str());
  CHECK(t(1, 2) == 6.0f);
  CHECK(t(0, 1) == 2.0f);
}

TEST_CASE("malformed npy files throw io_error with the reason", "[npy][errors]") {
  TempFile f("bad.npy");
  const std::string payload(6 * 4, '\0');
  auto expect = [&](const char* fragment) {
    try {
      (void)fusedcnn::load_npy<float, 2>(f.str());
      FAIL("no exception");
    } catch (const fusedcnn::io_error& e) {
      CHECK_THAT(e.what(), Contains(fragment));
    }
  };
  write_npy(f.str(), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", payload, "\x93NUMPX");
  expect("bad magic");
  write_npy(f.str(), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", payload.substr(0, 20));
  expect("truncated");
  write_npy(f.str(), "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", payload);
  expect("dtype");
  write_npy(f.str(), "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", payload);
  expect("dtype");
  write_npy(f.str(), "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", payload);
  expect("dtype");
  write_npy(f.str(), "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", payload);
  expect("Fortran");
  write_npy(f.str(), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 1), }", payload);
  expect("rank 3");
  {
    std::ofstream out(f.str(), std::ios::binary);
    out << "\x93NUMPY\x01";
  }
  expect("truncated");
  CHECK_THROWS_AS((fusedcnn::load_npy<float, 2>("/nonexistent/dir/x.npy")), fusedcnn::io_error);
  try {
    (void)fusedcnn::load_npy<float, 2>("/nonexistent/dir/x.npy");
  } catch (const std::runtime_error& e) {  // io_error is a runtime_error
    CHECK_THAT(e.what(), Contains("cannot open"));
  }
}
