// Moondream2 text decoder (spec §5): Phi-style parallel blocks, partial rotary, the
// bidirectional image-prefix mask, KV cache, post_ln + lm_head.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model.h"
#include "engine/model/kv_cache.h"
#include "engine/weights/config.h"
#include "engine/weights/weight_store.h"
#include "engine/model/layers.h"

namespace moondream {

class TextDecoder {
 public:
  // scope = "model.text"; dtype = compute dtype of the activations.
  static absl::StatusOr<TextDecoder> Load(const WeightStore::Scope& scope,
                                          const TextConfig& config, at::ScalarType dtype,
                                          const ExecutionPlan& plan);

  // ids: int64 [T] -> [T, D] (compute dtype).
  at::Tensor Embed(const at::Tensor& ids) const;
  // Runs the blocks over embeds [T, D] at positions pos..pos+T-1, writing their K/V into
  // `cache` and attending to positions 0..pos+T-1. Returns the raw last-layer hidden
  // [T, D] (before post_ln). Positions must stay below cache.capacity().
  // With `ctx`, deadline and cancellation are checked before each layer (StopRequested).
  at::Tensor Prefill(const at::Tensor& embeds, int64_t pos, KvCache& cache,
                     const RunContext* ctx = nullptr) const;
  // h_last: [D] raw hidden -> fp32 logits [vocab] (post_ln, lm_head).
  at::Tensor Logits(const at::Tensor& h_last) const;

  const TextConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }

 private:
  struct Block {
    LayerNorm ln;
    quant::Linear qkv, proj;
    Mlp mlp;
  };
  // Rows per chunk of a long prefill (BlockForward).
  static constexpr int64_t kPrefillRows = 256;
  at::Tensor BlockForward(const Block& block, int layer, const at::Tensor& h, int64_t pos,
                          const at::Tensor& mask, KvCache& cache) const;
  // x: [..., T, hd] at positions pos..pos+T-1 -> rotated (first rot_dim dims, half split).
  at::Tensor Rotary(const at::Tensor& x, int64_t pos) const;
  // Bool [T, pos+T] rows of the prefix mask (spec §5.4); undefined when all true.
  at::Tensor Mask(int64_t pos, int64_t t) const;

  TextConfig config_;
  at::ScalarType dtype_ = at::kFloat;
  ExecutionPlan plan_;
  quant::Embedding wte_;
  std::vector<Block> blocks_;
  LayerNorm post_ln_;
  quant::Linear lm_head_;
  at::Tensor cos_, sin_;  // fp32 [max_context, rot_dim/2]
};

}  // namespace moondream
