// Each INT8 GEMM's decode (m = 1) as the server runs it, beside variants of its decode
// constants (kDecodePrefetch, kDecodeStreams in kernels/gemm/<file>.cc): that file compiled
// again per variant in a namespace of its own (bench/kernels/CMakeLists.txt lists them). Per
// ISA this CPU runs and per text-decoder shape, the variants are called in turn, a rotating
// order per lap, each call on the next packed copy of the weights (no call finds them in the
// LLC), so a shared machine's swings fall on every variant alike; reported: mean GB/s of
// packed weights, the ratio to the shipped kernel and the % of the read probe (a row above
// the probe is flagged, as in bench_kernels). Every variant's output must equal the shipped
// kernel's bit for bit (integer sums: the order changes nothing), else exit 1. Exit 77 where
// the CPU runs none of the ISAs.
//   bench_decode_variants [--laps=N (40)] [--mib=N (the probe's buffer, >= 8x the LLC)]
// Threads: OMP_NUM_THREADS.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/common/bandwidth.h"
#include "bench/common/bench_common.h"
#include "bench/kernels/gemm_files.h"
#include "bench/kernels/packed_layer.h"
#include "kernels/kernels.h"

#define X(file, name)                                         \
  namespace moondream::kernels::decode_##name {               \
    void Int8Gemm(const Int8GemmArgs& args, void* workspace); \
  }
MOONDREAM_DECODE_VARIANTS
#undef X

namespace mk = moondream::kernels;
namespace {

using GemmFn = void (*)(const mk::Int8GemmArgs&, void*);
struct Variant {
  std::string name;
  GemmFn fn;
};
// The variants of one kernel file, the shipped kernel first.
struct Family {
  std::string file, isa;     // kernels/gemm/<file>.cc; its KernelSet's name
  const mk::KernelSet* set;  // that KernelSet (the shipped kernel), nullptr if not built
  std::vector<Variant> variants;
};

std::vector<Family> Families() {
  std::vector<Family> families;
  auto add = [&families](const std::string& file, const std::string& name, GemmFn fn) {
    if (families.empty() || families.back().file != file) {
      const mk::KernelSet* ks = moondream::bench::KernelSetOfGemmFile(file);
      families.push_back({file,
                          moondream::bench::IsaOfGemmFile(file),
                          ks,
                          {{"shipped", ks != nullptr ? ks->int8_gemm : nullptr}}});
    }
    families.back().variants.push_back({name.substr(file.size() + 1), fn});
  };
#define X(file, name) add(#file, #name, &mk::decode_##name::Int8Gemm);
  MOONDREAM_DECODE_VARIANTS
#undef X
  return families;
}

void Print(const std::string& label, const std::vector<double>& seconds, double bytes,
           double probe_gbs) {
  std::printf("%-18s", label.c_str());
  double most = 0;  // the highest fraction of the probe in the row
  for (double s : seconds) {
    std::printf("%8.1f (x%4.2f) [%3.0f%%]", bytes / s / 1e9, seconds[0] / s,
                100 * bytes / s / 1e9 / probe_gbs);
    most = std::max(most, bytes / s / 1e9 / probe_gbs);
  }
  std::printf("%s\n", moondream::bench::AboveProbeFlag(most).c_str());
}

// The family's table; false if a variant's output differs from the shipped kernel's.
bool Measure(const Family& f, int laps, int64_t mib, double probe_gbs) {
  std::printf("\n%s (kernels/gemm/%s.cc)\n%-18s", f.isa.c_str(), f.file.c_str(), "shape k x n");
  for (const Variant& v : f.variants) std::printf("%26s", v.name.c_str());
  std::printf("\n");
  std::vector<double> all_seconds(f.variants.size(), 0);
  double all_bytes = 0;
  for (const auto& [k, n] : std::vector<std::pair<int64_t, int64_t>>{
           {2048, 6144}, {2048, 2048}, {2048, 8192}, {8192, 2048}, {2048, 51200}}) {
    const moondream::bench::PackedLayer layer(k, n, mib << 20);
    std::vector<float> x(static_cast<size_t>(k)), want(static_cast<size_t>(n)), y(want.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 251) / 125.f - 1.f;
    const std::unique_ptr<void, decltype(&std::free)> ws(
        std::aligned_alloc(64, (mk::Int8GemmWorkspaceBytes(1, k) + 64) / 64 * 64), &std::free);
    f.variants[0].fn(layer.Args(x.data(), 1, want.data(), 0), ws.get());
    for (const Variant& v : f.variants) {
      v.fn(layer.Args(x.data(), 1, y.data(), 0), ws.get());
      if (std::memcmp(y.data(), want.data(), y.size() * sizeof(float)) != 0) {
        std::printf("FAIL: %s %s differs from the shipped kernel on %lld x %lld\n", f.isa.c_str(),
                    v.name.c_str(), static_cast<long long>(k), static_cast<long long>(n));
        return false;
      }
    }
    std::vector<double> seconds(f.variants.size(), 0);
    int64_t copy = 1;
    for (int lap = 0; lap < laps; ++lap) {
      for (size_t i = 0; i < f.variants.size(); ++i) {
        const size_t v = (i + static_cast<size_t>(lap)) % f.variants.size();
        const mk::Int8GemmArgs a = layer.Args(x.data(), 1, y.data(), copy++);
        const auto t0 = moondream::bench::Clock::now();
        f.variants[v].fn(a, ws.get());
        seconds[v] += moondream::bench::Seconds(t0, moondream::bench::Clock::now());
      }
    }
    const double bytes = static_cast<double>(mk::PackedInt8Bytes(n, k)) * laps;
    Print(std::to_string(k) + " x " + std::to_string(n), seconds, bytes, probe_gbs);
    for (size_t v = 0; v < seconds.size(); ++v) all_seconds[v] += seconds[v];
    all_bytes += bytes;
  }
  Print("all five", all_seconds, all_bytes, probe_gbs);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int laps = 40;
  int64_t mib = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--laps=", 7) == 0) laps = std::max(1, std::atoi(argv[i] + 7));
    if (std::strncmp(argv[i], "--mib=", 6) == 0) mib = std::atoll(argv[i] + 6);
  }
  std::vector<Family> runnable;
  for (Family& f : Families()) {
    if (f.set != nullptr && f.set->runs(mk::HostCpu())) {
      runnable.push_back(std::move(f));
    } else {
      std::printf("%s: SKIP, this CPU lacks it\n", f.isa.c_str());
    }
  }
  if (runnable.empty()) return 77;
  const moondream::bench::BandwidthProbe probe = moondream::bench::ProbeReadBandwidth();
  if (mib <= 0) mib = static_cast<int64_t>(probe.buffer_bytes >> 20);
  std::printf(
      "threads %d, read bandwidth %s\nweights cycle through %lld MiB of copies; %d laps; "
      "mean GB/s of packed weights, (x shipped), [%% of the probe]\n",
      omp_get_max_threads(), moondream::bench::Describe(probe).c_str(), static_cast<long long>(mib),
      laps);
  for (const Family& f : runnable) {
    if (!Measure(f, laps, mib, probe.gbs)) return 1;
  }
  return 0;
}
