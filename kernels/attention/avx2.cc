// AVX2 + FMA attention kernels (the avxvnni variants too): F16 as two ymm.
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

MOONDREAM_TARGET_PUSH("avx2,fma")
#include "kernels/simd/vec16_avx2.h"
#include "kernels/attention/impl.h"

namespace moondream::kernels::avx2 {
namespace {
// 16 ymm: 6 rows x 1 F16 = 12 accumulators + 2 for the keys/values + 1 broadcast.
using Tiles = attention::Tiles<6, 1, 1, 2>;
}  // namespace

void SelfAttention(const SelfAttentionArgs& args, void* workspace) {
  attention::SelfAttentionImpl<Tiles>(args, workspace);
}

void DecodeAttention(const DecodeAttentionArgs& args, void* workspace) {
  attention::DecodeAttentionImpl<Tiles>(args, workspace);
}

}  // namespace moondream::kernels::avx2
MOONDREAM_TARGET_POP()
