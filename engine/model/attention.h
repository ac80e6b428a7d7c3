// Attention of the model components as ATen wrappers over the kernel layer (kernels/), and
// the ATen path of the text decoder's attention over its KV cache (spec §5.1, §9.3):
// scale 1/sqrt(head_dim), scores and softmax in fp32, whatever the cache dtype.
#pragma once

#include <vector>

#include <ATen/ATen.h>

#include "engine/model/kv_cache.h"
#include "kernels/kernels.h"

namespace moondream {

// Unmasked self-attention of one sequence through kernels::SelfAttention. qkv: fp32
// [T > 0, 3·H·hd] on the CPU, row t = (q | k | v) each [H, hd] (rows may be strided,
// columns contiguous). Returns fp32 [T, H·hd], heads side by side.
at::Tensor KernelSelfAttention(const kernels::KernelSet& ks, const at::Tensor& qkv,
                               int64_t heads);

// q: [H, T, hd]; kv: keys/values of positions 0..end-1 in order (KvCache::Segments);
// mask: bool [T, end] (true = may attend) or undefined (attend everywhere); every row
// must see >= 1 key. Returns [H, T, hd] in q's dtype.
//
// One unmasked query row on the CPU with `decode_kernels` set (every decode step) runs
// kernels::DecodeAttention, which reads the cache in its own dtype (fp32, bf16, or int8
// rows with their scales) once, segment by segment. Otherwise the segments are joined in
// fp32 and attended a few heads at a time, so the scores never exceed ~8 MiB (a
// 730-position prefill would otherwise hold 2 x 68 MB of scores).
at::Tensor CachedAttention(const at::Tensor& q, const std::vector<KvSegment>& kv,
                           const at::Tensor& mask, const kernels::KernelSet* decode_kernels);

}  // namespace moondream
