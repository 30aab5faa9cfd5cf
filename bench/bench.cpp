// bench: fused ConvBN+ReLU against the unfused Conv2D -> BatchNorm2D -> ReLU chain.
//
// Google Benchmark times every mode/suite/case/variant (hot caches: the same buffers every
// iteration); then a closing summary measures each case again with unfused and fused runs
// interleaved, and reports the median of the per-pair time ratios (robust on a shared, noisy
// machine), per-mode geometric means, and the other processes' CPU load during the case.
//
// Own flags (the rest go to Google Benchmark):
//   --suite=seed,random,resnet,small  --mode=infer,train_fwd,train_step  --threads=N
//   --seed=S  --dtype=float|double  --min_time=SECONDS (per Google Benchmark case)
//   --pairs=N (interleaved pairs per summary case)  --no_summary  --summary_only
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cases.hpp"
#include "pair.hpp"
#include "bn_passes.hpp"
#include "peak.hpp"

namespace bench {
namespace {

// fp32 peak measured at start-up (GFLOP/s for the chosen thread count), 0 when unknown.
double g_peak = 0;

struct Config {
  std::vector<std::string> suites{"seed", "random", "resnet", "small"};
  std::vector<Mode> modes{Mode::infer, Mode::train_fwd, Mode::train_step};
  int threads = 1;
  std::uint64_t seed = 42;
  bool use_double = false;
  double min_time = 0.05;
  int pairs = 9;
  bool bn_passes = false;
  bool summary = true;
  bool gbench = true;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

// Consumes our flags from argv, leaving Google Benchmark's.
Config parse(int& argc, char** argv) {
  Config cfg;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&](const char* key) -> const char* {
      const std::size_t n = std::strlen(key);
      return a.compare(0, n, key) == 0 ? argv[i] + n : nullptr;
    };
    if (const char* v = val("--suite=")) {
      cfg.suites = split(v);
    } else if (const char* v = val("--mode=")) {
      cfg.modes.clear();
      for (const auto& m : split(v)) {
        if (m == "infer") cfg.modes.push_back(Mode::infer);
        else if (m == "train_fwd") cfg.modes.push_back(Mode::train_fwd);
        else if (m == "train_step") cfg.modes.push_back(Mode::train_step);
        else { std::fprintf(stderr, "bench: unknown mode '%s'\n", m.c_str()); std::exit(2); }
      }
    } else if (const char* v = val("--threads=")) {
      cfg.threads = std::atoi(v);
    } else if (const char* v = val("--seed=")) {
      cfg.seed = std::strtoull(v, nullptr, 10);
    } else if (const char* v = val("--dtype=")) {
      cfg.use_double = std::string(v) == "double";
    } else if (const char* v = val("--min_time=")) {
      cfg.min_time = std::atof(v);
    } else if (const char* v = val("--pairs=")) {
      cfg.pairs = std::max(1, std::atoi(v));
    } else if (a == "--no_summary") {
      cfg.summary = false;
    } else if (a == "--summary_only") {
      cfg.gbench = false;
    } else if (a == "--bn_passes") {
      cfg.bn_passes = true;
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "bench: fused ConvBN+ReLU against Conv2D -> BatchNorm2D -> ReLU on identical data\n"
          "  --suite=seed,random,resnet,small   suites to run (default: all)\n"
          "  --mode=infer,train_fwd,train_step  modes to run (default: all)\n"
          "  --threads=N                        threads (default 1; pinned, see DESIGN)\n"
          "  --seed=S                           seed of the seed/random suites and data\n"
          "  --dtype=float|double               element type (default float)\n"
          "  --pairs=P                          interleaved pairs per case in the summary\n"
          "  --min_time=SECONDS                 Google Benchmark time per case\n"
          "  --summary_only / --no_summary      skip Google Benchmark / the summary table\n"
          "  --bn_passes                        only the batch-norm passes' GB/s against stream triad\n"
          "Google Benchmark's own flags (--benchmark_format=json, --benchmark_out=...,\n"
          "--benchmark_filter=...) pass through.\n");
      std::exit(0);
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  return cfg;
}

std::vector<Case> cases_of(const Config& cfg) {
  std::vector<Case> all;
  for (const auto& s : cfg.suites) {
    std::vector<Case> part;
    if (s == "seed") part = seed_suite(cfg.seed);
    else if (s == "random") part = random_suite(cfg.seed);
    else if (s == "resnet") part = resnet_suite();
    else if (s == "small") part = small_suite();
    else { std::fprintf(stderr, "bench: unknown suite '%s'\n", s.c_str()); std::exit(2); }
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

// Busy and total jiffies of the whole machine, from /proc/stat's first line.
struct CpuSample {
  double busy = 0, total = 0, self = 0, wall = 0;
  static CpuSample now() {
    CpuSample s;
    std::ifstream f("/proc/stat");
    std::string cpu;
    double v[8] = {};
    if (f >> cpu)
      for (double& x : v) f >> x;
    for (double x : v) s.total += x;
    s.busy = s.total - v[3] - v[4];  // minus idle and iowait
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    s.self = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
             1e-6 * static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    s.wall = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    return s;
  }
};

// Share of the machine's CPUs other processes kept busy between two samples, in percent.
double others_load(const CpuSample& a, const CpuSample& b) {
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double cpus = static_cast<double>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  const double wall = b.wall - a.wall;
  if (wall <= 0) return 0;
  const double others = (b.busy - a.busy) / hz - (b.self - a.self);
  return std::clamp(100.0 * others / (wall * cpus), 0.0, 100.0);
}

long minor_faults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

template <class T>
void register_case(const Case& c, Mode m, bool fused, std::uint64_t seed, double min_time) {
  const std::string name = std::string(mode_name(m)) + "/" + c.suite + "/" + c.name() + "/" +
                           (fused ? "fused" : "unfused");
  benchmark::RegisterBenchmark(name.c_str(), [c, m, fused, seed](benchmark::State& st) {
    Pair<T> p(c, m, seed);
    auto body = [&] { fused ? p.run_fused() : p.run_unfused(); };
    body();  // warm: every buffer and workspace at its steady-state size
    const long f0 = minor_faults();
    const CpuSample c0 = CpuSample::now();
    for (auto _ : st) {
      body();
      benchmark::DoNotOptimize(fused ? p.fy.data() : p.y.data());
      benchmark::ClobberMemory();
    }
    const CpuSample c1 = CpuSample::now();
    const double iters = static_cast<double>(st.iterations());
    st.counters["FLOP/s"] = benchmark::Counter(Pair<T>::flops(c, m), benchmark::Counter::kIsIterationInvariantRate);
    const double secs = c1.wall - c0.wall;
    if (g_peak > 0 && secs > 0)
      st.counters["%peak"] = 100.0 * Pair<T>::flops(c, m) * iters / secs / (g_peak * 1e9);
    st.counters["saved_MB"] = static_cast<double>(fused ? p.fused.saved_bytes() : p.unfused_saved_bytes()) / 1e6;
    st.counters["faults/it"] = static_cast<double>(minor_faults() - f0) / iters;
    st.counters["load%"] = others_load(c0, c1);
    st.counters["data_MB"] = c.volume_bytes() / 1e6;
  })->Unit(benchmark::kMillisecond)->MinTime(min_time)->UseRealTime();
}

struct Row {
  std::string mode, suite, name;
  bool winograd;  // the forward runs as Winograd F(2x2, 3x3)
  double unfused_ms, fused_ms, speedup, gflops, load, volume_mb;
  double saved_unfused_mb, saved_fused_mb;
};


double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Interleaved pairs: unfused then fused, then fused then unfused, ...; the median of the
// per-pair ratios is robust to the other tenants' bursts.
template <class T>
Row measure(const Case& c, Mode m, const Config& cfg) {
  Pair<T> p(c, m, cfg.seed);
  using clock = std::chrono::steady_clock;
  auto time = [](auto&& f) {
    const auto t0 = clock::now();
    f();
    return std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  };
  p.run_unfused();
  p.run_fused();
  // repeat each timed call so that one sample lasts at least ~2 ms
  const double once = std::max(1e-3, time([&] { p.run_fused(); }));
  const int inner = std::max(1, static_cast<int>(std::ceil(2.0 / once)));
  std::vector<double> tu, tf, ratio;
  const CpuSample c0 = CpuSample::now();
  for (int i = 0; i < cfg.pairs; ++i) {
    auto run_u = [&] { for (int j = 0; j < inner; ++j) p.run_unfused(); };
    auto run_f = [&] { for (int j = 0; j < inner; ++j) p.run_fused(); };
    double u, f;
    if (i % 2 == 0) {
      u = time(run_u);
      f = time(run_f);
    } else {
      f = time(run_f);
      u = time(run_u);
    }
    tu.push_back(u / inner);
    tf.push_back(f / inner);
    ratio.push_back(u / f);
  }
  const CpuSample c1 = CpuSample::now();
  Row r;
  r.mode = mode_name(m);
  r.suite = c.suite;
  r.name = c.name();
  r.winograd = c.winograd();
  r.unfused_ms = median(tu);
  r.fused_ms = median(tf);
  r.speedup = median(ratio);
  r.gflops = Pair<T>::flops(c, m) / (r.fused_ms * 1e6);
  r.load = others_load(c0, c1);
  r.volume_mb = c.volume_bytes() / 1e6;
  r.saved_unfused_mb = static_cast<double>(p.unfused_saved_bytes()) / 1e6;
  r.saved_fused_mb = static_cast<double>(p.fused.saved_bytes()) / 1e6;
  return r;
}

void print_summary(const std::vector<Row>& rows, const Config& cfg) {
  std::printf("\nfused vs unfused (%s, %d thread%s, seed %llu, ISA %s): median of %d interleaved pairs\n",
              cfg.use_double ? "double" : "float", cfg.threads, cfg.threads == 1 ? "" : "s",
              static_cast<unsigned long long>(cfg.seed), fusedcnn::kernels::isa_name, cfg.pairs);
  if (g_peak > 0) std::printf("measured fp32 FMA peak: %.1f GFLOP/s\n", g_peak);
  std::printf("%-10s %-7s %-26s %10s %10s %8s %9s %6s %9s %11s %6s\n", "mode", "suite", "case",
              "unfused ms", "fused ms", "speedup", "GFLOP/s", "%peak", "data MB", "kept MB u/f",
              "load%");
  for (const Row& r : rows)
    std::printf("%-10s %-7s %-26s %10.3f %10.3f %8.2f %9.2f %6.1f %9.2f %5.1f/%-5.1f %6.1f%s\n",
                r.mode.c_str(), r.suite.c_str(), r.name.c_str(), r.unfused_ms, r.fused_ms,
                r.speedup, r.gflops, g_peak > 0 ? 100.0 * r.gflops / g_peak : 0.0, r.volume_mb,
                r.saved_unfused_mb, r.saved_fused_mb, r.load, r.winograd ? " W" : "");
  std::printf("(W: the forward runs as Winograd F(2x2, 3x3); GFLOP/s and %%peak count the direct\n"
              " convolution's FLOPs, so they can pass 100)\n");
  std::printf("\ngeometric-mean speedup (fused over unfused)\n%-10s", "mode");
  for (const auto& s : cfg.suites) std::printf(" %8s", s.c_str());
  std::printf(" %8s %8s\n", "all", "min");
  for (Mode m : cfg.modes) {
    std::printf("%-10s", mode_name(m));
    double all = 0, mn = 1e300;
    int nall = 0;
    for (const auto& s : cfg.suites) {
      double acc = 0;
      int n = 0;
      for (const Row& r : rows)
        if (r.mode == mode_name(m) && r.suite == s) {
          acc += std::log(r.speedup);
          ++n;
          mn = std::min(mn, r.speedup);
        }
      all += acc;
      nall += n;
      std::printf(" %8.2f", n ? std::exp(acc / n) : 0.0);
    }
    std::printf(" %8.2f %8.2f\n", nall ? std::exp(all / nall) : 0.0, nall ? mn : 0.0);
  }
}

template <class T>
int run(int argc, char** argv, const Config& cfg) {
  const std::vector<Case> cases = cases_of(cfg);
  g_peak = fma_peak(cfg.threads);
  std::printf("cases (N,H,W,C -> K, kernel r, stride s, padding p, dilation d):\n");
  for (const Case& c : cases) std::printf("  %-7s %s\n", c.suite.c_str(), c.name().c_str());
  if (cfg.gbench) {
    for (Mode m : cfg.modes)
      for (const Case& c : cases)
        for (bool fused : {false, true}) register_case<T>(c, m, fused, cfg.seed, cfg.min_time);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  }
  if (cfg.summary) {
    std::vector<Row> rows;
    for (Mode m : cfg.modes)
      for (const Case& c : cases) rows.push_back(measure<T>(c, m, cfg));
    print_summary(rows, cfg);
  }
  return 0;
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  // Pinned threads: unpinned OpenMP threads on these shared machines gave 8-50x outliers.
  // The runtime reads these at start-up, so set them and start again when they are missing.
  if (!std::getenv("OMP_PROC_BIND") && !std::getenv("FUSEDCNN_BENCH_NO_REEXEC")) {
    setenv("OMP_PROC_BIND", "close", 1);
    setenv("OMP_PLACES", "cores", 1);
    setenv("FUSEDCNN_BENCH_NO_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: carry on unpinned
  }
  bench::Config cfg = bench::parse(argc, argv);
  fusedcnn::set_num_threads(std::max(1, cfg.threads));
  if (cfg.bn_passes) {
    bench::print_bn_passes();
    return 0;
  }
  return cfg.use_double ? bench::run<double>(argc, argv, cfg) : bench::run<float>(argc, argv, cfg);
}
