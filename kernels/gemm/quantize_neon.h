// Row quantization on NEON, shared by gemm/neon.cc and gemm/neon_dot.cc (the driver.h AbsMax
// and Quantize primitives), plus the weight load and the activation broadcast.
#pragma once

namespace moondream::kernels {
namespace {

// Lanes i < n of p, zeros elsewhere (n in [0, 4]).
inline float32x4_t LoadFloats4(const float* p, int64_t n) {
  float t[4] = {};
  std::memcpy(t, p, static_cast<size_t>(n) * sizeof(float));
  return vld1q_f32(t);
}

// vmaxq_f32 propagates NaN (IEEE maxNum is not used), so a NaN anywhere makes amax NaN.
inline float AbsMaxNeon(const float* x, int64_t k) {
  float32x4_t amax = vdupq_n_f32(0.f);
  for (int64_t i = 0; i < k; i += 4) {
    const float32x4_t v = i + 4 <= k ? vld1q_f32(x + i) : LoadFloats4(x + i, k - i);
    amax = vmaxq_f32(amax, vabsq_f32(v));
  }
  return vmaxvq_f32(amax);
}

// 8 floats -> 8 int8 = clamp(round half to even (vcvtnq), -127, 127).
inline int8x8_t Quantize8(const float* x, float32x4_t inv) {
  const int32x4_t lo = vdupq_n_s32(-127), hi = vdupq_n_s32(127);
  const int32x4_t a = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x), inv));
  const int32x4_t b = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + 4), inv));
  const int16x8_t w = vcombine_s16(vmovn_s32(vminq_s32(vmaxq_s32(a, lo), hi)),
                                   vmovn_s32(vminq_s32(vmaxq_s32(b, lo), hi)));
  return vmovn_s16(w);
}

inline void QuantizeNeon(const float* x, int64_t k, float inv, int8_t* q) {
  const float32x4_t vinv = vdupq_n_f32(inv);
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) vst1_s8(q + i, Quantize8(x + i, vinv));
  if (i < k) {
    float tail[8] = {};
    int8_t out[8];
    std::memcpy(tail, x + i, static_cast<size_t>(k - i) * sizeof(float));
    vst1_s8(out, Quantize8(tail, vinv));
    std::memcpy(q + i, out, static_cast<size_t>(k - i));
  }
}

// The NEON register tile: 4 rows x 16 columns (16 accumulators); decode 1 x 64.
struct NeonTileShape {
  static constexpr int kCols = 4;
  static constexpr int kMr = 4;
  static constexpr int Groups(int mr) { return mr == 1 ? 4 : 1; }
  static constexpr bool kUnsignedA = false;
  static constexpr int kDecodePrefetch = 0;  // not measured (no arm64 hardware here)
  static constexpr int kDecodeStreams = 1;   // not measured either
};

inline int32x4_t LoadWNeon(const int8_t* p) { return vreinterpretq_s32_s8(vld1q_s8(p)); }
inline int32x4_t BcastNeon(const int8_t* a) {
  int32_t a4;
  std::memcpy(&a4, a, 4);
  return vdupq_n_s32(a4);
}

}  // namespace
}  // namespace moondream::kernels
