// 256-bit VNNI, VEX encoding (AVX-VNNI: Alder Lake, Sapphire Rapids and later). gemm/vnni256.h.
#include <immintrin.h>

#include "kernels/gemm/prelude.h"

MOONDREAM_TARGET_PUSH("avx2,fma,avxvnni")
#define MOONDREAM_VNNI256_NS avxvnni_vex
#define MOONDREAM_VNNI256_DPBUSD _mm256_dpbusd_avx_epi32
#define MOONDREAM_VNNI256_GROUPS 1
#include "kernels/gemm/vnni256.h"
MOONDREAM_TARGET_POP()
