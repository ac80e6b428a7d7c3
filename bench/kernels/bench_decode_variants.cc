// The AVX2 INT8 decode GEMV (m = 1) as the server runs it beside variants of its decode
// constants (kernels/gemm/avx2.cc's kDecodePrefetch and kDecodeStreams), each variant that
// file compiled again in a namespace of its own (bench/kernels/CMakeLists.txt lists them).
// Per text-decoder shape, the variants are called in turn, a rotating order per lap, each call
// on the next packed copy of the weights (no call finds them in the LLC), so a shared
// machine's swings fall on every variant alike; reported: mean GB/s of packed weights per
// variant, its ratio to the shipped kernel and the % of the read probe. Every variant's output
// must equal the shipped kernel's bit for bit (integer sums: the order changes nothing), else
// exit 1. Exit 77 where the CPU lacks AVX2.
//   bench_decode_variants [--laps=N (40)] [--mib=N (the probe's buffer, >= 8x the LLC)]
// Threads: OMP_NUM_THREADS.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/common/bandwidth.h"
#include "bench/kernels/packed_layer.h"
#include "kernels/kernels.h"

#define MOONDREAM_DECLARE_VARIANT(ns) \
  namespace moondream::kernels::ns { void Int8Gemm(const Int8GemmArgs& args, void* workspace); }
#define X(ns) MOONDREAM_DECLARE_VARIANT(decode_##ns)
MOONDREAM_DECODE_VARIANTS
#undef X

namespace mk = moondream::kernels;
namespace {

using GemmFn = void (*)(const mk::Int8GemmArgs&, void*);
struct Variant {
  std::string name;
  GemmFn fn;
};

std::vector<Variant> Variants(const mk::KernelSet& avx2) {
  std::vector<Variant> v{{"shipped", avx2.int8_gemm}};
#define X(ns) v.push_back({#ns, &mk::decode_##ns::Int8Gemm});
  MOONDREAM_DECODE_VARIANTS
#undef X
  return v;
}

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

const mk::KernelSet* Avx2Set() {
  for (const mk::KernelSet* ks : mk::AllKernelSets()) {
    if (std::string(ks->name) == "avx2") return ks->runs(mk::HostCpu()) ? ks : nullptr;
  }
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  int laps = 40;
  int64_t mib = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--laps=", 7) == 0) laps = std::max(1, std::atoi(argv[i] + 7));
    if (std::strncmp(argv[i], "--mib=", 6) == 0) mib = std::atoll(argv[i] + 6);
  }
  const mk::KernelSet* avx2 = Avx2Set();
  if (avx2 == nullptr) {
    std::printf("SKIP: this CPU lacks AVX2\n");
    return 77;
  }
  const std::vector<Variant> variants = Variants(*avx2);
  const moondream::bench::BandwidthProbe probe = moondream::bench::ProbeReadBandwidth();
  if (mib <= 0) mib = static_cast<int64_t>(probe.buffer_bytes >> 20);
  std::printf("threads %d, read bandwidth %s\nweights cycle through %lld MiB of copies; %d laps; "
              "mean GB/s of packed weights, (x shipped), [%% of the probe]\n\n",
              omp_get_max_threads(), moondream::bench::Describe(probe).c_str(),
              static_cast<long long>(mib), laps);
  std::printf("%-18s", "shape k x n");
  for (const Variant& v : variants) std::printf("%26s", v.name.c_str());
  std::printf("\n");
  std::vector<double> all_seconds(variants.size(), 0);
  double all_bytes = 0;
  for (const auto& [k, n] : std::vector<std::pair<int64_t, int64_t>>{
           {2048, 6144}, {2048, 2048}, {2048, 8192}, {8192, 2048}, {2048, 51200}}) {
    const moondream::bench::PackedLayer layer(k, n, mib << 20);
    std::vector<float> x(static_cast<size_t>(k)), want(static_cast<size_t>(n)), y(want.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 251) / 125.f - 1.f;
    const std::unique_ptr<void, decltype(&std::free)> ws(
        std::aligned_alloc(64, (mk::Int8GemmWorkspaceBytes(1, k) + 64) / 64 * 64), &std::free);
    variants[0].fn(layer.Args(x.data(), 1, want.data(), 0), ws.get());
    for (const Variant& v : variants) {
      v.fn(layer.Args(x.data(), 1, y.data(), 0), ws.get());
      if (std::memcmp(y.data(), want.data(), y.size() * sizeof(float)) != 0) {
        std::printf("FAIL: %s differs from the shipped kernel on %lld x %lld\n", v.name.c_str(),
                    static_cast<long long>(k), static_cast<long long>(n));
        return 1;
      }
    }
    std::vector<double> seconds(variants.size(), 0);
    int64_t copy = 1;
    for (int lap = 0; lap < laps; ++lap) {
      for (size_t i = 0; i < variants.size(); ++i) {
        const size_t f = (i + static_cast<size_t>(lap)) % variants.size();
        const mk::Int8GemmArgs a = layer.Args(x.data(), 1, y.data(), copy++);
        const double t0 = Seconds();
        variants[f].fn(a, ws.get());
        seconds[f] += Seconds() - t0;
      }
    }
    const double bytes = static_cast<double>(mk::PackedInt8Bytes(n, k)) * laps;
    const std::string label = std::to_string(k) + " x " + std::to_string(n);
    std::printf("%-18s", label.c_str());
    for (size_t f = 0; f < variants.size(); ++f) {
      std::printf("%8.1f (x%4.2f) [%3.0f%%]", bytes / seconds[f] / 1e9, seconds[0] / seconds[f],
                  100 * bytes / seconds[f] / 1e9 / probe.gbs);
      all_seconds[f] += seconds[f];
    }
    std::printf("\n");
    all_bytes += bytes;
  }
  std::printf("%-18s", "all five");
  for (size_t f = 0; f < variants.size(); ++f) {
    std::printf("%8.1f (x%4.2f) [%3.0f%%]", all_bytes / all_seconds[f] / 1e9,
                all_seconds[0] / all_seconds[f], 100 * all_bytes / all_seconds[f] / 1e9 / probe.gbs);
  }
  std::printf("\n");
  return 0;
}
