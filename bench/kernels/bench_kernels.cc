// Side by side, for every INT8 GEMM variant this CPU runs: GEMM GFLOP/s on a vision shape
// (m = 729, compute-bound) against the variant's compute bound (its register tile alone on
// L1-resident operands, every thread: MicroKernelBound in kernels/gemm/driver.h, the higher
// of a measurement before and one after the GEMM), and GEMV GB/s of packed weights (m = 1,
// memory-bound) on the text shapes, decode attention's GB/s of int8 KV cache (743 and 2048
// positions) and the dense (bf16 / fp32) GEMV against the read-bandwidth probe of
// bench/common/bandwidth.h (all threads, a buffer >= 8x the LLC, best full pass), taken at the
// start and at the end: the higher is the roofline, and a row above it is flagged. GEMV
// weights and KV caches rotate through --mib of copies (default: the probe's buffer, >= 8x
// the LLC), so they stream from memory as in decode.
// Threads: OMP_NUM_THREADS.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/common/bandwidth.h"
#include "bench/kernels/gemm_files.h"
#include "bench/kernels/packed_layer.h"
#include "kernels/kernels.h"

#define X(file)                                \
  namespace moondream::kernels::bound_##file { \
    double MicroKernelBound(double seconds);   \
  }
MOONDREAM_GEMM_FILES
#undef X

namespace mk = moondream::kernels;
namespace {

// The compute bound of a KernelSet's GEMM, multiply-adds per second; 0 if none was built.
double MicroKernelBound(const mk::KernelSet& ks) {
#define X(file)                                          \
  if (moondream::bench::IsaOfGemmFile(#file) == ks.name) \
    return mk::bound_##file::MicroKernelBound(0.5);
  MOONDREAM_GEMM_FILES
#undef X
  return 0;
}

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

// A PackedLayer timed per ISA; the rotation continues across calls (ISAs), so no copy is warm.
struct Layer : moondream::bench::PackedLayer {
  using PackedLayer::PackedLayer;
  mutable int64_t next = 0;
  // Best seconds per call for m rows.
  double Time(const mk::KernelSet& ks, int64_t m, int reps) const {
    std::vector<float> x(static_cast<size_t>(m * k)), y(static_cast<size_t>(m * n));
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 251) / 125.f - 1.f;
    mk::Int8GemmArgs a = Args(x.data(), m, y.data(), next++);
    mk::Int8Gemm(ks, a);  // warm-up
    return Best(reps, [&](int i) {
      a = Args(x.data(), m, y.data(), next++);  // never a copy touched since the last lap
      mk::Int8Gemm(ks, a);
    });
  }
};

// The dense GEMV (bf16 or fp32 weights): copies of [n, k] weights cycled like Layer's.
struct DenseLayer {
  mk::GemvWeights type;
  int64_t n, k, bytes;
  std::vector<std::vector<uint16_t>> w;  // bf16, or fp32 as pairs of uint16
  mutable size_t next = 0;               // as Layer::next
  DenseLayer(mk::GemvWeights type_, int64_t k_, int64_t n_, int64_t min_bytes)
      : type(type_), n(n_), k(k_) {
    const int64_t elem = type == mk::GemvWeights::kBFloat16 ? 2 : 4;
    bytes = n * k * elem;
    const int64_t copies = std::max<int64_t>(1, (min_bytes + bytes - 1) / bytes);
    std::vector<uint16_t> one(static_cast<size_t>(n * k * elem / 2));
    for (size_t i = 0; i < one.size(); ++i) {  // small finite values whatever the type
      one[i] = static_cast<uint16_t>(elem == 2 || i % 2 == 1 ? 0x3C00 + i * 7919 % 512 : i % 65536);
    }
    for (int64_t c = 0; c < copies; ++c) w.push_back(one);
  }
  double Time(const mk::KernelSet& ks, int reps) const {
    std::vector<float> x(static_cast<size_t>(k)), y(static_cast<size_t>(n)),
        bias(static_cast<size_t>(n), 0.5f);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 251) / 125.f - 1.f;
    mk::GemvArgs a;
    a.type = type;
    a.w = w[next++ % w.size()].data();
    a.n = n;
    a.k = k;
    a.ldw = k;
    a.x = x.data();
    a.bias = bias.data();
    a.y = y.data();
    mk::Gemv(ks, a);  // warm-up
    return Best(reps, [&](int i) {
      a.w = w[next++ % w.size()].data();  // never a copy touched since the last lap
      mk::Gemv(ks, a);
    });
  }
};

// One text-decoder layer's int8 KV cache (32 heads of 64, `positions` rows; the engine's
// layout: per head a block of `capacity` rows, values after keys, a scale per row), in
// enough copies for min_bytes: decode attention over a copy no call touched since the last
// lap, as a decode step's 24 layers read theirs after 1.3 GB of weights.
struct KvLayer {
  static constexpr int64_t kHeads = 32, kHd = 64;
  int64_t positions;
  std::vector<std::vector<int8_t>> rows;  // [2][heads][positions][hd] per copy
  std::vector<float> scales;              // [2][heads][positions], shared by the copies
  mutable size_t next = 0;                // as Layer::next
  KvLayer(int64_t positions_, int64_t min_bytes) : positions(positions_) {
    const int64_t copies = std::max<int64_t>(1, min_bytes / Bytes());
    std::vector<int8_t> one(static_cast<size_t>(2 * kHeads * positions * kHd));
    for (size_t i = 0; i < one.size(); ++i) one[i] = static_cast<int8_t>(i * 7919 % 255 - 127);
    for (int64_t c = 0; c < copies; ++c) rows.push_back(one);
    scales.assign(static_cast<size_t>(2 * kHeads * positions), 1.f / 127);
  }
  // Bytes one call reads: int8 keys and values and their fp32 row scales.
  int64_t Bytes() const { return 2 * kHeads * positions * (kHd + 4); }
  double Time(const mk::KernelSet& ks, int reps) const {
    std::vector<float> q(static_cast<size_t>(kHeads * kHd), 0.125f), out(q.size());
    mk::KvSegment seg;
    seg.type = mk::KvType::kInt8;
    seg.n = positions;
    seg.head_stride = positions * kHd;
    seg.row_stride = kHd;
    seg.key_scales = scales.data();
    seg.value_scales = scales.data() + kHeads * positions;
    seg.scale_head_stride = positions;
    mk::DecodeAttentionArgs a;
    a.q = q.data();
    a.heads = kHeads;
    a.hd = kHd;
    a.segments = &seg;
    a.n_segments = 1;
    a.out = out.data();
    auto call = [&](int) {
      const int8_t* kv =
          rows[next++ % rows.size()].data();  // never a copy touched since the last lap
      seg.keys = kv;
      seg.values = kv + kHeads * positions * kHd;
      mk::DecodeAttention(ks, a);
    };
    call(0);  // warm-up
    return Best(reps, call);
  }
};

// One row of a bandwidth table: the label and, per KernelSet, the GB/s measured. Rows are
// printed at the end, as % of the higher of two probes (before and after every row), with a
// progress line on stderr as each is measured.
struct BandwidthRow {
  std::string label;
  std::vector<double> gbs;
};

template <class Fn>
BandwidthRow MeasureRow(const std::string& label, const std::vector<const mk::KernelSet*>& sets,
                        Fn gbs) {
  BandwidthRow row{label, {}};
  for (const mk::KernelSet* ks : sets) row.gbs.push_back(gbs(*ks));
  std::fprintf(stderr, "bench_kernels: %s measured\n", label.c_str());
  return row;
}

// The row with each GB/s and its % of bw; flagged when any is above it.
void PrintRow(const BandwidthRow& row, double bw) {
  std::printf("%-24s", row.label.c_str());
  double most = 0;  // the highest fraction of the probe in the row
  for (const double g : row.gbs) {
    std::printf("%11.1f (%3.0f%%)", g, 100.0 * g / bw);
    most = std::max(most, g / bw);
  }
  std::printf("%s\n", moondream::bench::AboveProbeFlag(most).c_str());
}

bool Slow(const mk::KernelSet& ks) { return std::string(ks.name) == "scalar"; }

}  // namespace

int main(int argc, char** argv) {
  int64_t mib = 0;  // 0: the probe's buffer size
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--mib=", 6) == 0) mib = std::atoll(argv[i] + 6);
  }
  std::vector<const mk::KernelSet*> sets;
  for (const mk::KernelSet* ks : mk::AllKernelSets()) {
    if (ks->runs(mk::HostCpu())) sets.push_back(ks);
  }
  namespace mb = moondream::bench;
  const mb::BandwidthProbe probe_start = mb::ProbeReadBandwidth();
  if (mib <= 0) mib = static_cast<int64_t>(probe_start.buffer_bytes >> 20);
  std::printf("threads %d, read bandwidth at the start %s\n\n", omp_get_max_threads(),
              mb::Describe(probe_start).c_str());

  std::printf("%-24s", "shape");
  for (const mk::KernelSet* ks : sets) std::printf("%18s", ks->name);
  std::printf("\n");

  // The compute bound is measured before and after the GEMM; the higher counts.
  std::vector<double> bound_before;
  for (const mk::KernelSet* ks : sets) bound_before.push_back(MicroKernelBound(*ks));
  const Layer vision(1152, 4304, 0);
  std::printf("%-24s", "m=729 1152x4304 GFLOP/s");
  std::vector<double> gflops;
  for (const mk::KernelSet* ks : sets) {
    const double t = vision.Time(*ks, 729, Slow(*ks) ? 1 : 5);
    gflops.push_back(2.0 * 729 * 1152 * 4304 / t / 1e9);
    std::printf("%18.1f", gflops.back());
  }
  std::printf("\n%-24s", "  bound, % of it");
  bool above_bound = false;
  for (size_t i = 0; i < sets.size(); ++i) {
    const double bound = 2.0 * std::max(bound_before[i], MicroKernelBound(*sets[i])) / 1e9;
    std::printf("%11.1f (%3.0f%%)", bound, 100.0 * gflops[i] / bound);
    above_bound = above_bound || gflops[i] > bound;
  }
  std::printf("%s\n", above_bound ? "  ABOVE BOUND: the machine's load changed between them" : "");

  // The GEMV rows (packed int8 weights), decode attention over the int8 KV cache (one text
  // layer: keys, values and row scales) and the dense GEMV (bf16 / fp32 weights; variants
  // with the same GEMV, avxvnni: avx2's, are timed again, as a measure of the noise).
  const std::vector<std::pair<int64_t, int64_t>> text_shapes = {
      {2048, 2048}, {2048, 6144}, {2048, 8192}, {8192, 2048}, {2048, 51200}};
  std::vector<BandwidthRow> int8_rows, dense_rows;
  for (const auto& [k, n] : text_shapes) {
    const Layer layer(k, n, mib << 20);
    int8_rows.push_back(MeasureRow("m=1 " + std::to_string(k) + "x" + std::to_string(n) + " GB/s",
                                   sets, [&](const mk::KernelSet& ks) {
                                     return static_cast<double>(mk::PackedInt8Bytes(n, k)) /
                                            layer.Time(ks, 1, 20) / 1e9;
                                   }));
  }
  for (int64_t positions : {743, 2048}) {
    const KvLayer layer(positions, mib << 20);
    int8_rows.push_back(MeasureRow(
        "attn kv8 " + std::to_string(positions) + " pos GB/s", sets, [&](const mk::KernelSet& ks) {
          return static_cast<double>(layer.Bytes()) / layer.Time(ks, Slow(ks) ? 2 : 20) / 1e9;
        }));
  }
  for (mk::GemvWeights type : {mk::GemvWeights::kBFloat16, mk::GemvWeights::kFloat32}) {
    for (const auto& [k, n] : text_shapes) {
      const DenseLayer layer(type, k, n, mib << 20);
      dense_rows.push_back(MeasureRow(
          std::string(type == mk::GemvWeights::kBFloat16 ? "bf16 " : "fp32 ") + std::to_string(k) +
              "x" + std::to_string(n) + " GB/s",
          sets, [&](const mk::KernelSet& ks) {
            return static_cast<double>(layer.bytes) / layer.Time(ks, Slow(ks) ? 2 : 20) / 1e9;
          }));
    }
  }

  // The roofline: the higher of the two probes (the machine's load drifts during a run).
  const mb::BandwidthProbe probe_end = mb::ProbeReadBandwidth();
  const double bw = std::max(probe_start.gbs, probe_end.gbs);
  std::printf(
      "\nread bandwidth at the end %s\nroofline %.1f GB/s, the higher of the two; GEMV weights "
      "and KV caches cycle through %lld MiB of copies; (%%) = of the roofline\n\n",
      mb::Describe(probe_end).c_str(), bw, static_cast<long long>(mib));
  std::printf("%-24s", "INT8, m=1");
  for (const mk::KernelSet* ks : sets) std::printf("%18s", ks->name);
  std::printf("\n");
  for (const BandwidthRow& row : int8_rows) PrintRow(row, bw);
  std::printf("\ndense GEMV (kernels::Gemv), GB/s of weights\n");
  for (const BandwidthRow& row : dense_rows) PrintRow(row, bw);
  return 0;
}
