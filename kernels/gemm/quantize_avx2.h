// Row quantization on ymm, shared by gemm/avx2.cc and gemm/vnni256.h (the driver.h AbsMax
// and Quantize primitives). Include after a target push with "avx2,fma" at least.
#pragma once

namespace moondream::kernels {
namespace {

// Lanes i < n of p, zeros elsewhere (n in [0, 8]).
inline __m256 LoadFloats8(const float* p, int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx);
  return _mm256_maskload_ps(p, mask);
}

inline float AbsMaxAvx2(const float* x, int64_t k) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 amax = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
  for (int64_t i = 0; i < k; i += 8) {
    const __m256 v = i + 8 <= k ? _mm256_loadu_ps(x + i) : LoadFloats8(x + i, k - i);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    amax = _mm256_max_ps(amax, _mm256_and_ps(v, abs_mask));
  }
  if (_mm256_movemask_ps(nan) != 0) return std::numeric_limits<float>::quiet_NaN();
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  return _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
}

// 16 floats -> 16 int8 = clamp(cvtps (round half to even under the default MXCSR), -127, 127).
inline __m128i Quantize16(const float* x, __m256 inv) {
  const __m256i lo = _mm256_set1_epi32(-127);  // the upper clamp is packs' saturation at 127
  const __m256i a = _mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), inv)), lo);
  const __m256i b = _mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), inv)), lo);
  // packs works per 128-bit lane: [a0-3 b0-3 a4-7 b4-7] -> 64-bit permute -> [a b].
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8);
  return _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

inline void QuantizeAvx2(const float* x, int64_t k, float inv, int8_t* q) {
  const __m256 vinv = _mm256_set1_ps(inv);
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), Quantize16(x + i, vinv));
  }
  if (i < k) {
    alignas(32) float tail[16] = {};
    alignas(16) int8_t out[16];
    std::memcpy(tail, x + i, static_cast<size_t>(k - i) * sizeof(float));
    _mm_store_si128(reinterpret_cast<__m128i*>(out), Quantize16(tail, vinv));
    std::memcpy(q + i, out, static_cast<size_t>(k - i));
  }
}

}  // namespace
}  // namespace moondream::kernels
