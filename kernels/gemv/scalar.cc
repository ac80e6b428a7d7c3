// The reference dense GEMV: F16 as float[16] (kernels/simd/vec16_scalar.h).
#include "kernels/gemv/prelude.h"

#include "kernels/simd/vec16_scalar.h"
#include "kernels/gemv/impl.h"

MOONDREAM_DEFINE_GEMV(scalar, 4)
