#include "bench/common/bandwidth.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <utility>
#include <string>

namespace moondream::bench {
namespace {

constexpr uint64_t kMinBytes = 1ull << 30;
constexpr uint64_t kLlcMultiple = 8;

// Each pass reads the buffer in one of these layouts, in turn: a thread's share as blocks of
// `rows` rows of `row_floats` floats, the rows of a block read side by side (one cache line
// from each in turn), like a GEMV; row_floats 0 = the whole share as one sequential stream.
// Several nearby streams can draw far more than one: on an AMD Zen 3 VM (2026-12-07) one
// stream per thread read 24-36 GB/s and 4 rows side by side 32-54 GB/s, while the fp32 GEMV
// (4 rows of 8 KiB) streamed 37 GB/s past a one-stream probe of 32.
struct Layout {
  int64_t row_floats;
  int rows;
};
constexpr Layout kLayouts[] = {{0, 1}, {2048, 4}, {16384, 4}, {1 << 20, 4}};
constexpr int kLayoutCount = static_cast<int>(std::size(kLayouts));

// The largest block of kLayouts: every thread's share is a multiple of it.
constexpr int64_t LargestBlockFloats() {
  int64_t most = 0;
  for (const Layout& l : kLayouts) most = std::max(most, l.row_floats * l.rows);
  return most;
}
constexpr int64_t kBlockFloats = LargestBlockFloats();

// The sum of p[0, n) read in layout l; n is a multiple of l's block (or l is one stream).
#if defined(__x86_64__)
template <int R>
__attribute__((target("avx2"))) float SumAvx2(const float* p, int64_t n, int64_t row) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t b = 0; b < n; b += R * row) {
    for (int64_t c = 0; c < row; c += 16) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const float* q = p + b + r * row + c;
        s0 = _mm256_add_ps(s0, _mm256_load_ps(q));
        s1 = _mm256_add_ps(s1, _mm256_load_ps(q + 8));
        std::swap(s0, s2);
        std::swap(s1, s3);
      }
    }
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}
#endif

template <int R>
float SumPortable(const float* p, int64_t n, int64_t row) {
  float acc[16] = {0};
  for (int64_t b = 0; b < n; b += R * row)
    for (int64_t c = 0; c < row; c += 16)
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < 16; ++j) acc[j] += p[b + r * row + c + j];
  float total = 0;
  for (float v : acc) total += v;
  return total;
}

template <int R>
float SumRows(const float* p, int64_t n, int64_t row) {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2 ? SumAvx2<R>(p, n, row) : SumPortable<R>(p, n, row);
#else
  return SumPortable<R>(p, n, row);
#endif
}

float Sum(const float* p, int64_t n, const Layout& l) {
  return l.rows == 1 ? SumRows<1>(p, n, l.row_floats > 0 ? l.row_floats : n)
                     : SumRows<4>(p, n, l.row_floats);
}

uint64_t ParseSize(std::string s) {  // "491520K", "32M", "1048576"
  if (s.empty()) return 0;
  uint64_t mult = 1;
  const char last = s.back();
  if (last == 'K' || last == 'k') mult = 1ull << 10;
  if (last == 'M' || last == 'm') mult = 1ull << 20;
  if (last == 'G' || last == 'g') mult = 1ull << 30;
  if (mult != 1) s.pop_back();
  return std::strtoull(s.c_str(), nullptr, 10) * mult;
}

std::string Describe(const Layout& l) {
  if (l.row_floats == 0) return "1 stream per thread";
  return std::to_string(l.rows) + " rows of " + std::to_string(l.row_floats * 4 >> 10) +
         " KiB side by side";
}

}  // namespace

uint64_t LastLevelCacheBytes() {
#ifdef _SC_LEVEL3_CACHE_SIZE
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l3 > 0) return static_cast<uint64_t>(l3);
#endif
  uint64_t best = 0;
  for (int i = 0; i < 8; ++i) {
    std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
    std::string s;
    if (f >> s) best = std::max(best, ParseSize(s));
  }
  return best;
}

BandwidthProbe ProbeReadBandwidth(int passes, uint64_t min_bytes) {
  BandwidthProbe probe;
  probe.llc_bytes = LastLevelCacheBytes();
  probe.threads = omp_get_max_threads();
  probe.passes = std::max(1, passes);
  // Rounded up to whole blocks per thread.
  const uint64_t unit = static_cast<uint64_t>(probe.threads) * kBlockFloats * sizeof(float);
  const uint64_t bytes =
      (std::max({min_bytes, kMinBytes, kLlcMultiple * probe.llc_bytes}) + unit - 1) / unit * unit;
  probe.buffer_bytes = bytes;
  const int64_t n = static_cast<int64_t>(bytes / sizeof(float));
  float* buf = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (buf == nullptr) std::abort();
  const int threads = probe.threads;
  // Each thread's contiguous share: n / threads, a multiple of kBlockFloats.
  auto share = [&](int t, int64_t* begin, int64_t* len) {
    *len = n / threads;
    *begin = t * *len;
  };
#pragma omp parallel num_threads(threads)
  {
    int64_t b, len;
    share(omp_get_thread_num(), &b, &len);
    std::fill(buf + b, buf + b + len, 1.0f);  // first touch by the thread that reads it
  }
  std::vector<float> partial(static_cast<size_t>(threads) * 16, 0.f);
  float sink = 0;
  for (int p = 0; p < probe.passes; ++p) {
    const Layout& layout = kLayouts[p % kLayoutCount];
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      int64_t b, len;
      share(t, &b, &len);
      partial[t * 16] = Sum(buf + b, len, layout);
    }
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (int t = 0; t < threads; ++t) sink += partial[t * 16];
    probe.pass_gbs.push_back(static_cast<double>(bytes) / s / 1e9);
    probe.pass_layouts.push_back(Describe(layout));
  }
  std::free(buf);
  if (!(sink > 0)) std::abort();  // keeps the sums alive
  const auto best = std::max_element(probe.pass_gbs.begin(), probe.pass_gbs.end());
  probe.gbs = *best;
  probe.best_layout = probe.pass_layouts[static_cast<size_t>(best - probe.pass_gbs.begin())];
  return probe;
}

std::string Describe(const BandwidthProbe& probe) {
  char llc[64] = "LLC unknown";
  if (probe.llc_bytes > 0) {
    std::snprintf(llc, sizeof llc, "%.1fx the %llu MiB LLC",
                  static_cast<double>(probe.buffer_bytes) / probe.llc_bytes,
                  static_cast<unsigned long long>(probe.llc_bytes >> 20));
  }
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "%.1f GB/s (%s; best of %d full passes in %d layouts over %llu MiB = %s, %d threads)",
                probe.gbs, probe.best_layout.c_str(), probe.passes, kLayoutCount,
                static_cast<unsigned long long>(probe.buffer_bytes >> 20), llc, probe.threads);
  return buf;
}

std::string AboveProbeFlag(double fraction) {
  return fraction > 1.0 ? " ABOVE PROBE: roofline invalid" : "";
}

}  // namespace moondream::bench
