// INT8 GEMM on baseline arm64 NEON (no dot product): per 4 columns x 4 k, two widening
// multiplies (vmull_s8: each product |a w| <= 127 * 127), one pairwise int16 add (each pair
// <= 2 * 127 * 127 < 2^15, exact) and one pairwise accumulate into int32 (vpadalq_s16).
#include <arm_neon.h>

#include "kernels/gemm/prelude.h"

MOONDREAM_TARGET_PUSH("arch=armv8-a")
#include "kernels/simd/vec16_neon.h"
#include "kernels/gemm/quantize_neon.h"

namespace moondream::kernels {
namespace {

struct Neon : NeonTileShape {
  using V = int32x4_t;  // operand: lane c = column c's 4 bytes
  static V Zero() { return vdupq_n_s32(0); }
  static V LoadW(const int8_t* p) { return LoadWNeon(p); }
  static V Bcast(const int8_t* a) { return BcastNeon(a); }
  static V Dot(V acc, V a, V w) {
    const int8x16_t a8 = vreinterpretq_s8_s32(a), w8 = vreinterpretq_s8_s32(w);
    const int16x8_t lo = vmull_s8(vget_low_s8(w8), vget_low_s8(a8));  // columns 0, 1
    const int16x8_t hi = vmull_high_s8(w8, a8);                        // columns 2, 3
    return vpadalq_s16(acc, vpaddq_s16(lo, hi));
  }
  static void Store(int32_t* p, V acc) { vst1q_s32(p, acc); }

  static float AbsMax(const float* x, int64_t k) { return AbsMaxNeon(x, k); }
  static void Quantize(const float* x, int64_t k, float inv, int8_t* q) { QuantizeNeon(x, k, inv, q); }
};

}  // namespace
}  // namespace moondream::kernels

#include "kernels/gemm/driver.h"

MOONDREAM_DEFINE_GEMM(MOONDREAM_GEMM_NAMESPACE_OR(neon), Neon)
MOONDREAM_TARGET_POP()
