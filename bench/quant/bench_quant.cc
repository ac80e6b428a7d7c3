// bench_quant: fp32 at::linear vs bf16 at::linear vs INT8 Linear, same run, same threads.
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

using mb::ReadBandwidth;
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
constexpr uint64_t kColdBytes = 256ull << 20;  // 8x the 32 MiB L3  // > 6x the 32 MiB L3

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
  const uint64_t n = cold ? std::max<uint64_t>(1, (kColdBytes + one.bytes() - 1) / one.bytes()) : 1;
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
    std::printf(" %5.1f GB/s | %3.0f%% |", gbs, 100 * gbs / bw);
  } else {
    std::printf(" %5.0f GOPS |   -  |", 2.0 * m * s.in * s.out / t8.med / 1e9);
  }
  std::printf(" %5.2f× / %5.2f× |", t32.cpu / t8.cpu, t16.cpu / t8.cpu);
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const char* omp = std::getenv("OMP_NUM_THREADS");
  at::set_num_threads(omp ? std::atoi(omp) : 2);
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  std::vector<int64_t> ms = {729, 1};
  if (argc > 1) ms = {std::atoll(argv[1])};  // optional: one M only
  std::printf("threads=%d OPENBLAS_CORETYPE=%s INT8 kernel=%s\n", at::get_num_threads(),
              core ? core : "(unset)", moondream::kernels::DefaultKernels().name);
  const double bw = ReadBandwidth();
  std::printf("read bandwidth (best 64 MiB slice of a 1 GiB buffer, %d threads): %.1f GB/s\n", at::get_num_threads(), bw);
  PrintLoad();
  std::printf("\n");
  std::printf("ms and ratios: median / min wall time per call; GOPS, GB/s and roofline from the\n"
              "median; cpu: ratios of median process CPU time per call (int8 vs fp32 / vs bf16).\n\n"
              "| layer | in→out | M | fp32 ms | bf16 ms | int8 ms | int8 vs fp32 | int8 vs bf16 |"
              " int8 | of roofline | cpu |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int64_t m : ms)
    for (const Shape& s : kShapes) RunShape(s, m, bw);
  PrintLoad();
  return 0;
}
