// AVX-512 dense GEMV (the avx512vnni variant): F16 as one zmm. 8 rows in flight: 8
// independent fma chains cover the fma latency (4 cycles x 2 ports).
#include "kernels/gemv/prelude.h"

MOONDREAM_TARGET_PUSH("avx512f,avx512bw,avx512vl")
#include "kernels/simd/vec16_avx512.h"
#include "kernels/gemv/impl.h"

MOONDREAM_DEFINE_GEMV(avx512, 8)
MOONDREAM_TARGET_POP()
