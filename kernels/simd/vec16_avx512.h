// F16 as one zmm. Include after the TU's target pragma ("avx512f" at least); everything is
// TU-local. Bit-identical to vec16_scalar.h (README.md).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace moondream::kernels {
namespace {

struct F16 {
  __m512 z;
};

inline __mmask16 Mask16(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
}

inline F16 Zero() { return {_mm512_setzero_ps()}; }
inline F16 Set1(float x) { return {_mm512_set1_ps(x)}; }
inline F16 Load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline F16 LoadN(const float* p, int64_t n) { return {_mm512_maskz_loadu_ps(Mask16(n), p)}; }
inline void Store(float* p, F16 a) { _mm512_storeu_ps(p, a.z); }
inline void StoreN(float* p, F16 a, int64_t n) { _mm512_mask_storeu_ps(p, Mask16(n), a.z); }
inline F16 LoadI8(const int8_t* p) {
  return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))))};
}
inline F16 LoadI8N(const int8_t* p, int64_t n) {
  alignas(16) int8_t t[16] = {};
  for (int64_t i = 0; i < n && i < 16; ++i) t[i] = p[i];
  return LoadI8(t);
}
inline F16 LoadBf16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))};
}
inline F16 LoadBf16N(const uint16_t* p, int64_t n) {
  alignas(32) uint16_t t[16] = {};
  for (int64_t i = 0; i < n && i < 16; ++i) t[i] = p[i];
  return LoadBf16(t);
}
inline F16 LoadI32(const int32_t* p) { return {_mm512_cvtepi32_ps(_mm512_loadu_si512(p))}; }

inline F16 Add(F16 a, F16 b) { return {_mm512_add_ps(a.z, b.z)}; }
inline F16 Sub(F16 a, F16 b) { return {_mm512_sub_ps(a.z, b.z)}; }
inline F16 Mul(F16 a, F16 b) { return {_mm512_mul_ps(a.z, b.z)}; }
inline F16 Div(F16 a, F16 b) { return {_mm512_div_ps(a.z, b.z)}; }
inline F16 Fma(F16 a, F16 b, F16 c) { return {_mm512_fmadd_ps(a.z, b.z, c.z)}; }
// vminps/vmaxps return the second operand when either is NaN: a < b ? a : b.
inline F16 Min(F16 a, F16 b) { return {_mm512_min_ps(a.z, b.z)}; }
inline F16 Max(F16 a, F16 b) { return {_mm512_max_ps(a.z, b.z)}; }
inline F16 RoundEven(F16 a) {
  return {_mm512_roundscale_ps(a.z, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
inline F16 Pow2(F16 n) {
  const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.z), _mm512_set1_epi32(127));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
}

inline float ReduceAdd(F16 a) {
  __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(a.z),
                            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a.z), 1)));
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
inline float ReduceMax(F16 a) {
  __m256 s8 = _mm256_max_ps(_mm512_castps512_ps256(a.z),
                            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a.z), 1)));
  __m128 s4 = _mm_max_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  __m128 s2 = _mm_max_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_max_ss(s2, _mm_movehdup_ps(s2)));
}

}  // namespace
}  // namespace moondream::kernels

#include "kernels/simd/vec16_math.h"
