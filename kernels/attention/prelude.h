// Everything an attention/<isa>.cc includes before its target push (standard and library
// headers are then compiled for the default target, never for an ISA), and the macro that
// defines an ISA's two exported kernels from its register tiles. Include order in an ISA
// file: prelude.h, MOONDREAM_TARGET_PUSH, simd/vec16_<isa>.h, impl.h,
// MOONDREAM_DEFINE_ATTENTION(ns, Tiles), MOONDREAM_TARGET_POP.
#pragma once

#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/kernels.h"
#include "kernels/simd/target.h"
#include "kernels/variants.h"

#define MOONDREAM_DEFINE_ATTENTION(ns, TILES)                                              \
  namespace moondream::kernels::ns {                                                       \
  void SelfAttention(const SelfAttentionArgs& args, void* workspace) {                     \
    attention::SelfAttentionImpl<TILES>(args, workspace);                                  \
  }                                                                                        \
  void DecodeAttention(const DecodeAttentionArgs& args, void* workspace) {                 \
    attention::DecodeAttentionImpl<TILES>(args, workspace);                                \
  }                                                                                        \
  }
