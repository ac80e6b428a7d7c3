// Attention of the text decoder over its KV cache (spec §5.1, §9.3): scale 1/sqrt(head_dim),
// scores and softmax in fp32, whatever the cache dtype.
#pragma once

#include <vector>

#include <ATen/ATen.h>

#include "engine/model/kv_cache.h"

namespace moondream {

// q: [H, T, hd]; kv: keys/values of positions 0..end-1 in order (KvCache::Segments);
// mask: bool [T, end] (true = may attend) or undefined (attend everywhere); every row
// must see >= 1 key. Returns [H, T, hd] in q's dtype.
//
// One query row on an AVX-512 CPU (every decode step) runs a fused kernel that reads the
// cache in its own dtype (fp32, bf16, or int8 rows with their scales) once, segment by segment; otherwise the segments
// are joined in fp32 and attended a few heads at a time, so the scores never exceed
// ~8 MiB (a 730-position prefill would otherwise hold 2 x 68 MB of scores).
at::Tensor CachedAttention(const at::Tensor& q, const std::vector<KvSegment>& kv,
                           const at::Tensor& mask);

}  // namespace moondream
