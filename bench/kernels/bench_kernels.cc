// Side by side, for every INT8 GEMM variant this CPU runs: GEMM GFLOP/s on a vision shape
// (m = 729, compute-bound) and GEMV GB/s of packed weights (m = 1, memory-bound) on the
// text shapes, against a read-bandwidth probe (all threads, a buffer >> LLC, best pass).
// GEMV weights rotate through enough copies to exceed the probe's buffer, so they stream
// from memory as in decode. Threads: OMP_NUM_THREADS.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace mk = moondream::kernels;
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best seconds of `reps` calls of fn.
template <class Fn>
double Best(int reps, Fn fn) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const double t0 = Now();
    fn(i);
    best = std::min(best, Now() - t0);
  }
  return best;
}

double ReadBandwidthGBs(int64_t bytes) {
  const int64_t words = bytes / 8;
  std::vector<int64_t> buf(static_cast<size_t>(words));
#pragma omp parallel for
  for (int64_t i = 0; i < words; ++i) buf[i] = i;
  int64_t sink = 0;
  const double t = Best(5, [&](int) {
    int64_t sum = 0;
#pragma omp parallel for simd reduction(+ : sum)
    for (int64_t i = 0; i < words; ++i) sum += buf[i];
    sink += sum;
  });
  if (sink == 42) std::puts("");
  return static_cast<double>(words * 8) / t / 1e9;
}

struct Layer {
  int64_t copies, n, k;
  std::vector<std::vector<int8_t>> packed;
  std::vector<int32_t> row_sum;
  std::vector<float> scale, bias;
  Layer(int64_t k_, int64_t n_, int64_t min_bytes) : n(n_), k(k_) {
    const int64_t bytes = mk::PackedInt8Bytes(n, k);
    copies = std::max<int64_t>(1, (min_bytes + bytes - 1) / bytes);
    std::vector<int8_t> q(static_cast<size_t>(n * k));
    for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<int8_t>(static_cast<int>(i * 7919 % 255) - 127);
    row_sum.resize(static_cast<size_t>(n));
    for (int64_t c = 0; c < copies; ++c) {
      packed.emplace_back(static_cast<size_t>(bytes));
      mk::PackInt8Weights(q.data(), n, k, packed.back().data(), row_sum.data());
    }
    scale.assign(static_cast<size_t>(n), 1e-3f);
    bias.assign(static_cast<size_t>(n), 0.5f);
  }
  // Best seconds per call for m rows.
  double Time(const mk::KernelSet& ks, int64_t m, int reps) const {
    std::vector<float> x(static_cast<size_t>(m * k)), y(static_cast<size_t>(m * n));
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 251) / 125.f - 1.f;
    mk::Int8GemmArgs a;
    a.x = x.data();
    a.m = m;
    a.ldx = k;
    a.w = packed[0].data();
    a.w_row_sum = row_sum.data();
    a.n = n;
    a.k = k;
    a.w_scale = scale.data();
    a.bias = bias.data();
    a.y = y.data();
    a.ldy = n;
    mk::Int8Gemm(ks, a);  // warm-up
    return Best(reps, [&](int i) {
      a.w = packed[static_cast<size_t>(i) % packed.size()].data();
      mk::Int8Gemm(ks, a);
    });
  }
};

}  // namespace

int main(int argc, char** argv) {
  int64_t mib = 1024;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--mib=", 6) == 0) mib = std::atoll(argv[i] + 6);
  }
  std::vector<const mk::KernelSet*> sets;
  for (const mk::KernelSet* ks : mk::AllKernelSets()) {
    if (ks->runs(mk::HostCpu())) sets.push_back(ks);
  }
  const double bw = ReadBandwidthGBs(mib << 20);
  std::printf("threads %d, read bandwidth %.1f GB/s (%lld MiB, best of 5)\n\n", omp_get_max_threads(), bw,
              static_cast<long long>(mib));

  std::printf("%-24s", "shape");
  for (const mk::KernelSet* ks : sets) std::printf("%18s", ks->name);
  std::printf("\n");

  const Layer vision(1152, 4304, 0);
  std::printf("%-24s", "m=729 1152x4304 GFLOP/s");
  for (const mk::KernelSet* ks : sets) {
    const bool slow = std::string(ks->name) == "scalar";
    const double t = vision.Time(*ks, 729, slow ? 1 : 5);
    std::printf("%18.1f", 2.0 * 729 * 1152 * 4304 / t / 1e9);
  }
  std::printf("\n");

  for (const auto& [k, n] : std::vector<std::pair<int64_t, int64_t>>{
           {2048, 2048}, {2048, 6144}, {2048, 8192}, {8192, 2048}, {2048, 51200}}) {
    const Layer layer(k, n, mib << 20);
    const std::string label = "m=1 " + std::to_string(k) + "x" + std::to_string(n) + " GB/s";
    std::printf("%-24s", label.c_str());
    for (const mk::KernelSet* ks : sets) {
      const double gbs = static_cast<double>(mk::PackedInt8Bytes(n, k)) / layer.Time(*ks, 1, 20) / 1e9;
      std::printf("%11.1f (%3.0f%%)", gbs, 100.0 * gbs / bw);
    }
    std::printf("\n");
  }
  return 0;
}
