// Winograd F(2x2, 3x3) transforms, each on one vector of channels (any vector layer V).
//
// A 3x3, stride-1 correlation of a 4x4 input tile d with weights g gives the 2x2 output tile
//   Y = A^T [ (G g G^T) . (B^T d B) ] A          (. : elementwise, 16 products)
// with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2;
// 0 0 1] and A^T = [1 1 1 0; 0 1 -1 -1]. Summed over input channels, the 16 products are 16
// GEMMs (one per point xi = 4 * row + column of the 4x4 transform), 16 multiply-adds per
// output tile and channel pair where the direct convolution does 36. Every coefficient is
// 0, +-1 or 1/2, so the transforms only add and halve, and each point's GEMM sums C products
// where the direct one sums 9C: the results are as close to a double reference as the
// direct kernels' (normwise 3e-7 to 1e-6 in float on 64 to 1024 input channels).
// The weight gradient, the gradient of that product with respect to g, uses the same tiles:
// summed over the output's tiles, dW = G^T [ (A dz A^T) . (B^T d B) ] G.
#pragma once

#include <cstddef>

namespace fusedcnn::kernels::winograd {

inline constexpr std::size_t points = 16;  // transformed values per 4x4 tile

// B^T on four values along one axis of an input tile.
template <class V>
inline void input_1d(const typename V::R (&d)[4], typename V::R (&e)[4]) noexcept {
  e[0] = V::sub(d[0], d[2]);
  e[1] = V::add(d[1], d[2]);
  e[2] = V::sub(d[2], d[1]);
  e[3] = V::sub(d[1], d[3]);
}

// G on the three taps along one axis of the weights.
template <class V>
inline void weight_1d(const typename V::R (&g)[3], typename V::R half,
                      typename V::R (&h)[4]) noexcept {
  const typename V::R s = V::add(g[0], g[2]);
  h[0] = g[0];
  h[1] = V::mul(half, V::add(s, g[1]));
  h[2] = V::mul(half, V::sub(s, g[1]));
  h[3] = g[2];
}

// A^T on four transformed values along one axis of an output tile.
template <class V>
inline void output_1d(const typename V::R (&m)[4], typename V::R (&o)[2]) noexcept {
  o[0] = V::add(V::add(m[0], m[1]), m[2]);
  o[1] = V::sub(V::sub(m[1], m[2]), m[3]);
}

// G g G^T for one vector of output channels of one input channel: g[i][j] at w + (3i + j) *
// tap_stride, channels past the mask read as zero; point xi goes to out + xi * ld_point.
template <class V, class T>
inline void weight_tile(const T* w, std::size_t tap_stride, typename V::M mask,
                        typename V::R scale, T* out, std::size_t ld_point) noexcept {
  using R = typename V::R;
  const T half_value = T{0.5};
  const R half = V::bcast(&half_value);
  R cols[3][4];  // G applied down each column of taps
  for (std::size_t j = 0; j < 3; ++j) {
    const R g[3] = {V::mul(V::load(mask, w + j * tap_stride), scale),
                    V::mul(V::load(mask, w + (3 + j) * tap_stride), scale),
                    V::mul(V::load(mask, w + (6 + j) * tap_stride), scale)};
    weight_1d<V>(g, half, cols[j]);
  }
  for (std::size_t i = 0; i < 4; ++i) {
    const R g[3] = {cols[0][i], cols[1][i], cols[2][i]};
    R h[4];
    weight_1d<V>(g, half, h);
    for (std::size_t j = 0; j < 4; ++j) V::store(out + (4 * i + j) * ld_point, h[j]);
  }
}

// B^T d B for a row of `tiles` input tiles, one vector of channels: tile s reads columns
// x0 + 2s .. x0 + 2s + 3 of the input rows in[0..3] (pixel stride `stride`, the channel offset
// already applied); a null row, or a column outside [0, width), is padding. Point xi of tile
// s goes to out + xi * ld_point + s * ld_tile. Neighbouring tiles share two columns, whose
// vertical transform is done once.
template <class V, class T>
inline void input_row(const T* const (&in)[4], long x0, std::size_t width, std::size_t stride,
                      std::size_t tiles, typename V::M mask, T* out, std::size_t ld_point,
                      std::size_t ld_tile) noexcept {
  using R = typename V::R;
  auto column = [&](long x, R (&e)[4]) {
    R d[4];
    const bool inside = x >= 0 && x < static_cast<long>(width);
    for (std::size_t i = 0; i < 4; ++i)
      d[i] = inside && in[i] ? V::load(mask, in[i] + static_cast<std::size_t>(x) * stride)
                             : V::zero();
    input_1d<V>(d, e);
  };
  R c0[4], c1[4], c2[4], c3[4];
  column(x0, c0);
  column(x0 + 1, c1);
  for (std::size_t s = 0; s < tiles; ++s) {
    const long x = x0 + 2 * static_cast<long>(s);
    column(x + 2, c2);
    column(x + 3, c3);
    T* dst = out + s * ld_tile;
    for (std::size_t i = 0; i < 4; ++i) {
      const R d[4] = {c0[i], c1[i], c2[i], c3[i]};
      R e[4];
      input_1d<V>(d, e);
      for (std::size_t j = 0; j < 4; ++j) V::store(mask, dst + (4 * i + j) * ld_point, e[j]);
    }
    for (std::size_t i = 0; i < 4; ++i) c0[i] = c2[i], c1[i] = c3[i];
  }
}

// A^T M A for one tile, one vector of channels: point xi at m + xi * ld_point; output (r, c)
// goes to rows[r] + c * stride for the rows that are non-null and the columns below `cols`.
template <class V, class T>
inline void output_tile(const T* m, std::size_t ld_point, T* const (&rows)[2],
                        std::size_t cols, std::size_t stride, typename V::M mask) noexcept {
  using R = typename V::R;
  R across[4][2];  // A^T along each row of points
  for (std::size_t i = 0; i < 4; ++i) {
    const R v[4] = {V::load(m + (4 * i) * ld_point), V::load(m + (4 * i + 1) * ld_point),
                    V::load(m + (4 * i + 2) * ld_point), V::load(m + (4 * i + 3) * ld_point)};
    output_1d<V>(v, across[i]);
  }
  for (std::size_t c = 0; c < cols; ++c) {
    const R v[4] = {across[0][c], across[1][c], across[2][c], across[3][c]};
    R o[2];
    output_1d<V>(v, o);
    for (std::size_t r = 0; r < 2; ++r)
      if (rows[r]) V::store(mask, rows[r] + c * stride, o[r]);
  }
}

// A z A^T for one 2x2 tile of the output gradient, one vector of channels: z[a][b] at
// rows[a] + b * stride (a null row, or b >= cols: zero); point xi to out + xi * ld_point,
// whole vectors (zero in the lanes the mask leaves out).
template <class V, class T>
inline void gradient_tile(const T* const (&rows)[2], std::size_t cols, std::size_t stride,
                          typename V::M mask, T* out, std::size_t ld_point) noexcept {
  using R = typename V::R;
  R e[2][4];  // A along each row
  for (std::size_t a = 0; a < 2; ++a) {
    const R z0 = rows[a] ? V::load(mask, rows[a]) : V::zero();
    const R z1 = rows[a] && cols > 1 ? V::load(mask, rows[a] + stride) : V::zero();
    e[a][0] = z0, e[a][1] = V::add(z0, z1), e[a][2] = V::sub(z0, z1), e[a][3] = V::sub(V::zero(), z1);
  }
  for (std::size_t j = 0; j < 4; ++j) {
    const R e0 = e[0][j], e1 = e[1][j];
    V::store(out + j * ld_point, e0);
    V::store(out + (4 + j) * ld_point, V::add(e0, e1));
    V::store(out + (8 + j) * ld_point, V::sub(e0, e1));
    V::store(out + (12 + j) * ld_point, V::sub(V::zero(), e1));
  }
}

// G^T on four summed products along one axis: three taps.
template <class V>
inline void weight_gradient_1d(const typename V::R (&h)[4], typename V::R half,
                               typename V::R (&o)[3]) noexcept {
  const typename V::R s = V::add(h[1], h[2]);
  o[0] = V::fma(half, s, h[0]);
  o[1] = V::mul(half, V::sub(h[1], h[2]));
  o[2] = V::fma(half, s, h[3]);
}

// G^T D G for one vector of output channels of one input channel: point xi of D at
// d + xi * ld_point; tap (i, j) goes to out + (3i + j) * tap_stride (lanes in the mask).
template <class V, class T>
inline void weight_gradient_tile(const T* d, std::size_t ld_point, typename V::M mask, T* out,
                                 std::size_t tap_stride) noexcept {
  using R = typename V::R;
  const T half_value = T{0.5};
  const R half = V::bcast(&half_value);
  R rows[4][3];  // G^T along each row of points
  for (std::size_t a = 0; a < 4; ++a) {
    const R h[4] = {V::load(d + 4 * a * ld_point), V::load(d + (4 * a + 1) * ld_point),
                    V::load(d + (4 * a + 2) * ld_point), V::load(d + (4 * a + 3) * ld_point)};
    weight_gradient_1d<V>(h, half, rows[a]);
  }
  for (std::size_t j = 0; j < 3; ++j) {
    const R h[4] = {rows[0][j], rows[1][j], rows[2][j], rows[3][j]};
    R o[3];
    weight_gradient_1d<V>(h, half, o);
    for (std::size_t i = 0; i < 3; ++i) V::store(mask, out + (3 * i + j) * tap_stride, o[i]);
  }
}

}  // namespace fusedcnn::kernels::winograd
