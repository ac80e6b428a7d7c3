// INT8 GEMM on arm64 with the dot product extension (sdot): one vdotq_s32 per 4 columns x 4 k.
#include <arm_neon.h>

#include "kernels/gemm/prelude.h"

MOONDREAM_TARGET_PUSH("arch=armv8.2-a+dotprod")
#include "kernels/simd/vec16_neon.h"
#include "kernels/gemm/quantize_neon.h"

namespace moondream::kernels {
namespace {

struct NeonDot : NeonTileShape {
  using V = int32x4_t;  // operand: lane c = column c's 4 bytes
  static V Zero() { return vdupq_n_s32(0); }
  static V LoadW(const int8_t* p) { return LoadWNeon(p); }
  static V Bcast(const int8_t* a) { return BcastNeon(a); }
  static V Dot(V acc, V a, V w) {
    return vdotq_s32(acc, vreinterpretq_s8_s32(w), vreinterpretq_s8_s32(a));
  }
  static void Store(int32_t* p, V acc) { vst1q_s32(p, acc); }

  static float AbsMax(const float* x, int64_t k) { return AbsMaxNeon(x, k); }
  static void Quantize(const float* x, int64_t k, float inv, int8_t* q) { QuantizeNeon(x, k, inv, q); }
};

}  // namespace
}  // namespace moondream::kernels

#include "kernels/gemm/driver.h"

MOONDREAM_DEFINE_GEMM(MOONDREAM_GEMM_NAMESPACE_OR(neon_dot), NeonDot)
MOONDREAM_TARGET_POP()
