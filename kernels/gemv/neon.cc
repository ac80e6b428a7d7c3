// NEON dense GEMV (the neon-dot variant too): F16 as four q registers. 32 q: 4 rows = 16
// accumulators + 4 for x + 4 for the weights.
#include "kernels/gemv/prelude.h"

#include "kernels/simd/vec16_neon.h"
#include "kernels/gemv/impl.h"

MOONDREAM_DEFINE_GEMV(neon, 4)
