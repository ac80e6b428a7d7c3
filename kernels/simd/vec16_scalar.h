// F16 as float[16]: the reference every other vec16_<isa>.h matches bit for bit (README.md).
// Include after <cmath>/<cstring>; everything is TU-local.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace moondream::kernels {
namespace {

struct F16 {
  float v[16];
};

#define MD_F16_LANES(expr)          \
  F16 r;                            \
  for (int i = 0; i < 16; ++i) {    \
    r.v[i] = (expr);                \
  }                                 \
  return r

inline F16 Zero() { MD_F16_LANES(0.f); }
inline F16 Set1(float x) { MD_F16_LANES(x); }
inline F16 Load(const float* p) { MD_F16_LANES(p[i]); }
// Lanes >= n are 0 (n <= 0: all zero).
inline F16 LoadN(const float* p, int64_t n) { MD_F16_LANES(i < n ? p[i] : 0.f); }
inline void Store(float* p, F16 a) { std::memcpy(p, a.v, sizeof(a.v)); }
inline void StoreN(float* p, F16 a, int64_t n) {
  for (int i = 0; i < 16 && i < n; ++i) p[i] = a.v[i];
}
inline F16 LoadI8(const int8_t* p) { MD_F16_LANES(static_cast<float>(p[i])); }
inline F16 LoadI8N(const int8_t* p, int64_t n) { MD_F16_LANES(i < n ? static_cast<float>(p[i]) : 0.f); }
inline float Bf16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline F16 LoadBf16(const uint16_t* p) { MD_F16_LANES(Bf16ToFloat(p[i])); }
inline F16 LoadBf16N(const uint16_t* p, int64_t n) { MD_F16_LANES(i < n ? Bf16ToFloat(p[i]) : 0.f); }
// int32 -> fp32, round to nearest even.
inline F16 LoadI32(const int32_t* p) { MD_F16_LANES(static_cast<float>(p[i])); }

inline F16 Add(F16 a, F16 b) { MD_F16_LANES(a.v[i] + b.v[i]); }
inline F16 Sub(F16 a, F16 b) { MD_F16_LANES(a.v[i] - b.v[i]); }
inline F16 Mul(F16 a, F16 b) { MD_F16_LANES(a.v[i] * b.v[i]); }
inline F16 Div(F16 a, F16 b) { MD_F16_LANES(a.v[i] / b.v[i]); }
// a * b + c, one rounding.
inline F16 Fma(F16 a, F16 b, F16 c) { MD_F16_LANES(std::fma(a.v[i], b.v[i], c.v[i])); }
inline F16 Min(F16 a, F16 b) { MD_F16_LANES(a.v[i] < b.v[i] ? a.v[i] : b.v[i]); }
inline F16 Max(F16 a, F16 b) { MD_F16_LANES(a.v[i] > b.v[i] ? a.v[i] : b.v[i]); }
inline F16 RoundEven(F16 a) { MD_F16_LANES(std::nearbyint(a.v[i])); }
// 2^n for integral n in [-126, 127], from the exponent bits.
inline F16 Pow2(F16 n) {
  F16 r;
  for (int i = 0; i < 16; ++i) {
    const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n.v[i]) + 127) << 23;
    std::memcpy(&r.v[i], &bits, 4);
  }
  return r;
}
#undef MD_F16_LANES

inline float ReduceAdd(F16 a) {
  for (int w = 8; w >= 1; w /= 2) {
    for (int i = 0; i < w; ++i) a.v[i] = a.v[i] + a.v[i + w];
  }
  return a.v[0];
}
inline float ReduceMax(F16 a) {
  for (int w = 8; w >= 1; w /= 2) {
    for (int i = 0; i < w; ++i) a.v[i] = a.v[i] > a.v[i + w] ? a.v[i] : a.v[i + w];
  }
  return a.v[0];
}

}  // namespace
}  // namespace moondream::kernels

#include "kernels/simd/vec16_math.h"
