// Internal: the per-ISA kernel functions the dispatch (kernels.cc) assembles into
// KernelSets. Each namespace is one file per kernel family: gemm/<isa>.cc defines
// QuantizeRows and Int8Gemm, gemv/<isa>.cc Gemv, attention/<isa>.cc SelfAttention and
// DecodeAttention.
#pragma once

#include <cstdint>

#include "kernels/kernels.h"

#define MOONDREAM_DECLARE_GEMM(ns)                                                         \
  namespace ns {                                                                           \
  void QuantizeRows(const float* x, int64_t m, int64_t k, int64_t ldx, int8_t* q,          \
                    int64_t ldq, float* scale);                                            \
  void Int8Gemm(const Int8GemmArgs& args, void* workspace);                                \
  }
#define MOONDREAM_DECLARE_GEMV(ns)                                                         \
  namespace ns {                                                                           \
  void Gemv(const GemvArgs& args);                                                         \
  }
#define MOONDREAM_DECLARE_ATTENTION(ns)                                                    \
  namespace ns {                                                                           \
  void SelfAttention(const SelfAttentionArgs& args, void* workspace);                      \
  void DecodeAttention(const DecodeAttentionArgs& args, void* workspace);                  \
  }

namespace moondream::kernels {

MOONDREAM_DECLARE_GEMM(scalar)
MOONDREAM_DECLARE_GEMV(scalar)
MOONDREAM_DECLARE_ATTENTION(scalar)
#if defined(__x86_64__)
MOONDREAM_DECLARE_GEMM(avx2)
MOONDREAM_DECLARE_GEMV(avx2)
MOONDREAM_DECLARE_ATTENTION(avx2)
MOONDREAM_DECLARE_GEMM(avxvnni_vex)    // gemm/avxvnni_vex.cc
MOONDREAM_DECLARE_GEMM(avxvnni_evex)   // gemm/avxvnni_evex.cc: the same source, EVEX-256
MOONDREAM_DECLARE_GEMM(avx512vnni)
MOONDREAM_DECLARE_GEMV(avx512)
MOONDREAM_DECLARE_ATTENTION(avx512)
#elif defined(__aarch64__)
MOONDREAM_DECLARE_GEMM(neon)
MOONDREAM_DECLARE_GEMV(neon)
MOONDREAM_DECLARE_ATTENTION(neon)
MOONDREAM_DECLARE_GEMM(neon_dot)
#endif

}  // namespace moondream::kernels

#undef MOONDREAM_DECLARE_GEMM
#undef MOONDREAM_DECLARE_GEMV
#undef MOONDREAM_DECLARE_ATTENTION
