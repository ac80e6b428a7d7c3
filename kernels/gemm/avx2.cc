// INT8 GEMM on AVX2: s8 x s8 via the sign trick, maddubs(|a|, w * sign(a)). Activations are
// in [-127, 127], so |a| fits u8 and each int16 pair sum is at most 2 * 127 * 127 < 2^15:
// nothing saturates and the int32 sums are exact.
#include <immintrin.h>

#include "kernels/gemm/prelude.h"

MOONDREAM_TARGET_PUSH("avx2,fma")
#include "kernels/simd/vec16_avx2.h"
#include "kernels/gemm/quantize_avx2.h"

namespace moondream::kernels {
namespace {

struct Avx2 {
  using V = __m256i;
  static constexpr int kCols = 8;
  // 2 rows x 4 ymm (32 columns): 8 accumulators + 4 weights + a, |a|, ones, a temp. Per
  // group of 4 k that is one |a| per row for 4 weight vectors where 4 rows x 2 ymm took one
  // per 2: 26 port-0/1 operations per 256 multiply-adds instead of 28, ~3-7% on the model's
  // layers. Measured and not kept: 4 x 16 and 6 x 8 (slower), maddubs(|w|, sign(a, w)),
  // and int16 vpmaddwd tiles (6 x 8, activations widened per tile: faster in isolation, no
  // faster in the GEMM, slower at m = 1). Decode: 1 x 8 ymm.
  static constexpr int kMr = 2;
  static constexpr int Groups(int mr) { return mr == 1 ? 4 : 2; }
  static constexpr bool kUnsignedA = false;
  // Decode: no software prefetch. 2 KiB ahead had helped one stream on the Intel Xeon VM
  // (`bench_quant 1`: 69-79 % -> 72-82 % of the read probe); with 4 streams on an AVX2-only
  // AMD Zen 3 VM (2026-12-07, bench_decode_variants) it cost 10-15 %.
  static constexpr int kDecodePrefetch = MOONDREAM_DECODE_PREFETCH_OR(0);
  // Decode on an AVX2-only AMD Zen 3 VM, 2026-12-07 (the four text shapes, 1, 2, 4 and 8
  // streams interleaved call by call in one process, weights cycled past the LLC): 4 streams
  // read 9-23 % more than 1 (e.g. fc1 29.3 -> 34.6 GB/s mean), 2 about half that, 8 no more.
  static constexpr int kDecodeStreams = MOONDREAM_DECODE_STREAMS_OR(4);

  static V Zero() { return _mm256_setzero_si256(); }
  static V LoadW(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static V Bcast(const int8_t* a) {
    int32_t a4;
    std::memcpy(&a4, a, 4);
    return _mm256_set1_epi32(a4);
  }
  static V Dot(V acc, V a, V w) {
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(w, a));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  static void Store(int32_t* p, V acc) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), acc); }

  static float AbsMax(const float* x, int64_t k) { return AbsMaxAvx2(x, k); }
  static void Quantize(const float* x, int64_t k, float inv, int8_t* q) { QuantizeAvx2(x, k, inv, q); }
};

}  // namespace
}  // namespace moondream::kernels

#include "kernels/gemm/driver.h"

MOONDREAM_DEFINE_GEMM(MOONDREAM_GEMM_NAMESPACE_OR(avx2), Avx2)
MOONDREAM_TARGET_POP()
