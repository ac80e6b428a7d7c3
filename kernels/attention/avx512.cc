// AVX-512 attention kernels (the avx512vnni variant): F16 as one zmm.
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

MOONDREAM_TARGET_PUSH("avx512f,avx512bw,avx512vl")
#include "kernels/simd/vec16_avx512.h"
#include "kernels/attention/impl.h"

namespace moondream::kernels::avx512 {
namespace {
// 32 zmm: scores 4 rows x 96 keys (24 accumulators + 6 keys), values 4 rows x 80 columns; decode mixes 64 columns (8 chains).
using Tiles = attention::Tiles<4, 6, 5, 4>;
}  // namespace

void SelfAttention(const SelfAttentionArgs& args, void* workspace) {
  attention::SelfAttentionImpl<Tiles>(args, workspace);
}

void DecodeAttention(const DecodeAttentionArgs& args, void* workspace) {
  attention::DecodeAttentionImpl<Tiles>(args, workspace);
}

}  // namespace moondream::kernels::avx512
MOONDREAM_TARGET_POP()
