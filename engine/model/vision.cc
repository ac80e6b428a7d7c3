#include "engine/model/vision.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/model/status_macros.h"
#include "engine/model/torch_compat.h"
#include "engine/model/attention.h"

namespace moondream {

CropConfig CropConfigFor(const VisionConfig& config) {
  CropConfig crop;
  crop.crop_size = config.crop_size;
  crop.patch_size = config.enc_patch_size;
  crop.overlap_margin = config.overlap_margin;
  crop.max_crops = config.max_crops;
  return crop;
}

absl::StatusOr<VisionEncoder> VisionEncoder::Load(const WeightStore::Scope& vision,
                                                  const VisionConfig& config,
                                                  const ExecutionPlan& plan) {
  if (config.enc_n_heads <= 0 || config.enc_dim % config.enc_n_heads != 0 ||
      config.crop_size % config.enc_patch_size != 0 ||
      config.grid() <= 2 * config.overlap_margin) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vision: inconsistent config (enc_dim ", config.enc_dim, ", heads ", config.enc_n_heads,
        ", crop ", config.crop_size, ", patch ", config.enc_patch_size, ", margin ",
        config.overlap_margin, ")"));
  }
  VisionEncoder enc;
  enc.config_ = config;
  enc.plan_ = plan;
  const int64_t d = config.enc_dim;
  MD_ASSIGN_OR_RETURN(enc.patch_emb_, vision.Linear("patch_emb", d, config.patch_dim()));
  MD_ASSIGN_OR_RETURN(enc.pos_emb_, vision.Tensor("pos_emb", {1, config.n_patches(), d}));
  for (int i = 0; i < config.enc_n_layers; ++i) {
    const WeightStore::Scope blk = vision.Sub("blocks").Sub(std::to_string(i));
    Block block;
    MD_ASSIGN_OR_RETURN(block.ln1, LayerNorm::Load(blk.Sub("ln1"), d));
    MD_ASSIGN_OR_RETURN(block.qkv, blk.Sub("attn").Linear("qkv", 3 * d, d));
    MD_ASSIGN_OR_RETURN(block.proj, blk.Sub("attn").Linear("proj", d, d));
    MD_ASSIGN_OR_RETURN(block.ln2, LayerNorm::Load(blk.Sub("ln2"), d));
    MD_ASSIGN_OR_RETURN(block.mlp, Mlp::Load(blk.Sub("mlp"), d, config.enc_ff_dim, d, plan));
    enc.blocks_.push_back(std::move(block));
  }
  MD_ASSIGN_OR_RETURN(enc.post_ln_, LayerNorm::Load(vision.Sub("post_ln"), d));
  MD_ASSIGN_OR_RETURN(enc.proj_mlp_, Mlp::Load(vision.Sub("proj_mlp"), 2 * d,
                                               config.proj_inner_dim, config.proj_out_dim, plan));
  return enc;
}

at::Tensor VisionEncoder::Patchify(const Crops& crops, int64_t first, int64_t n,
                                   at::ScalarType dtype) const {
  const int64_t s = config_.crop_size, p = config_.enc_patch_size;
  const int64_t g = config_.grid(), c = config_.in_channels;
  TORCH_CHECK(crops.size == s && crops.count >= 2 &&
                  crops.pixels.size() == size_t(crops.count * s * s * c),
              "vision: crops must be [N >= 2, ", s, ", ", s, ", ", c, "] uint8");
  TORCH_CHECK(first >= 0 && n >= 1 && first + n <= crops.count, "vision: bad crop range");
  const at::Tensor u8 =
      at::from_blob(const_cast<uint8_t*>(crops.pixels.data()) + first * s * s * c,
                    {n, s, s, c}, at::TensorOptions().dtype(at::kByte));
  // Reference op order in fp32: /255, −0.5, /0.5 (the goldens' encoder input).
  const at::Tensor pixels = u8.to(at::kFloat).div(255).sub(0.5).div(0.5);  // [N, S, S, C]
  // Element (b, ch, 14r+dy, 14c+dx) -> patch t = g·r + c, feature ch·p² + dy·p + dx.
  return pixels.view({n, g, p, g, p, c})       // [N, r, dy, c, dx, ch]
      .permute({0, 1, 3, 5, 2, 4})             // [N, r, c, ch, dy, dx]
      .reshape({n, g * g, c * p * p})
      .to(dtype);
}

at::Tensor VisionEncoder::SelfAttention(const at::Tensor& qkv) const {
  const int64_t n = qkv.size(0), t = qkv.size(1), heads = config_.enc_n_heads;
  const int64_t hd = config_.head_dim();
  if (plan_.kernel_self_attention && n == 1) {
    return KernelSelfAttention(*plan_.kernels, qkv[0], heads).unsqueeze(0);
  }
  // One crop at a time: only one crop's fp32 scores [H, T, T] (and their softmax) exist at
  // once instead of N crops' (~440 MB at 13 crops). Each crop's bmm slices are the same as
  // in a batched call, so the result is bit-identical.
  at::Tensor out = at::empty({n, t, heads * hd}, qkv.options());
  for (int64_t i = 0; i < n; ++i) {
    if (plan_.kernel_self_attention) {
      out[i].copy_(KernelSelfAttention(*plan_.kernels, qkv[i], heads));
      continue;
    }
    const at::Tensor q = qkv[i].view({t, 3, heads, hd}).permute({1, 2, 0, 3});  // [3, H, T, hd]
    out[i].copy_(Sdpa(q[0], q[1], q[2], at::Tensor()).transpose(0, 1).reshape({t, heads * hd}));
  }
  return out;
}

at::Tensor VisionEncoder::BlockForward(const Block& block, at::Tensor x) const {
  // One expression: qkv and the attention output are freed at its end, before the MLP's
  // temporaries are allocated (a crop's activation peak).
  x.add_(block.proj.Forward(SelfAttention(block.qkv.Forward(block.ln1.Forward(x)))));
  return x.add_(block.mlp.Forward(block.ln2.Forward(x)));
}

at::Tensor VisionEncoder::Tower(const at::Tensor& patches, const RunContext* ctx) const {
  at::Tensor x = patch_emb_.Forward(patches).add_(pos_emb_);  // [N, T, D]
  for (const Block& block : blocks_) {
    ThrowIfStopped(ctx);
    x = BlockForward(block, x);
  }
  return post_ln_.Forward(x);
}

at::Tensor VisionEncoder::NewStitched(const Tiling& tiling, const at::TensorOptions& options) const {
  const int64_t g = config_.grid(), m = config_.overlap_margin, step = g - 2 * m;
  return at::zeros({step * tiling.rows + 2 * m, step * tiling.cols + 2 * m, config_.enc_dim},
                   options);
}

void VisionEncoder::StitchCrop(const at::Tensor& local, int64_t index, const Tiling& tiling,
                               at::Tensor& stitched) const {
  const int64_t g = config_.grid(), m = config_.overlap_margin, step = g - 2 * m;
  const int64_t i = index / tiling.cols, j = index % tiling.cols;
  const int64_t y0 = i == 0 ? 0 : m, y1 = i == tiling.rows - 1 ? g : g - m;
  const int64_t x0 = j == 0 ? 0 : m, x1 = j == tiling.cols - 1 ? g : g - m;
  stitched.slice(0, step * i + y0, step * i + y1)
      .slice(1, step * j + x0, step * j + x1)
      .copy_(local.slice(0, y0, y1).slice(1, x0, x1));
}

at::Tensor VisionEncoder::Encode(const Crops& crops, at::ScalarType dtype, VisionTaps* taps,
                                 const RunContext* ctx) const {
  TORCH_CHECK(dtype == pos_emb_.scalar_type(), "vision: activations must use the weights' dtype ",
              pos_emb_.scalar_type());
  TORCH_CHECK(crops.count == crops.tiling.rows * crops.tiling.cols + 1,
              "vision: crop count does not match the tiling");
  const int64_t n = crops.count, g = config_.grid(), d = config_.enc_dim;
  at::Tensor global, stitched = NewStitched(crops.tiling, pos_emb_.options());  // [R_h, R_w, D]
  at::Tensor out;  // [N, g², D] after post_ln: every crop (FP path, or taps requested)
  const bool per_crop = plan_.crop_by_crop_vision;
  if (per_crop) {
    // Crop by crop: each local crop goes straight into the stitched map (spec §4.3).
    if (taps != nullptr) out = at::empty({n, g * g, d}, pos_emb_.options());
    for (int64_t i = 0; i < n; ++i) {
      const at::Tensor crop = Tower(Patchify(crops, i, 1, dtype).to(pos_emb_.device()), ctx)[0];
      if (out.defined()) out[i].copy_(crop);
      if (i == 0) {
        global = crop;
      } else {
        StitchCrop(crop.view({g, g, d}), i - 1, crops.tiling, stitched);
      }
    }
  } else {
    out = Tower(Patchify(crops, 0, n, dtype).to(pos_emb_.device()), ctx);  // [N, g², D]
    global = out[0];
    for (int64_t i = 1; i < n; ++i) {
      StitchCrop(out[i].view({g, g, d}), i - 1, crops.tiling, stitched);
    }
  }
  // Adaptive average pooling with fp32 accumulation (spec §4.3; UNVERIFIED there for the
  // reference's CPU path, irrelevant in fp32 where it matches the goldens bit for bit).
  // The map is [R_h, R_w, D], i.e. channels-last [1, D, R_h, R_w]: the crop-by-crop plan
  // pools it in place (the batched plan keeps the ATen call the FP goldens were measured
  // with, which first copies the map to [D, R_h, R_w]).
  const at::Tensor pooled =  // [D, g, g]
      per_crop ? at::adaptive_avg_pool2d(stitched.unsqueeze(0).permute({0, 3, 1, 2}), {g, g})[0]
               : at::adaptive_avg_pool2d(stitched.permute({2, 0, 1}).to(at::kFloat), {g, g});
  const at::Tensor local = pooled.permute({1, 2, 0}).reshape({g * g, d}).to(dtype);
  if (taps != nullptr) {
    taps->encoder_out = out;
    taps->reconstructed = stitched;
    taps->pooled = pooled.to(dtype);
  }
  return proj_mlp_.Forward(at::cat({global, local}, -1));  // [g², proj_out_dim]
}

uint64_t VisionEncoder::bytes() const {
  uint64_t total = patch_emb_.bytes() + pos_emb_.nbytes() + proj_mlp_.fc1.bytes() +
                   proj_mlp_.fc2.bytes();
  auto ln_bytes = [](const LayerNorm& ln) { return ln.weight.nbytes() + ln.bias.nbytes(); };
  total += ln_bytes(post_ln_);
  for (const Block& b : blocks_) {
    total += ln_bytes(b.ln1) + ln_bytes(b.ln2) + b.qkv.bytes() + b.proj.bytes() +
             b.mlp.fc1.bytes() + b.mlp.fc2.bytes();
  }
  return total;
}

}  // namespace moondream
