// INT8 GEMM on AVX-512 VNNI: 6 rows x 4 zmm (64 columns) register tiles of vpdpbusd, u8
// activations (q + 128) against s8 weights; the epilogue subtracts w_row_sum = 128 * sum(q_w).
#include <immintrin.h>

#include "kernels/gemm/prelude.h"

MOONDREAM_TARGET_PUSH("avx512f,avx512bw,avx512vl,avx512vnni")
#include "kernels/simd/vec16_avx512.h"

namespace moondream::kernels {
namespace {

struct Avx512Vnni {
  using V = __m512i;
  static constexpr int kCols = 16;
  static constexpr int kMr = 6;  // 24 accumulators + 4 weights + 1 broadcast of 32 zmm
  static constexpr int Groups(int) { return 4; }
  static constexpr bool kUnsignedA = true;
  // Decode: none. 2 KiB ahead took the GEMV from 80-98 % to 79-91 % of the read probe
  // (2026-12-07, `bench_quant 1`, Intel Xeon VM): the hardware prefetcher keeps up alone.
  static constexpr int kDecodePrefetch = MOONDREAM_DECODE_PREFETCH_OR(0);
  // Streams: not re-measured on an AVX-512 CPU (avx2.cc).
  static constexpr int kDecodeStreams = MOONDREAM_DECODE_STREAMS_OR(1);

  static V Zero() { return _mm512_setzero_si512(); }
  static V LoadW(const int8_t* p) { return _mm512_loadu_si512(p); }
  static V Bcast(const int8_t* a) {
    int32_t a4;
    std::memcpy(&a4, a, 4);
    return _mm512_set1_epi32(a4);
  }
  static V Dot(V acc, V a, V w) { return _mm512_dpbusd_epi32(acc, a, w); }
  static void Store(int32_t* p, V acc) { _mm512_storeu_si512(p, acc); }

  static float AbsMax(const float* x, int64_t k) {
    __m512 amax = _mm512_setzero_ps();
    __mmask16 nan = 0;
    for (int64_t i = 0; i < k; i += 16) {
      const __m512 v = _mm512_maskz_loadu_ps(Mask16(k - i), x + i);
      nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
      amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
    }
    return nan != 0 ? std::numeric_limits<float>::quiet_NaN() : _mm512_reduce_max_ps(amax);
  }
  // cvtps: round half to even under the default MXCSR.
  static void Quantize(const float* x, int64_t k, float inv, int8_t* q) {
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (int64_t i = 0; i < k; i += 16) {
      const __mmask16 m = Mask16(k - i);
      const __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vinv));
      _mm512_mask_cvtepi32_storeu_epi8(q + i, m, _mm512_min_epi32(_mm512_max_epi32(r, lo), hi));
    }
  }
};

}  // namespace
}  // namespace moondream::kernels

#include "kernels/gemm/driver.h"

MOONDREAM_DEFINE_GEMM(MOONDREAM_GEMM_NAMESPACE_OR(avx512vnni), Avx512Vnni)
MOONDREAM_TARGET_POP()
