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
#include <string>

namespace moondream::bench {
namespace {

constexpr uint64_t kMinBytes = 1ull << 30;
constexpr uint64_t kLlcMultiple = 8;

#if defined(__x86_64__)
__attribute__((target("avx512f"))) float SumAvx512(const float* p, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t i = 0; i + 64 <= n; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_load_ps(p + i));
    s1 = _mm512_add_ps(s1, _mm512_load_ps(p + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_load_ps(p + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

__attribute__((target("avx2"))) float SumAvx2(const float* p, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t i = 0; i + 32 <= n; i += 32) {
    s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
    s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}

#endif

float SumPortable(const float* p, int64_t n) {
  float s[8] = {0};
  for (int64_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += p[i + j];
  float total = 0;
  for (float v : s) total += v;
  return total;
}

float Sum(const float* p, int64_t n) {
#if defined(__x86_64__)
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx512 ? SumAvx512(p, n) : avx2 ? SumAvx2(p, n) : SumPortable(p, n);
#else
  return SumPortable(p, n);
#endif
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
  const uint64_t bytes =
      std::max({min_bytes, kMinBytes, kLlcMultiple * probe.llc_bytes}) / (1u << 20) * (1u << 20);
  probe.buffer_bytes = bytes;
  const int64_t n = static_cast<int64_t>(bytes / sizeof(float));
  float* buf = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (buf == nullptr) std::abort();
  const int threads = probe.threads;
  // Each thread's contiguous share, a multiple of 64 floats (the widest loop's step).
  auto share = [&](int t, int64_t* begin, int64_t* len) {
    const int64_t per = (n / threads) / 64 * 64;
    *begin = t * per;
    *len = t == threads - 1 ? n - *begin : per;
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
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      int64_t b, len;
      share(t, &b, &len);
      partial[t * 16] = Sum(buf + b, len);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (int t = 0; t < threads; ++t) sink += partial[t * 16];
    probe.pass_gbs.push_back(static_cast<double>(bytes) / s / 1e9);
  }
  std::free(buf);
  if (!(sink > 0)) std::abort();  // keeps the sums alive
  probe.gbs = *std::max_element(probe.pass_gbs.begin(), probe.pass_gbs.end());
  return probe;
}

std::string Describe(const BandwidthProbe& probe) {
  char buf[256];
  if (probe.llc_bytes > 0) {
    std::snprintf(buf, sizeof buf,
                  "%.1f GB/s (best of %d full passes over %llu MiB = %.1fx the %llu MiB LLC, %d threads)",
                  probe.gbs, probe.passes, static_cast<unsigned long long>(probe.buffer_bytes >> 20),
                  static_cast<double>(probe.buffer_bytes) / probe.llc_bytes,
                  static_cast<unsigned long long>(probe.llc_bytes >> 20), probe.threads);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f GB/s (best of %d full passes over %llu MiB, LLC unknown, %d threads)",
                  probe.gbs, probe.passes, static_cast<unsigned long long>(probe.buffer_bytes >> 20),
                  probe.threads);
  }
  return buf;
}

std::string AboveProbeFlag(double fraction) {
  return fraction > 1.0 ? " ABOVE PROBE: roofline invalid" : "";
}

}  // namespace moondream::bench
