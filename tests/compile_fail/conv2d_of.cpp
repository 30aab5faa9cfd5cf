// Compiled twice by ctest: with ELEMENT=float it must build; with ELEMENT=int the Scalar
// concept must reject it.
#include <fusedcnn/fusedcnn.hpp>

int main() {
  fusedcnn::Conv2D<ELEMENT> conv(1, 1);
  return static_cast<int>(conv.weight().size()) - 9;
}
