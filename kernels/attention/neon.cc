// NEON attention kernels (the neon-dot variant too): F16 as four q registers.
#include "kernels/attention/prelude.h"

#include "kernels/simd/vec16_neon.h"
#include "kernels/attention/impl.h"

namespace moondream::kernels {
namespace {
// 32 q registers: 4 rows x 1 F16 = 16 accumulators + 4 for the keys/values.
using NeonTiles = attention::Tiles<4, 1, 1, 2>;
}  // namespace
}  // namespace moondream::kernels

MOONDREAM_DEFINE_ATTENTION(neon, NeonTiles)
