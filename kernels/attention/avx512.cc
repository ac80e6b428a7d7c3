// AVX-512 attention kernels (the avx512vnni variant): F16 as one zmm.
#include "kernels/attention/prelude.h"

MOONDREAM_TARGET_PUSH("avx512f,avx512bw,avx512vl")
#include "kernels/simd/vec16_avx512.h"
#include "kernels/attention/impl.h"

namespace moondream::kernels {
namespace {
// 32 zmm: scores 4 rows x 96 keys (24 accumulators + 6 keys), values 4 rows x 80
// columns; decode mixes 64 columns (8 chains).
using Avx512Tiles = attention::Tiles<4, 6, 5, 4>;
}  // namespace
}  // namespace moondream::kernels

MOONDREAM_DEFINE_ATTENTION(avx512, Avx512Tiles)
MOONDREAM_TARGET_POP()
