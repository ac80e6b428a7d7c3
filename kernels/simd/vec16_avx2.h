// F16 as two ymm (lanes 0-7, 8-15). Include after the TU's target pragma ("avx2,fma");
// everything is TU-local. Bit-identical to vec16_scalar.h (README.md).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace moondream::kernels {
namespace {

struct F16 {
  __m256 lo, hi;
};

#define MD_F16_2(op) return {op(a.lo, b.lo), op(a.hi, b.hi)}

inline F16 Zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline F16 Set1(float x) { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
inline F16 Load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline F16 LoadN(const float* p, int64_t n) {
  alignas(32) float t[16] = {};
  if (n > 0) std::memcpy(t, p, static_cast<size_t>(n < 16 ? n : 16) * sizeof(float));
  return Load(t);
}
inline void Store(float* p, F16 a) {
  _mm256_storeu_ps(p, a.lo);
  _mm256_storeu_ps(p + 8, a.hi);
}
inline void StoreN(float* p, F16 a, int64_t n) {
  alignas(32) float t[16];
  Store(t, a);
  if (n > 0) std::memcpy(p, t, static_cast<size_t>(n < 16 ? n : 16) * sizeof(float));
}
// Each half sign-extended straight from memory (`vpmovsxbd ymm, m64`): no byte shift, and
// two shuffles fewer than extending a 16-byte load (1.5x on decode attention, Zen 3).
inline __m256 LoadI8x8(const int8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline F16 LoadI8(const int8_t* p) { return {LoadI8x8(p), LoadI8x8(p + 8)}; }
inline F16 LoadI8N(const int8_t* p, int64_t n) {
  alignas(16) int8_t t[16] = {};
  if (n > 0) std::memcpy(t, p, static_cast<size_t>(n < 16 ? n : 16));
  return LoadI8(t);
}
inline __m256 Bf16x8(__m128i h) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline F16 LoadBf16(const uint16_t* p) {
  return {Bf16x8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
          Bf16x8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)))};
}
inline F16 LoadBf16N(const uint16_t* p, int64_t n) {
  alignas(32) uint16_t t[16] = {};
  if (n > 0) std::memcpy(t, p, static_cast<size_t>(n < 16 ? n : 16) * sizeof(uint16_t));
  return LoadBf16(t);
}
inline F16 LoadI32(const int32_t* p) {
  return {_mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))),
          _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8)))};
}

inline F16 Add(F16 a, F16 b) { MD_F16_2(_mm256_add_ps); }
inline F16 Sub(F16 a, F16 b) { MD_F16_2(_mm256_sub_ps); }
inline F16 Mul(F16 a, F16 b) { MD_F16_2(_mm256_mul_ps); }
inline F16 Div(F16 a, F16 b) { MD_F16_2(_mm256_div_ps); }
inline F16 Min(F16 a, F16 b) { MD_F16_2(_mm256_min_ps); }
inline F16 Max(F16 a, F16 b) { MD_F16_2(_mm256_max_ps); }
#undef MD_F16_2
inline F16 Fma(F16 a, F16 b, F16 c) {
  return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
inline F16 RoundEven(F16 a) {
  constexpr int kMode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  return {_mm256_round_ps(a.lo, kMode), _mm256_round_ps(a.hi, kMode)};
}
inline __m256 Pow2x8(__m256 n) {
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
inline F16 Pow2(F16 n) { return {Pow2x8(n.lo), Pow2x8(n.hi)}; }

inline float ReduceAdd(F16 a) {
  const __m256 s8 = _mm256_add_ps(a.lo, a.hi);
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
inline float ReduceMax(F16 a) {
  const __m256 s8 = _mm256_max_ps(a.lo, a.hi);
  const __m128 s4 = _mm_max_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_max_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_max_ss(s2, _mm_movehdup_ps(s2)));
}

}  // namespace
}  // namespace moondream::kernels

#include "kernels/simd/vec16_math.h"
