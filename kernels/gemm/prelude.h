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
