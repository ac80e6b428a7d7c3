// NEON attention kernels (the neon-dot variant too): F16 as four q registers.
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
#include "kernels/variants.h"

#include "kernels/simd/vec16_neon.h"
#include "kernels/attention/impl.h"

namespace moondream::kernels::neon {
namespace {
// 32 q registers: 4 rows x 1 F16 = 16 accumulators + 4 for the keys/values.
using Tiles = attention::Tiles<4, 1, 1, 2>;
}  // namespace

void SelfAttention(const SelfAttentionArgs& args, void* workspace) {
  attention::SelfAttentionImpl<Tiles>(args, workspace);
}

void DecodeAttention(const DecodeAttentionArgs& args, void* workspace) {
  attention::DecodeAttentionImpl<Tiles>(args, workspace);
}

}  // namespace moondream::kernels::neon
