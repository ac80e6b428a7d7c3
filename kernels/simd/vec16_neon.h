// F16 as four NEON q registers (lanes 0-3, 4-7, 8-11, 12-15). arm64 only; everything is
// TU-local. Bit-identical to vec16_scalar.h (README.md): Min/Max select like x86.
#pragma once

#include <arm_neon.h>

#include <cstdint>
#include <cstring>

namespace moondream::kernels {
namespace {

struct F16 {
  float32x4_t q[4];
};

#define MD_F16_4(expr)                 \
  F16 r;                               \
  for (int i = 0; i < 4; ++i) {        \
    r.q[i] = (expr);                   \
  }                                    \
  return r

inline F16 Zero() { MD_F16_4(vdupq_n_f32(0.f)); }
inline F16 Set1(float x) { MD_F16_4(vdupq_n_f32(x)); }
inline F16 Load(const float* p) { MD_F16_4(vld1q_f32(p + 4 * i)); }
inline F16 LoadN(const float* p, int64_t n) {
  float t[16] = {};
  if (n > 0) std::memcpy(t, p, static_cast<size_t>(n < 16 ? n : 16) * sizeof(float));
  return Load(t);
}
inline void Store(float* p, F16 a) {
  for (int i = 0; i < 4; ++i) vst1q_f32(p + 4 * i, a.q[i]);
}
inline void StoreN(float* p, F16 a, int64_t n) {
  float t[16];
  Store(t, a);
  if (n > 0) std::memcpy(p, t, static_cast<size_t>(n < 16 ? n : 16) * sizeof(float));
}
inline F16 LoadI8(const int8_t* p) {
  const int8x16_t b = vld1q_s8(p);
  const int16x8_t lo = vmovl_s8(vget_low_s8(b)), hi = vmovl_s8(vget_high_s8(b));
  F16 r;
  r.q[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
  r.q[1] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo)));
  r.q[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
  r.q[3] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi)));
  return r;
}
inline F16 LoadI8N(const int8_t* p, int64_t n) {
  int8_t t[16] = {};
  if (n > 0) std::memcpy(t, p, static_cast<size_t>(n < 16 ? n : 16));
  return LoadI8(t);
}
inline F16 LoadBf16(const uint16_t* p) {
  MD_F16_4(vreinterpretq_f32_u32(vshlq_n_u32(vmovl_u16(vld1_u16(p + 4 * i)), 16)));
}
inline F16 LoadBf16N(const uint16_t* p, int64_t n) {
  uint16_t t[16] = {};
  if (n > 0) std::memcpy(t, p, static_cast<size_t>(n < 16 ? n : 16) * sizeof(uint16_t));
  return LoadBf16(t);
}
inline F16 LoadI32(const int32_t* p) { MD_F16_4(vcvtq_f32_s32(vld1q_s32(p + 4 * i))); }

inline F16 Add(F16 a, F16 b) { MD_F16_4(vaddq_f32(a.q[i], b.q[i])); }
inline F16 Sub(F16 a, F16 b) { MD_F16_4(vsubq_f32(a.q[i], b.q[i])); }
inline F16 Mul(F16 a, F16 b) { MD_F16_4(vmulq_f32(a.q[i], b.q[i])); }
inline F16 Div(F16 a, F16 b) { MD_F16_4(vdivq_f32(a.q[i], b.q[i])); }
inline F16 Fma(F16 a, F16 b, F16 c) { MD_F16_4(vfmaq_f32(c.q[i], a.q[i], b.q[i])); }
inline F16 Min(F16 a, F16 b) { MD_F16_4(vbslq_f32(vcltq_f32(a.q[i], b.q[i]), a.q[i], b.q[i])); }
inline F16 Max(F16 a, F16 b) { MD_F16_4(vbslq_f32(vcgtq_f32(a.q[i], b.q[i]), a.q[i], b.q[i])); }
inline F16 RoundEven(F16 a) { MD_F16_4(vrndnq_f32(a.q[i])); }
inline F16 Pow2(F16 n) {
  MD_F16_4(vreinterpretq_f32_s32(
      vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n.q[i]), vdupq_n_s32(127)), 23)));
}
#undef MD_F16_4

inline float ReduceAdd(F16 a) {
  const float32x4_t s = vaddq_f32(vaddq_f32(a.q[0], a.q[2]), vaddq_f32(a.q[1], a.q[3]));
  const float32x2_t s2 = vadd_f32(vget_low_f32(s), vget_high_f32(s));
  return vget_lane_f32(s2, 0) + vget_lane_f32(s2, 1);
}
inline float ReduceMax(F16 a) {
  auto mx = [](float32x4_t x, float32x4_t y) { return vbslq_f32(vcgtq_f32(x, y), x, y); };
  const float32x4_t s = mx(mx(a.q[0], a.q[2]), mx(a.q[1], a.q[3]));
  const float32x2_t lo = vget_low_f32(s), hi = vget_high_f32(s);
  const float32x2_t s2 = vbsl_f32(vcgt_f32(lo, hi), lo, hi);
  const float x = vget_lane_f32(s2, 0), y = vget_lane_f32(s2, 1);
  return x > y ? x : y;
}

}  // namespace
}  // namespace moondream::kernels

#include "kernels/simd/vec16_math.h"
