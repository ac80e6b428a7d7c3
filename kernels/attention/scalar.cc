// The reference attention kernels: F16 as float[16] (kernels/simd/vec16_scalar.h).
#include "kernels/attention/prelude.h"

#include "kernels/simd/vec16_scalar.h"
#include "kernels/attention/impl.h"

namespace moondream::kernels {
namespace {
// Any tiles give the same results; these keep the reference's tests quick.
using ScalarTiles = attention::Tiles<4, 2, 2, 2>;
}  // namespace
}  // namespace moondream::kernels

MOONDREAM_DEFINE_ATTENTION(scalar, ScalarTiles)
