// Moondream2 vision encoder + projection (spec §4): patchify, 27 pre-LN ViT blocks,
// stitching of the local crops, adaptive average pooling, projection MLP.
//
//   MD_ASSIGN_OR_RETURN(auto vision, VisionEncoder::Load(root.Sub("vision"), cfg.vision, plan));
//   MD_ASSIGN_OR_RETURN(Crops crops, OverlapCrops(rgb, CropConfigFor(cfg.vision)));
//   at::Tensor embeds = vision.Encode(crops, ComputeDtype(precision));  // [729, proj_out_dim]
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/image/image.h"
#include "engine/model.h"
#include "engine/model/layers.h"
#include "engine/weights/config.h"
#include "engine/weights/weight_store.h"
#include "quantization/linear.h"

namespace moondream {

// The crop geometry of spec §3.3 taken from the vision config.
CropConfig CropConfigFor(const VisionConfig& config);

// Intermediate results for parity tests; each is filled when the struct is passed.
struct VisionTaps {
  at::Tensor encoder_out;    // [N, grid², enc_dim] after post_ln, crop order as in Crops
  at::Tensor reconstructed;  // [R_h, R_w, enc_dim] stitched local features (spec §4.3)
  at::Tensor pooled;         // [enc_dim, grid, grid] adaptive average pool output
};

class VisionEncoder {
 public:
  // vision = scope "model.vision" (encoder and proj_mlp). Every dimension comes from `config`.
  static absl::StatusOr<VisionEncoder> Load(const WeightStore::Scope& vision,
                                            const VisionConfig& config,
                                            const ExecutionPlan& plan);

  // crops (from OverlapCrops with CropConfigFor(config)) -> image embeddings
  // [grid², proj_out_dim] in `dtype`, which must be the weights' compute dtype. Pixels are
  // normalised in fp32 ((u8/255 − 0.5)/0.5), then cast to `dtype`.
  // The plan decides: all crops batched layer by layer (attention still one crop at a
  // time, one crop's scores at once), or the whole tower crop by crop
  // (ExecutionPlan::crop_by_crop_vision); attention through the ATen ops or
  // kernels::SelfAttention (ExecutionPlan::kernel_self_attention).
  // Throws c10::Error on bad input (callers run it under RunGuarded).
  // With `ctx`, the request's deadline and cancellation are checked before each crop (or,
  // batched, before each block): StopRequested (torch_compat.h) unwinds to RunGuarded.
  at::Tensor Encode(const Crops& crops, at::ScalarType dtype, VisionTaps* taps = nullptr,
                    const RunContext* ctx = nullptr) const;

  // Resident bytes of the weights.
  uint64_t bytes() const;
  const VisionConfig& config() const { return config_; }

 private:
  struct Block {
    LayerNorm ln1, ln2;
    quant::Linear qkv, proj;
    Mlp mlp;
  };

  // crops [first, first + count) -> normalised patches [count, grid², patch_dim] in dtype
  // (spec §3.4, §4.1).
  at::Tensor Patchify(const Crops& crops, int64_t first, int64_t count,
                      at::ScalarType dtype) const;
  // patches [N, grid², patch_dim] -> post_ln output [N, grid², enc_dim] (spec §4.1-§4.2).
  at::Tensor Tower(const at::Tensor& patches, const RunContext* ctx) const;
  // x: [N, T, enc_dim], updated in place and returned (spec §4.2).
  at::Tensor BlockForward(const Block& block, at::Tensor x) const;
  // qkv [N, T, 3·enc_dim] -> attention output [N, T, enc_dim], one crop at a time.
  at::Tensor SelfAttention(const at::Tensor& qkv) const;
  // Spec §4.3: the zeroed [R_h, R_w, enc_dim] map, and local crop `index` (row-major in the
  // tiling; local: [grid, grid, enc_dim]) copied into it without the overlap margins.
  at::Tensor NewStitched(const Tiling& tiling, const at::TensorOptions& options) const;
  void StitchCrop(const at::Tensor& local, int64_t index, const Tiling& tiling,
                  at::Tensor& stitched) const;

  VisionConfig config_;
  ExecutionPlan plan_;
  quant::Linear patch_emb_;
  at::Tensor pos_emb_;  // [1, grid², enc_dim]
  std::vector<Block> blocks_;
  LayerNorm post_ln_;
  Mlp proj_mlp_;
};

}  // namespace moondream
