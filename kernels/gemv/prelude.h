// Everything a gemv/<isa>.cc includes before its target push (standard and library headers
// are then compiled for the default target, never for an ISA), and the macro that defines
// an ISA's exported kernel from its row tile. Include order in an ISA file: prelude.h,
// MOONDREAM_TARGET_PUSH, simd/vec16_<isa>.h, impl.h, MOONDREAM_DEFINE_GEMV(ns, ROWS),
// MOONDREAM_TARGET_POP.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"
#include "kernels/simd/target.h"
#include "kernels/variants.h"

#define MOONDREAM_DEFINE_GEMV(ns, ROWS)                                                    \
  namespace moondream::kernels::ns {                                                       \
  void Gemv(const GemvArgs& args) { gemv::GemvImpl<ROWS>(args); }                          \
  }
