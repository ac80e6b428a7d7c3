// INT8 GEMM on 256-bit VNNI, one source in two encodings: gemm/avxvnni_vex.cc (VEX
// `avxvnni`, ymm0-15) and gemm/avxvnni_evex.cc (EVEX-256 avx512vl+avx512vnni, ymm0-31). The
// including file pushes its target and defines
//   MOONDREAM_VNNI256_NS       the namespace of its entry points
//   MOONDREAM_VNNI256_DPBUSD   _mm256_dpbusd_avx_epi32 or _mm256_dpbusd_epi32
//   MOONDREAM_VNNI256_GROUPS   16-column groups per row in a multi-row tile (2 ymm each):
//                              1 with 16 registers (6 x 2 ymm), 2 with 32 (6 x 4 ymm)
// Activations are u8 = q + 128 (dpbusd multiplies u8 by s8); the epilogue subtracts
// w_row_sum = 128 * sum(q_w).
#include "kernels/simd/vec16_avx2.h"
#include "kernels/gemm/quantize_avx2.h"

namespace moondream::kernels {
namespace {

struct Vnni256 {
  using V = __m256i;
  static constexpr int kCols = 8;
  static constexpr int kMr = 6;
  static constexpr int Groups(int mr) { return mr == 1 ? 4 : MOONDREAM_VNNI256_GROUPS; }
  static constexpr bool kUnsignedA = true;
  // Decode, 2026-12-07 (`bench_quant 1`, Intel Xeon VM, the 7 text and projection layers):
  // 2 KiB ahead took the GEMV from 71-80 % to 81-89 % of the read probe (1-4 KiB: alike).
  static constexpr int kDecodePrefetch = MOONDREAM_DECODE_PREFETCH_OR(2048);
  // Streams: not re-measured on an AVX-VNNI CPU (avx2.cc).
  static constexpr int kDecodeStreams = MOONDREAM_DECODE_STREAMS_OR(1);

  static V Zero() { return _mm256_setzero_si256(); }
  static V LoadW(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static V Bcast(const int8_t* a) {
    int32_t a4;
    std::memcpy(&a4, a, 4);
    return _mm256_set1_epi32(a4);
  }
  static V Dot(V acc, V a, V w) { return MOONDREAM_VNNI256_DPBUSD(acc, a, w); }
  static void Store(int32_t* p, V acc) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), acc); }

  static float AbsMax(const float* x, int64_t k) { return AbsMaxAvx2(x, k); }
  static void Quantize(const float* x, int64_t k, float inv, int8_t* q) { QuantizeAvx2(x, k, inv, q); }
};

}  // namespace
}  // namespace moondream::kernels

#include "kernels/gemm/driver.h"

MOONDREAM_DEFINE_GEMM(MOONDREAM_GEMM_NAMESPACE_OR(MOONDREAM_VNNI256_NS), Vnni256)
