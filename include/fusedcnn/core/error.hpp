// Exception types thrown by fusedcnn, and the message helpers the nn/ and io/ layers use.
#pragma once

#include <array>
#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>

namespace fusedcnn {

// Bad input shapes: a channel mismatch, a rank/shape mismatch, an element count that overflows.
struct shape_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Bad option or parameter values: eps <= 0, stride 0, an absent tensor asked for, ...
struct value_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// A call made in the wrong state, such as backward before forward.
struct state_error : std::logic_error {
  using std::logic_error::logic_error;
};

// A malformed, truncated or mismatched file.
struct io_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

// Joins a shape as "2,8,8,3" for error messages.
template <std::size_t Rank>
std::string shape_str(const std::array<std::size_t, Rank>& s) {
  std::string out;
  for (std::size_t i = 0; i < Rank; ++i) {
    if (i) out += ',';
    out += std::to_string(s[i]);
  }
  return out;
}

// Streams every argument into one string: cat("Conv2D: stride ", 0, " ...").
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace detail
}  // namespace fusedcnn
