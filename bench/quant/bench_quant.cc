// bench_quant: fp32 at::linear vs bf16 at::linear vs INT8 Linear, same run, same threads.
// Prefill/vision at M=729 (compute-bound) and decode at M=1 (memory-bound, weights cycled
// through enough copies to defeat the L3 so every call streams from DRAM), plus the
// machine's read bandwidth measured in the same process as the decode roofline.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "quantization/int8_gemm.h"
#include "quantization/linear.h"

namespace mq = moondream::quant;
namespace mqi = moondream::quant::internal;
namespace {

using Clock = std::chrono::steady_clock;

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
constexpr uint64_t kColdBytes = 192ull << 20;  // > 6x the 32 MiB L3

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Median seconds per call of fn(i), i counting calls; at least 3 calls, about budget_s.
template <typename Fn>
double TimeIt(Fn fn, double budget_s) {
  fn(0);  // warm-up
  std::vector<double> t;
  const auto start = Clock::now();
  for (int i = 1; t.size() < 3 || (Seconds(start, Clock::now()) < budget_s && t.size() < 200); ++i) {
    const auto a = Clock::now();
    fn(i);
    t.push_back(Seconds(a, Clock::now()));
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

__attribute__((target("avx512f"))) float SumChunk(const float* p, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t i = 0; i + 64 <= n; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_loadu_ps(p + i));
    s1 = _mm512_add_ps(s1, _mm512_loadu_ps(p + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_loadu_ps(p + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_loadu_ps(p + i + 48));
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}

// Read bandwidth (GB/s): best of 5 parallel sums over a 1 GiB buffer.
double ReadBandwidth() {
  const at::Tensor buf = at::ones({(1ll << 30) / 4});
  const float* p = buf.data_ptr<float>();
  const int64_t chunk = 1 << 20;
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<float> partial(at::get_num_threads() * 64, 0.f);
    const auto a = Clock::now();
    at::parallel_for(0, buf.numel() / chunk, 1, [&](int64_t b, int64_t e) {
      float s = 0;
      for (int64_t c = b; c < e; ++c) s += SumChunk(p + c * chunk, chunk);
      partial[at::get_thread_num() * 64] += s;
    });
    const double sec = Seconds(a, Clock::now());
    float total = 0;
    for (float v : partial) total += v;
    if (total != static_cast<float>(buf.numel()) && total < 1e6f) std::abort();
    best = std::max(best, buf.nbytes() / sec / 1e9);
  }
  return best;
}

// Enough independent copies of a layer that cycling through them misses the L3.
std::vector<mq::Linear> Copies(const mq::Linear& one, const std::function<mq::Linear()>& make, bool cold) {
  std::vector<mq::Linear> v{one};
  const uint64_t n = cold ? std::max<uint64_t>(1, (kColdBytes + one.bytes() - 1) / one.bytes()) : 1;
  while (v.size() < n) v.push_back(make());
  return v;
}

double TimeLayers(const std::vector<mq::Linear>& layers, const at::Tensor& x, double budget) {
  return TimeIt([&](int i) { layers[i % layers.size()].Forward(x); }, budget);
}

void RunShape(const Shape& s, int64_t m, double bw) {
  at::manual_seed(s.in * 131 + s.out);
  const at::Tensor w = at::randn({s.out, s.in}) * 0.02;
  const at::Tensor b = at::randn({s.out}) * 0.02;
  auto q = mq::QuantizePerChannel(w, s.name, nullptr);
  if (!q.ok()) std::abort();
  const bool cold = m == 1;
  const double budget = cold ? 0.6 : 1.0;
  const at::Tensor x = at::randn({m, s.in});
  const at::Tensor xb = x.to(at::kBFloat16);
  double t32, t16, t8;
  uint64_t int8_bytes;
  {
    auto make = [&] { return mq::Linear::Dense(w.clone(), b.clone()); };
    t32 = TimeLayers(Copies(make(), make, cold), x, budget);
  }
  {
    auto make = [&] { return mq::Linear::Dense(w.to(at::kBFloat16), b.to(at::kBFloat16)); };
    t16 = TimeLayers(Copies(make(), make, cold), xb, budget);
  }
  {
    auto make = [&] { return mq::Linear::Int8(*q, b); };
    const mq::Linear one = make();
    int8_bytes = one.bytes();
    t8 = TimeLayers(Copies(one, make, cold), x, budget);
  }
  std::printf("| %-14s | %5ld→%-5ld | %4ld | %8.3f | %8.3f | %8.3f | %5.2f× | %5.2f× |", s.name, s.in,
              s.out, m, t32 * 1e3, t16 * 1e3, t8 * 1e3, t32 / t8, t16 / t8);
  if (cold) {
    const double gbs = int8_bytes / t8 / 1e9;
    std::printf(" %6.1f | %4.0f%% |", gbs, 100 * gbs / bw);
  } else {
    std::printf(" %6.0f |   -   |", 2.0 * m * s.in * s.out / t8 / 1e9);
  }
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
              core ? core : "(unset)", mqi::CpuHasVnni() ? "avx512-vnni" : "fallback (dequantize + matmul)");
  const double bw = ReadBandwidth();
  std::printf("read bandwidth (1 GiB sum, %d threads): %.1f GB/s\n\n", at::get_num_threads(), bw);
  std::printf("| layer | in→out | M | fp32 ms | bf16 ms | int8 ms | int8 vs fp32 | int8 vs bf16 |"
              " int8 GOPS or GB/s | %% roofline |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (int64_t m : ms)
    for (const Shape& s : kShapes) RunShape(s, m, bw);
  return 0;
}
