// PyTorch golden data (tests/golden/make_golden.py): every case of data/manifest.txt rebuilt
// with fusedcnn's layers and compared with what PyTorch computed.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <fusedcnn/fusedcnn.hpp>

#include "reference/reference.hpp"

namespace {

const std::string kData = std::string(FUSEDCNN_TEST_DIR) + "/golden/data/";

// One manifest line: the case name and its key=value options.
struct Case {
  std::string name;
  std::map<std::string, std::string> opt;
  std::size_t num(const std::string& k) const { return std::stoul(opt.at(k)); }
  bool flag(const std::string& k) const { return opt.at(k) == "1"; }
  template <class T, std::size_t R = 4>
  fusedcnn::Tensor<T, R> load(const std::string& array) const {
    return fusedcnn::load_npy<T, R>(kData + name + "/" + array + ".npy");
  }
  bool has(const std::string& array) const {
    return std::filesystem::exists(kData + name + "/" + array + ".npy");
  }
};

std::vector<Case> manifest() {
  std::ifstream in(kData + "manifest.txt");
  REQUIRE(in.good());  // the golden data ships with the sources
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::istringstream ls(line);
    Case c;
    ls >> c.name;
    std::string kv;
    while (ls >> kv) c.opt[kv.substr(0, kv.find('='))] = kv.substr(kv.find('=') + 1);
    cases.push_back(c);
  }
  return cases;
}

fusedcnn::Conv2DOptions conv_options(const Case& c) {
  fusedcnn::Conv2DOptions o;
  o.kernel = {c.num("kh"), c.num("kw")};
  o.stride = {c.num("sh"), c.num("sw")};
  o.dilation = {c.num("dh"), c.num("dw")};
  o.groups = c.num("groups");
  o.bias = c.flag("bias");
  const std::string& p = c.opt.at("pad");
  if (p == "same") {
    o.padding = fusedcnn::Padding::same();
  } else if (p == "valid") {
    o.padding = fusedcnn::Padding::valid();
  } else {
    std::size_t t, b, l, r;
    char comma;
    std::istringstream(p.substr(p.find(':') + 1)) >> t >> comma >> b >> comma >> l >> comma >> r;
    o.padding = fusedcnn::Padding{t, b, l, r};
  }
  return o;
}

fusedcnn::BatchNormOptions bn_options(const Case& c) {
  fusedcnn::BatchNormOptions o;
  if (c.opt.count("momentum")) {
    const std::string& m = c.opt.at("momentum");
    o.momentum = m == "none" ? std::optional<double>{} : std::optional<double>{std::stod(m)};
  }
  if (c.opt.count("affine")) o.affine = c.flag("affine");
  if (c.opt.count("track")) o.track_running_stats = c.flag("track");
  return o;
}

// Checks a against PyTorch's b within tol, normwise relative; returns the error.
template <class T, std::size_t R>
double expect_close(const char* what, const fusedcnn::Tensor<T, R>& a, const fusedcnn::Tensor<T, R>& b,
                    double tol) {
  REQUIRE(a.shape() == b.shape());
  const double e = ref::rel_err(a, ref::to_vec(b));
  INFO(what << ": relative error " << e);
  CHECK(e <= tol);
  return e;
}

template <class T>
double run_conv(const Case& c, double tol) {
  const auto x = c.load<T>("x"), w = c.load<T>("w");
  fusedcnn::Conv2D<T> conv(x.shape()[3], c.num("k"), conv_options(c));
  conv.weight() = w;
  if (c.flag("bias")) conv.bias() = c.load<T, 1>("b");
  double worst = expect_close("y", conv.forward(x), c.load<T>("y"), tol);
  const double edx = expect_close("dx", conv.backward(c.load<T>("dy")), c.load<T>("dx"), tol);
  worst = std::max(worst, edx);
  worst = std::max(worst, expect_close("dw", conv.weight_grad(), c.load<T>("dw"), tol));
  if (c.flag("bias")) worst = std::max(worst, expect_close("db", conv.bias_grad(), c.load<T, 1>("db"), tol));
  return worst;
}

template <class T>
double run_bn(const Case& c, double tol) {
  const fusedcnn::BatchNormOptions o = bn_options(c);
  const auto x0 = c.load<T>("x0");
  fusedcnn::BatchNorm2D<T> bn(x0.shape()[3], o);
  if (o.affine) bn.weight() = c.load<T, 1>("gamma"), bn.bias() = c.load<T, 1>("beta");
  if (o.track_running_stats) bn.running_mean() = c.load<T, 1>("rm0"), bn.running_var() = c.load<T, 1>("rv0");
  bn.train(c.opt.at("mode") == "train");
  double worst = 0;
  for (std::size_t s = 0; s < c.num("steps"); ++s) {
    const std::string k = std::to_string(s);
    const double ey = expect_close("y", bn.forward(c.load<T>("x" + k)), c.load<T>("y" + k), tol);
    const double edx = expect_close("dx", bn.backward(c.load<T>("dy" + k)), c.load<T>("dx" + k), tol);
    worst = std::max({worst, ey, edx});
  }
  if (o.affine) {
    worst = std::max(worst, expect_close("dgamma", bn.weight_grad(), c.load<T, 1>("dgamma"), tol));
    worst = std::max(worst, expect_close("dbeta", bn.bias_grad(), c.load<T, 1>("dbeta"), tol));
  }
  if (o.track_running_stats) {
    worst = std::max(worst, expect_close("running_mean", bn.running_mean(), c.load<T, 1>("rm"), tol));
    worst = std::max(worst, expect_close("running_var", bn.running_var(), c.load<T, 1>("rv"), tol));
    CHECK(bn.num_batches_tracked() == static_cast<std::int64_t>(c.num("tracked")));
  }
  return worst;
}

template <class T>
double run_convbn(const Case& c, double tol) {
  const auto x0 = c.load<T>("x0");
  fusedcnn::ConvBN<T> f(x0.shape()[3], c.num("k"), conv_options(c), {},
                        c.opt.at("act") == "relu" ? fusedcnn::Activation::relu : fusedcnn::Activation::none);
  f.conv().weight() = c.load<T>("w");
  f.conv().bias() = c.load<T, 1>("b");
  f.bn().weight() = c.load<T, 1>("gamma");
  f.bn().bias() = c.load<T, 1>("beta");
  f.bn().running_mean() = c.load<T, 1>("rm0");
  f.bn().running_var() = c.load<T, 1>("rv0");
  const bool training = c.opt.at("mode") == "train";
  f.train(training);
  double worst = 0;
  for (std::size_t s = 0; s < c.num("steps"); ++s) {
    const std::string k = std::to_string(s);
    const double ey = expect_close("y", f.forward(c.load<T>("x" + k)), c.load<T>("y" + k), tol);
    const double edx = expect_close("dx", f.backward(c.load<T>("dy" + k)), c.load<T>("dx" + k), tol);
    worst = std::max({worst, ey, edx});
  }
  worst = std::max(worst, expect_close("dw", f.conv().weight_grad(), c.load<T>("dw"), tol));
  worst = std::max(worst, expect_close("dgamma", f.bn().weight_grad(), c.load<T, 1>("dgamma"), tol));
  worst = std::max(worst, expect_close("dbeta", f.bn().bias_grad(), c.load<T, 1>("dbeta"), tol));
  worst = std::max(worst, expect_close("running_mean", f.bn().running_mean(), c.load<T, 1>("rm"), tol));
  worst = std::max(worst, expect_close("running_var", f.bn().running_var(), c.load<T, 1>("rv"), tol));
  const auto db = c.load<T, 1>("db");
  if (training) {
    // zero up to rounding on both sides: compare absolutely, against the size of dgamma
    double scale = 0;
    for (std::size_t i = 0; i < db.size(); ++i) scale = std::max(scale, double(std::abs(f.bn().bias_grad()[i])));
    for (std::size_t i = 0; i < db.size(); ++i) {
      CHECK(std::abs(double(f.conv().bias_grad()[i])) <= 1e2 * tol * scale);
      CHECK(std::abs(double(db[i])) <= 1e2 * tol * scale);
    }
  } else {
    worst = std::max(worst, expect_close("db", f.conv().bias_grad(), db, tol));
  }
  return worst;
}

template <class T>
double run_fold(const Case& c, double tol) {
  const auto w = c.load<T>("w");
  fusedcnn::Conv2D<T> conv(w.shape()[2], c.num("k"), conv_options(c));
  conv.weight() = w;
  fusedcnn::BatchNorm2D<T> bn(c.num("k"));
  bn.weight() = c.load<T, 1>("gamma"), bn.bias() = c.load<T, 1>("beta");
  bn.running_mean() = c.load<T, 1>("rm0"), bn.running_var() = c.load<T, 1>("rv0");
  const fusedcnn::Conv2D<T> folded = fusedcnn::fold(conv, bn);
  return std::max(expect_close("folded weight", folded.weight(), c.load<T>("fw"), tol),
                  expect_close("folded bias", folded.bias(), c.load<T, 1>("fb"), tol));
}

template <class T>
double run_case(const Case& c) {
  const bool f4 = sizeof(T) == 4;
  const std::string& kind = c.opt.at("kind");
  if (kind == "conv") return run_conv<T>(c, f4 ? 1e-5 : 1e-12);
  if (kind == "bn") return run_bn<T>(c, f4 ? 1e-5 : 1e-12);
  if (kind == "convbn") return run_convbn<T>(c, f4 ? 1e-4 : 1e-10);
  if (kind == "fold") return run_fold<T>(c, f4 ? 1e-6 : 1e-12);
  const auto x = c.load<T>("x");
  fusedcnn::ReLU<T> relu;
  const double ey = expect_close("y", relu.forward(x), c.load<T>("y"), 0.0);  // forward first
  return std::max(ey, expect_close("dx", relu.backward(c.load<T>("dy")), c.load<T>("dx"), 0.0));
}

}  // namespace

TEST_CASE("layers reproduce PyTorch's golden results", "[golden]") {
  const std::vector<Case> cases = manifest();
  REQUIRE(cases.size() >= 40);
  double worst_f4 = 0, worst_f8 = 0;
  for (const Case& c : cases) {
    INFO("golden case " << c.name);
    if (c.opt.at("dtype") == "f4") {
      worst_f4 = std::max(worst_f4, run_case<float>(c));
    } else {
      worst_f8 = std::max(worst_f8, run_case<double>(c));
    }
  }
  WARN(cases.size() << " golden cases; worst relative error float " << worst_f4 << ", double " << worst_f8);
}
