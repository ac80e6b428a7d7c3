// AVX2 + FMA attention kernels (the avxvnni variants too): F16 as two ymm.
#include "kernels/attention/prelude.h"

MOONDREAM_TARGET_PUSH("avx2,fma")
#include "kernels/simd/vec16_avx2.h"
#include "kernels/attention/impl.h"

namespace moondream::kernels {
namespace {
// 16 ymm: 6 rows x 1 F16 = 12 accumulators + 2 for the keys/values + 1 broadcast. Decode
// mixes a 64-wide head's values in one pass (4 F16 x 2 chains = 16 accumulators, some on the
// stack): 4 % faster than two passes of 2 in cache, 9 % past the LLC (Zen 3, 2026-12-07).
using Avx2Tiles = attention::Tiles<6, 1, 1, 4>;
}  // namespace
}  // namespace moondream::kernels

MOONDREAM_DEFINE_ATTENTION(avx2, Avx2Tiles)
MOONDREAM_TARGET_POP()
