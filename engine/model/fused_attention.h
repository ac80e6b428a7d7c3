// AVX-512 fp32 fused multi-head self-attention without the [H, T, T] score tensor, for the
// INT8 paths: each vision crop, and the text decoder's image-prefix prefill (every row sees
// every row there). The FP32/BF16 paths keep the ATen ops of spec
// §9.3 (their results are compared bit for bit); this kernel evaluates the same formula in
// another order (scale folded into the exponent, polynomial exp), within ~1e-6 relative.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace moondream {

// True when this CPU runs FusedSelfAttention (AVX-512 F).
bool FusedAttentionSupported();

// qkv: fp32 [T, 3·H·hd] with row t = (q | k | v), each [H, hd] (the qkv Linear's output of
// one crop; rows may be strided, columns contiguous). Returns fp32 [T, H·hd], row t =
// heads side by side: softmax(q·kᵀ / sqrt(hd)) · v per head, no mask. Parallel over heads
// (at::parallel_for); each thread's working set (one head's K and V, a few score rows)
// stays in L2. Requires FusedAttentionSupported().
at::Tensor FusedSelfAttention(const at::Tensor& qkv, int64_t heads);

}  // namespace moondream
