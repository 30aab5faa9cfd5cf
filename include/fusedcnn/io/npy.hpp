// save_npy / load_npy: NumPy .npy files (format 1.0-3.0, little-endian <f4/<f8, C order), so
// tensors move to and from NumPy and PyTorch.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>

#include "fusedcnn/core/error.hpp"
#include "fusedcnn/core/shape.hpp"
#include "fusedcnn/core/tensor.hpp"

namespace fusedcnn {

namespace detail {

static_assert(std::endian::native == std::endian::little,
              "fusedcnn's npy I/O reads and writes little-endian data in place");

inline constexpr std::string_view npy_magic{"\x93NUMPY", 6};

// The dtype string NumPy writes for T.
template <class T>
constexpr std::string_view npy_descr() {
  return sizeof(T) == 4 ? "<f4" : "<f8";
}

// Returns the text between `key`'s value quotes/parentheses in a header dict, or throws.
inline std::string npy_field(const std::string& header, const std::string& key,
                             const std::string& path) {
  const std::size_t k = header.find("'" + key + "'");
  if (k == std::string::npos)
    throw io_error(cat("load_npy: '", path, "' header has no '", key, "' field"));
  std::size_t v = header.find(':', k);
  if (v == std::string::npos)
    throw io_error(cat("load_npy: '", path, "' header field '", key, "' has no value"));
  ++v;
  while (v < header.size() && header[v] == ' ') ++v;
  if (v >= header.size())
    throw io_error(cat("load_npy: '", path, "' header field '", key, "' has no value"));
  const char open = header[v];
  const char close = open == '\'' ? '\'' : open == '(' ? ')' : '\0';
  if (close == '\0') {  // a bare word: True / False
    std::size_t e = header.find_first_of(",}", v);
    if (e == std::string::npos) e = header.size();
    std::string word = header.substr(v, e - v);
    while (!word.empty() && word.back() == ' ') word.pop_back();
    return word;
  }
  const std::size_t e = header.find(close, v + 1);
  if (e == std::string::npos)
    throw io_error(cat("load_npy: '", path, "' header field '", key, "' is not terminated"));
  return header.substr(v + 1, e - v - 1);
}

// Parses "2, 3, 4" (or "5," or "") into a shape of exactly Rank dimensions.
template <std::size_t Rank>
Shape<Rank> npy_parse_shape(const std::string& text, const std::string& path) {
  Shape<Rank> shape{};
  std::size_t dims = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == ',')) ++i;
    if (i >= text.size()) break;
    if (text[i] < '0' || text[i] > '9')
      throw io_error(cat("load_npy: '", path, "' has a malformed shape (", text, ")"));
    std::size_t value = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      const std::size_t digit = static_cast<std::size_t>(text[i] - '0');
      if (value > (SIZE_MAX - digit) / 10)
        throw io_error(cat("load_npy: '", path, "' has a dimension that overflows (", text, ")"));
      value = value * 10 + digit;
      ++i;
    }
    if (dims < Rank) shape[dims] = value;
    ++dims;
  }
  if (dims != Rank)
    throw io_error(cat("load_npy: '", path, "' has rank ", dims, " (shape (", text,
                       ")), expected rank ", Rank));
  return shape;
}

}  // namespace detail

// Writes `t` as a C-order .npy file (format 1.0) with dtype <f4 or <f8.
template <class T, std::size_t Rank>
  requires Scalar<std::remove_const_t<T>>
void save_npy(const std::string& path, TensorView<T, Rank> t) {
  using V = std::remove_const_t<T>;
  std::string dict = detail::cat("{'descr': '", detail::npy_descr<V>(), "', 'fortran_order': False, 'shape': (");
  for (std::size_t i = 0; i < Rank; ++i) dict += detail::cat(i ? ", " : "", t.shape()[i]);
  dict += Rank == 1 ? ",), }" : "), }";  // Python writes a 1-tuple as (n,)
  // Pad with spaces so that the data starts on a 64-byte boundary, newline-terminated.
  const std::size_t unpadded = detail::npy_magic.size() + 2 + 2 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  if (dict.size() > 0xffff) throw io_error(detail::cat("save_npy: '", path, "' header is too long"));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw io_error(detail::cat("save_npy: cannot open '", path, "' for writing"));
  const unsigned char version[2] = {1, 0};
  const unsigned char len[2] = {static_cast<unsigned char>(dict.size() & 0xff),
                                static_cast<unsigned char>(dict.size() >> 8)};
  out.write(detail::npy_magic.data(), static_cast<std::streamsize>(detail::npy_magic.size()));
  out.write(reinterpret_cast<const char*>(version), 2);
  out.write(reinterpret_cast<const char*>(len), 2);
  out.write(dict.data(), static_cast<std::streamsize>(dict.size()));
  out.write(reinterpret_cast<const char*>(t.data()),
            static_cast<std::streamsize>(t.size() * sizeof(V)));
  if (!out) throw io_error(detail::cat("save_npy: writing '", path, "' failed"));
}

template <class T, std::size_t Rank>
void save_npy(const std::string& path, const Tensor<T, Rank>& t) {
  save_npy(path, t.view());
}

// Reads a C-order .npy file whose dtype is exactly T's (<f4 for float, <f8 for double) and
// whose rank is exactly Rank; anything else throws io_error with the reason.
template <class T, std::size_t Rank = 4>
  requires Scalar<T>
Tensor<T, Rank> load_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(detail::cat("load_npy: cannot open '", path, "'"));
  char magic[6] = {};
  in.read(magic, 6);
  if (!in || std::string_view(magic, 6) != detail::npy_magic)
    throw io_error(detail::cat("load_npy: '", path, "' is not a .npy file (bad magic)"));
  unsigned char version[2] = {};
  in.read(reinterpret_cast<char*>(version), 2);
  if (!in) throw io_error(detail::cat("load_npy: '", path, "' is truncated in its header"));
  if (version[0] < 1 || version[0] > 3)
    throw io_error(detail::cat("load_npy: '", path, "' has unsupported format version ",
                       static_cast<int>(version[0])));
  std::size_t header_len = 0;
  const int len_bytes = version[0] == 1 ? 2 : 4;
  for (int i = 0; i < len_bytes; ++i) {
    const int b = in.get();
    if (b == std::char_traits<char>::eof())
      throw io_error(detail::cat("load_npy: '", path, "' is truncated in its header"));
    header_len |= static_cast<std::size_t>(b) << (8 * i);
  }
  if (header_len > (1u << 24))
    throw io_error(detail::cat("load_npy: '", path, "' declares an implausible header length ", header_len));
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  if (!in) throw io_error(detail::cat("load_npy: '", path, "' is truncated in its header"));

  const std::string descr = detail::npy_field(header, "descr", path);
  if (descr != detail::npy_descr<T>())
    throw io_error(detail::cat("load_npy: '", path, "' has dtype '", descr, "', expected '",
                       detail::npy_descr<T>(), "'"));
  if (detail::npy_field(header, "fortran_order", path) != "False")
    throw io_error(detail::cat("load_npy: '", path, "' is in Fortran order; only C order is supported"));
  const Shape<Rank> shape =
      detail::npy_parse_shape<Rank>(detail::npy_field(header, "shape", path), path);
  std::size_t count = 0;
  try {
    count = detail::checked_count<T>(shape);
  } catch (const shape_error&) {
    throw io_error(detail::cat("load_npy: '", path, "' has a shape whose size overflows (",
                       detail::shape_str(shape), ")"));
  }
  // Check the payload length before allocating, so a lying header cannot ask for terabytes.
  const std::streampos data_begin = in.tellg();
  in.seekg(0, std::ios::end);
  const std::streamoff available = in.tellg() - data_begin;
  in.seekg(data_begin);
  const std::size_t bytes = count * sizeof(T);
  if (available < 0 || static_cast<std::size_t>(available) < bytes)
    throw io_error(detail::cat("load_npy: '", path, "' is truncated: shape (", detail::shape_str(shape),
                       ") needs ", bytes, " bytes of data, the file has ", available));
  Tensor<T, Rank> t(shape, detail::uninitialized);
  in.read(reinterpret_cast<char*>(t.data()), static_cast<std::streamsize>(bytes));
  if (!in) throw io_error(detail::cat("load_npy: reading '", path, "' failed"));
  return t;
}

}  // namespace fusedcnn
