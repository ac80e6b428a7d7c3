// 256-bit VNNI, EVEX encoding (avx512vl + avx512vnni without AVX-VNNI: Ice Lake, Zen 4).
// gemm/vnni256.h.
#include <immintrin.h>

#include "kernels/gemm/prelude.h"

MOONDREAM_TARGET_PUSH("avx2,fma,avx512f,avx512vl,avx512vnni")
#define MOONDREAM_VNNI256_NS avxvnni_evex
#define MOONDREAM_VNNI256_DPBUSD _mm256_dpbusd_epi32
#define MOONDREAM_VNNI256_GROUPS 2
#include "kernels/gemm/vnni256.h"
MOONDREAM_TARGET_POP()
