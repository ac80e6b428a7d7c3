// The headers every gemm/<isa>.cc includes before its MOONDREAM_TARGET_PUSH: the standard
// library pieces driver.h uses (compiled for the baseline target, never the ISA's), the
// public API and the per-ISA declarations.
#pragma once

#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "kernels/kernels.h"
#include "kernels/simd/target.h"
#include "kernels/variants.h"

// bench_decode_variants (bench/kernels) compiles a gemm/<isa>.cc again with other decode
// constants: MOONDREAM_DECODE_PREFETCH and MOONDREAM_DECODE_STREAMS then replace the file's own
// K::kDecodePrefetch and K::kDecodeStreams, and MOONDREAM_GEMM_NAMESPACE the namespace of its
// entry points. The kernel library sets none of them: each file's constants are what runs.
#ifdef MOONDREAM_DECODE_PREFETCH
#define MOONDREAM_DECODE_PREFETCH_OR(shipped) MOONDREAM_DECODE_PREFETCH
#else
#define MOONDREAM_DECODE_PREFETCH_OR(shipped) shipped
#endif
#ifdef MOONDREAM_DECODE_STREAMS
#define MOONDREAM_DECODE_STREAMS_OR(shipped) MOONDREAM_DECODE_STREAMS
#else
#define MOONDREAM_DECODE_STREAMS_OR(shipped) shipped
#endif
#ifdef MOONDREAM_GEMM_NAMESPACE
#define MOONDREAM_GEMM_NAMESPACE_OR(shipped) MOONDREAM_GEMM_NAMESPACE
#else
#define MOONDREAM_GEMM_NAMESPACE_OR(shipped) shipped
#endif
// bench_kernels compiles each gemm/<isa>.cc again with MOONDREAM_GEMM_BOUND (and its own
// namespace): the file then also defines MicroKernelBound (driver.h), the speed of its
// register tile on L1-resident operands, the GEMM's measured compute bound.
#ifdef MOONDREAM_GEMM_BOUND
#include <chrono>
#endif
