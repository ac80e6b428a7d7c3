// AVX2 + FMA dense GEMV (the avxvnni variants too): F16 as two ymm. 16 ymm: 4 rows = 8
// accumulators + 2 for x + 2 for the weights.
#include "kernels/gemv/prelude.h"

MOONDREAM_TARGET_PUSH("avx2,fma")
#include "kernels/simd/vec16_avx2.h"
#include "kernels/gemv/impl.h"

MOONDREAM_DEFINE_GEMV(avx2, 4)
MOONDREAM_TARGET_POP()
