#include "bench/common/bench_common.h"

#include <immintrin.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace moondream::bench {
namespace {

__attribute__((target("avx512f"))) float SumChunkAvx512(const float* p, int64_t n) {
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

// Portable fallback (CPUs without AVX-512): 8 independent sums the compiler vectorizes.
float SumChunkPortable(const float* p, int64_t n) {
  float s[8] = {0};
  for (int64_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += p[i + j];
  float total = 0;
  for (float v : s) total += v;
  return total;
}

}  // namespace

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double ReadBandwidth() {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  const at::Tensor buf = at::ones({(1ll << 30) / 4});
  const float* p = buf.data_ptr<float>();
  const int64_t slice = (64 << 20) / 4, sub = slice / 64;
  std::vector<float> partial(at::get_num_threads() * 64, 0.f);
  const Timing sec = TimeIt(
      [&](int i) {
        const float* s = p + (i % (buf.numel() / slice)) * slice;
        at::parallel_for(0, 64, 1, [&](int64_t b, int64_t e) {
          for (int64_t c = b; c < e; ++c)
            partial[at::get_thread_num() * 64] +=
                avx512 ? SumChunkAvx512(s + c * sub, sub) : SumChunkPortable(s + c * sub, sub);
        });
      },
      128);
  float total = 0;
  for (float v : partial) total += v;
  if (!(total > 0)) std::abort();  // keeps the sums alive
  return slice * 4 / sec.min / 1e9;
}

std::string LoadAvg() {
  std::string out;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    char line[128] = {0};
    if (std::fgets(line, sizeof line, f)) out = line;
    std::fclose(f);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace moondream::bench
