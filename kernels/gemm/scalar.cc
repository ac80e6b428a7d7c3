// The reference INT8 GEMM: plain loops over the packed layout (int32, exact), quantization
// with std::nearbyint (round half to even under the default rounding mode), the epilogue on
// vec16_scalar.h (std::fma). Every other gemm/<isa>.cc matches it bit for bit.
#include "kernels/gemm/prelude.h"
#include "kernels/simd/vec16_scalar.h"

namespace moondream::kernels {
namespace {

struct Scalar {
  // Lane c: one column's 4 bytes (as an operand) or its int32 sum (as an accumulator).
  struct V {
    int32_t lane[4];
  };
  static constexpr int kCols = 4;
  static constexpr int kMr = 4;
  static constexpr int Groups(int) { return 4; }
  static constexpr bool kUnsignedA = false;
  static constexpr int kDecodePrefetch = 0;
  static constexpr int kDecodeStreams = 1;

  static V Zero() { return {}; }
  static V LoadW(const int8_t* p) {
    V v;
    std::memcpy(v.lane, p, sizeof(v.lane));
    return v;
  }
  static V Bcast(const int8_t* a) {
    V v;
    for (int c = 0; c < 4; ++c) std::memcpy(&v.lane[c], a, 4);
    return v;
  }
  static int8_t Byte(int32_t word, int i) {
    int8_t b[4];
    std::memcpy(b, &word, 4);
    return b[i];
  }
  static V Dot(V acc, V a, V w) {
    for (int c = 0; c < 4; ++c) {
      for (int i = 0; i < 4; ++i) acc.lane[c] += Byte(a.lane[c], i) * Byte(w.lane[c], i);
    }
    return acc;
  }
  static void Store(int32_t* p, V acc) { std::memcpy(p, acc.lane, sizeof(acc.lane)); }

  static float AbsMax(const float* x, int64_t k) {
    float amax = 0.f;
    for (int64_t i = 0; i < k; ++i) {
      if (std::isnan(x[i])) return std::numeric_limits<float>::quiet_NaN();
      amax = std::max(amax, std::fabs(x[i]));
    }
    return amax;
  }
  static void Quantize(const float* x, int64_t k, float inv, int8_t* q) {
    for (int64_t i = 0; i < k; ++i) {
      const float r = std::nearbyint(x[i] * inv);
      q[i] = static_cast<int8_t>(std::min(127.f, std::max(-127.f, r)));
    }
  }
};

}  // namespace
}  // namespace moondream::kernels

#include "kernels/gemm/driver.h"

MOONDREAM_DEFINE_GEMM(MOONDREAM_GEMM_NAMESPACE_OR(scalar), Scalar)
