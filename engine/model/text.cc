#include "engine/model/text.h"

#include <utility>

#include "engine/model/attention.h"
#include "engine/model/status_macros.h"
#include "engine/model/torch_compat.h"

namespace moondream {

absl::StatusOr<TextDecoder> TextDecoder::Load(const WeightStore::Scope& scope,
                                              const TextConfig& config, at::ScalarType dtype,
                                              const ExecutionPlan& plan) {
  if (config.rot_dim() % 2 != 0 || config.rot_dim() > config.head_dim()) {
    return absl::InvalidArgumentError("text: rotary dims must be even and <= head_dim");
  }
  TextDecoder text;
  text.config_ = config;
  text.dtype_ = dtype;
  text.plan_ = plan;
  const int64_t d = config.dim;
  MD_ASSIGN_OR_RETURN(text.wte_, scope.Embedding("wte", config.vocab_size, d));
  for (int i = 0; i < config.n_layers; ++i) {
    const WeightStore::Scope blk = scope.Sub("blocks").Sub(std::to_string(i));
    Block block;
    MD_ASSIGN_OR_RETURN(block.ln, LayerNorm::Load(blk.Sub("ln"), d));
    MD_ASSIGN_OR_RETURN(block.qkv, blk.Sub("attn").Linear("qkv", 3 * d, d));
    MD_ASSIGN_OR_RETURN(block.proj, blk.Sub("attn").Linear("proj", d, d));
    MD_ASSIGN_OR_RETURN(block.mlp, Mlp::Load(blk.Sub("mlp"), d, config.ff_dim(), d, plan));
    text.blocks_.push_back(std::move(block));
  }
  MD_ASSIGN_OR_RETURN(text.post_ln_, LayerNorm::Load(scope.Sub("post_ln"), d));
  MD_ASSIGN_OR_RETURN(text.lm_head_, scope.Linear("lm_head", config.vocab_size, d));

  // Rotary tables in fp32 (spec §5.3, §9.18): f_j = 1 / theta^(2j / rot_dim).
  constexpr double kTheta = 10000.0;
  const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor exponents = at::arange(0, config.rot_dim(), 2, f32) / config.rot_dim();
  const at::Tensor freqs = 1.0 / at::pow(kTheta, exponents);               // [rot/2]
  const at::Tensor angles = at::outer(at::arange(config.max_context, f32), freqs);  // [ctx, rot/2]
  text.cos_ = angles.cos().to(text.post_ln_.weight.device());
  text.sin_ = angles.sin().to(text.post_ln_.weight.device());
  return text;
}

at::Tensor TextDecoder::Embed(const at::Tensor& ids) const {
  return wte_.Lookup(ids.to(cos_.device()), dtype_);
}

at::Tensor TextDecoder::Rotary(const at::Tensor& x, int64_t pos) const {
  const int64_t t = x.size(-2), half = config_.rot_dim() / 2;
  const at::Tensor cos = cos_.narrow(0, pos, t), sin = sin_.narrow(0, pos, t);  // [T, half]
  const at::Tensor a = x.narrow(-1, 0, half).to(at::kFloat);     // [..., T, half]
  const at::Tensor b = x.narrow(-1, half, half).to(at::kFloat);  // [..., T, half]
  const at::Tensor rotated = at::cat({a * cos - b * sin, a * sin + b * cos}, -1);
  const at::Tensor pass = x.narrow(-1, 2 * half, x.size(-1) - 2 * half);
  return at::cat({rotated.to(x.scalar_type()), pass}, -1);
}

at::Tensor TextDecoder::Mask(int64_t pos, int64_t t) const {
  const int64_t prefix = config_.prefix_attn;
  // Every row sees every column when there is one row (the last row is causal-complete)
  // or when all positions lie inside the bidirectional prefix.
  if (t == 1 || pos + t <= prefix) return at::Tensor();
  const at::TensorOptions i64 = at::TensorOptions().dtype(at::kLong).device(cos_.device());
  const at::Tensor rows = at::arange(pos, pos + t, i64).unsqueeze(1);  // [T, 1]
  const at::Tensor cols = at::arange(pos + t, i64).unsqueeze(0);       // [1, pos+T]
  return cols.le(rows).logical_or(rows.lt(prefix).logical_and(cols.lt(prefix)));
}

at::Tensor TextDecoder::BlockForward(const Block& block, int layer, const at::Tensor& h,
                                     int64_t pos, const at::Tensor& mask,
                                     KvCache& cache) const {
  const int64_t t = h.size(0), heads = config_.n_heads, hd = config_.head_dim();
  // Every step but attention is row-wise, so a long prefill (the 730-position image prefix)
  // runs in row chunks: two passes hold h, the queries, the output and one chunk's
  // activations instead of the whole sequence's (~200 MB of fp32 MLP/QKV intermediates).
  const int64_t chunk = std::min<int64_t>(t, kPrefillRows);
  // Image-prefix prefill (no mask: every row attends to every row) under a plan with kernel
  // self-attention (INT8): the fp32 kernel over one [T, 3, H, hd] buffer of rotated
  // q | rotated k | v, instead of attention over the cache's int8 copy.
  const bool fused = plan_.kernel_self_attention && !mask.defined() && pos == 0 && t > 1;
  // Pass 1: rotated keys and values of every row into the cache; the queries kept.
  at::Tensor q;         // [H, T, hd] rotated queries (CachedAttention)
  at::Tensor qkv_rows;  // fused: [T, 3, H, hd] rotated q | rotated k | v
  at::Tensor normed;    // ln(h) when one chunk holds every row: pass 2 reuses it
  for (int64_t r = 0; r < t; r += chunk) {
    const int64_t n = std::min(chunk, t - r);
    const at::Tensor x = block.ln.Forward(h.narrow(0, r, n));
    if (n == t) normed = x;
    const at::Tensor qkv = block.qkv.Forward(x)  // [n, 3D]
                               .view({n, 3, heads, hd})
                               .permute({1, 2, 0, 3});  // [3, H, n, hd]
    // Queries and keys rotated in one pass (the row ops of a decode step are per call).
    const at::Tensor qk = Rotary(qkv.narrow(0, 0, 2), pos + r);  // [2, H, n, hd]
    const at::Tensor q_rows = qk[0], k_rows = qk[1];
    if (fused) {
      if (r == 0) qkv_rows = at::empty({t, 3, heads, hd}, q_rows.options());
      const at::Tensor rows = qkv_rows.narrow(0, r, n);
      rows.select(1, 0).copy_(q_rows.transpose(0, 1));
      rows.select(1, 1).copy_(k_rows.transpose(0, 1));
      rows.select(1, 2).copy_(qkv[2].transpose(0, 1));
    } else if (n == t) {
      q = q_rows;
    } else {
      if (r == 0) q = at::empty({heads, t, hd}, q_rows.options());
      q.narrow(1, r, n).copy_(q_rows);
    }
    cache.Write(layer, pos + r, k_rows, qkv[2]);
  }
  at::Tensor fused_attn;  // [T, D]
  if (fused) {
    fused_attn = KernelSelfAttention(*plan_.kernels, qkv_rows.view({t, 3 * config_.dim}), heads);
    qkv_rows.reset();  // the buffer goes before pass 2 allocates
  }
  // Pass 2: attention over every written position, projection and the parallel MLP.
  const std::vector<KvSegment> kv = cache.Segments(layer, pos + t);
  at::Tensor out;
  for (int64_t r = 0; r < t; r += chunk) {
    const int64_t n = std::min(chunk, t - r);
    const at::Tensor rows = h.narrow(0, r, n);
    const at::Tensor attn =
        fused ? fused_attn.narrow(0, r, n)
              : CachedAttention(q.narrow(1, r, n), kv, mask.defined() ? mask.narrow(0, r, n) : mask,
                                plan_.kernel_decode_attention ? plan_.kernels : nullptr)
                    .permute({1, 0, 2})
                    .reshape({n, config_.dim});  // [n, D]
    // Reference order: (h + attn) first, then + mlp (spec §5.1).
    const at::Tensor x = normed.defined() ? normed : block.ln.Forward(rows);
    at::Tensor y = (rows + block.proj.Forward(attn)) + block.mlp.Forward(x);
    if (n == t) return y;
    if (r == 0) out = at::empty_like(h);
    out.narrow(0, r, n).copy_(y);
  }
  return out;
}

at::Tensor TextDecoder::Prefill(const at::Tensor& embeds, int64_t pos, KvCache& cache,
                                const RunContext* ctx) const {
  TORCH_CHECK(embeds.dim() == 2 && embeds.size(1) == config_.dim, "text: embeds must be [T, ",
              config_.dim, "]");
  const int64_t t = embeds.size(0);
  TORCH_CHECK(pos + t <= cache.capacity(), "text: positions up to ", pos + t - 1,
              " exceed the KV cache capacity ", cache.capacity());
  const at::Tensor mask = Mask(pos, t);
  at::Tensor h = embeds.to(dtype_);
  for (int i = 0; i < config_.n_layers; ++i) {
    ThrowIfStopped(ctx);
    h = BlockForward(blocks_[i], i, h, pos, mask, cache);
  }
  return h;
}

at::Tensor TextDecoder::Logits(const at::Tensor& h_last) const {
  return lm_head_.Forward(post_ln_.Forward(h_last.unsqueeze(0))).squeeze(0).to(at::kFloat);
}

}  // namespace moondream
