// bench_quant: fp32 vs bf16 vs INT8 Linear, same run, same threads (fp32/bf16: at::linear,
// except decode's single row, which Linear::Dense runs on the kernel layer's GEMV; the
// closing table puts that GEMV beside at::linear; `bench_quant gemv` prints only that table).
// Prefill/vision at M=729 (compute-bound) and decode at M=1 (memory-bound, weights cycled
// through enough copies to defeat the L3 so every call streams from DRAM), plus the
// machine's read bandwidth measured in the same process as the decode roofline.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "bench/common/bench_common.h"
#include "kernels/kernels.h"
#include "quantization/linear.h"

namespace mq = moondream::quant;

namespace mb = moondream::bench;
namespace {

using mb::TimeIt;
using mb::Timing;

struct Shape {
  const char* name;
  int64_t in, out;
};

constexpr Shape kShapes[] = {
    {"vision qkv", 1152, 3456},  {"vision proj", 1152, 1152}, {"vision fc1", 1152, 4304},
    {"vision fc2", 4304, 1152},  {"projection fc1", 2304, 8192}, {"projection fc2", 8192, 2048},
    {"text qkv", 2048, 6144},    {"text proj", 2048, 2048},   {"text fc1", 2048, 8192},
    {"text fc2", 8192, 2048},    {"lm_head", 2048, 51200},
};
// Bytes of copies cycled per layer at M=1: at least 256 MiB and twice the last-level cache.
uint64_t ColdBytes() { return std::max<uint64_t>(256ull << 20, 2 * mb::LastLevelCacheBytes()); }

void PrintLoad() {  // the machine is shared: record how busy it was
  std::printf("loadavg: %s\n", mb::LoadAvg().c_str());
}

std::string Ms(const Timing& t) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%8.3f / %8.3f", t.med * 1e3, t.min * 1e3);
  return buf;
}
std::string Ratio(const Timing& base, const Timing& t) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%5.2f× / %5.2f×", base.med / t.med, base.min / t.min);
  return buf;
}

// Enough independent copies of a layer that cycling through them misses the L3.
std::vector<mq::Linear> Copies(const mq::Linear& one, const std::function<mq::Linear()>& make, bool cold) {
  std::vector<mq::Linear> v{one};
  const uint64_t n = cold ? std::max<uint64_t>(1, (ColdBytes() + one.bytes() - 1) / one.bytes()) : 1;
  while (v.size() < n) v.push_back(make());
  return v;
}

Timing TimeLayers(const std::vector<mq::Linear>& layers, const at::Tensor& x, int reps) {
  return TimeIt([&](int i) { layers[i % layers.size()].Forward(x); }, reps);
}

void RunShape(const Shape& s, int64_t m, double bw) {
  at::manual_seed(s.in * 131 + s.out);
  const at::Tensor w = at::randn({s.out, s.in}) * 0.02;
  const at::Tensor b = at::randn({s.out}) * 0.02;
  auto q = mq::QuantizePerChannel(w, s.name, nullptr);
  if (!q.ok()) std::abort();
  const bool cold = m == 1;
  const int reps = cold ? 60 : 7;
  const at::Tensor x = at::randn({m, s.in});
  const at::Tensor xb = x.to(at::kBFloat16);
  Timing t32, t16, t8;
  uint64_t int8_bytes;
  {
    auto make = [&] { return mq::Linear::Dense(w.clone(), b.clone()); };
    t32 = TimeLayers(Copies(make(), make, cold), x, reps);
  }
  {
    auto make = [&] { return mq::Linear::Dense(w.to(at::kBFloat16), b.to(at::kBFloat16)); };
    t16 = TimeLayers(Copies(make(), make, cold), xb, reps);
  }
  {
    auto make = [&] { return mq::Linear::Int8(*q, b); };
    const mq::Linear one = make();
    int8_bytes = one.bytes();
    t8 = TimeLayers(Copies(one, make, cold), x, reps);
  }
  std::printf("| %-14s | %5ld→%-5ld | %4ld | %s | %s | %s | %s | %s |", s.name, s.in, s.out, m,
              Ms(t32).c_str(), Ms(t16).c_str(), Ms(t8).c_str(), Ratio(t32, t8).c_str(),
              Ratio(t16, t8).c_str());
  if (cold) {
    const double gbs = int8_bytes / t8.med / 1e9;
    std::printf(" %5.1f GB/s | %3.0f%%%s |", gbs, 100 * gbs / bw, mb::AboveProbeFlag(gbs / bw).c_str());
  } else {
    std::printf(" %5.0f GOPS |   -  |", 2.0 * m * s.in * s.out / t8.med / 1e9);
  }
  std::printf(" %5.2f× / %5.2f× |", t32.cpu / t8.cpu, t16.cpu / t8.cpu);
  std::printf("\n");
  std::fflush(stdout);
}

// Decode with full-precision weights: the kernel layer's GEMV (what Linear::Dense runs for
// one CPU row) against at::linear on the same weights, bf16 and fp32, GB/s of weights read
// and % of the probe. Calls alternate between the two (same copy cycled, same noise).
void RunDecodeGemv(const Shape& s, double bw) {
  at::manual_seed(s.in * 131 + s.out);
  const at::Tensor w = at::randn({s.out, s.in}) * 0.02;
  const at::Tensor b = at::randn({s.out}) * 0.02;
  for (auto dtype : {at::kBFloat16, at::kFloat}) {
    const at::Tensor x = at::randn({1, s.in}).to(dtype);
    auto make = [&] { return mq::Linear::Dense(w.to(dtype).clone(), b.to(dtype)); };
    const std::vector<mq::Linear> layers = Copies(make(), make, true);
    std::vector<at::Tensor> ws, bs;
    for (size_t i = 0; i < layers.size(); ++i) {
      ws.push_back(w.to(dtype).clone());
      bs.push_back(b.to(dtype));
    }
    std::vector<double> tk, ta;
    const int reps = 60;
    for (int i = 0; i <= reps; ++i) {
      const size_t c = static_cast<size_t>(i) % layers.size();
      auto t0 = mb::Clock::now();
      layers[c].Forward(x);
      auto t1 = mb::Clock::now();
      at::linear(x, ws[c], bs[c]);
      auto t2 = mb::Clock::now();
      if (i == 0) continue;  // warm-up
      tk.push_back(mb::Seconds(t0, t1));
      ta.push_back(mb::Seconds(t1, t2));
    }
    std::sort(tk.begin(), tk.end());
    std::sort(ta.begin(), ta.end());
    const double bytes = static_cast<double>(s.in) * s.out * (dtype == at::kFloat ? 4 : 2);
    const double gk = bytes / tk[tk.size() / 2] / 1e9, ga = bytes / ta[ta.size() / 2] / 1e9;
    std::printf("| %-9s | %5ld→%-5ld | %s | %6.3f | %5.1f GB/s | %3.0f%%%s | %6.3f | %5.1f GB/s | %3.0f%%%s | %5.2f× |\n",
                s.name, s.in, s.out, dtype == at::kFloat ? "fp32" : "bf16", tk[tk.size() / 2] * 1e3, gk,
                100 * gk / bw, mb::AboveProbeFlag(gk / bw).c_str(), ta[ta.size() / 2] * 1e3, ga,
                100 * ga / bw, mb::AboveProbeFlag(ga / bw).c_str(), ga > 0 ? gk / ga : 0.0);
    std::fflush(stdout);
  }
}

void RunDecodeGemvTable(double bw) {
  std::printf("\nDecode GEMV (M=1, medians of %d alternating calls, weights cycled past the LLC):\n"
              "kernel = kernels::Gemv on %s (Linear::Dense, one CPU row); at::linear = the same\n"
              "weights through ATen.\n\n"
              "| layer | in→out | weights | kernel ms | kernel | of roofline | at::linear ms |"
              " at::linear | of roofline | kernel vs at::linear |\n"
              "|---|---|---|---|---|---|---|---|---|---|\n",
              60, moondream::kernels::DefaultKernels().name);
  for (const Shape& s : kShapes) {
    if (std::string(s.name).rfind("text", 0) == 0 || std::string(s.name) == "lm_head") RunDecodeGemv(s, bw);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const char* omp = std::getenv("OMP_NUM_THREADS");
  at::set_num_threads(omp ? std::atoi(omp) : 2);
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  std::vector<int64_t> ms = {729, 1};
  // Optional: one M only, or "gemv": only the decode GEMV table (kernel vs at::linear).
  const bool gemv_only = argc > 1 && std::string(argv[1]) == "gemv";
  if (argc > 1 && !gemv_only) ms = {std::atoll(argv[1])};
  std::printf("threads=%d OPENBLAS_CORETYPE=%s INT8 kernel=%s\n", at::get_num_threads(),
              core ? core : "(unset)", moondream::kernels::DefaultKernels().name);
  const mb::BandwidthProbe probe = mb::ProbeReadBandwidth();
  const double bw = probe.gbs;
  std::printf("read bandwidth %s\n", mb::Describe(probe).c_str());
  PrintLoad();
  std::printf("\n");
  if (gemv_only) {
    RunDecodeGemvTable(bw);
    PrintLoad();
    return 0;
  }
  std::printf("ms and ratios: median / min wall time per call; GOPS, GB/s and roofline from the\n"
              "median; cpu: ratios of median process CPU time per call (int8 vs fp32 / vs bf16).\n\n"
              "| layer | in→out | M | fp32 ms | bf16 ms | int8 ms | int8 vs fp32 | int8 vs bf16 |"
              " int8 | of roofline | cpu |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int64_t m : ms)
    for (const Shape& s : kShapes) RunShape(s, m, bw);
  if (std::find(ms.begin(), ms.end(), 1) != ms.end()) RunDecodeGemvTable(bw);
  PrintLoad();
  return 0;
}
