// Calibration-free INT8 smoothing at load (issue 12; docs/quantization.md, "Outlier
// channels"): function-preserving per-channel rescalings folded into the weights before
// they are quantized, so that activation outlier channels (a LayerNorm gain, attention
// value or key rows that are tens to hundreds of times larger than the rest) do not crush
// the per-token INT8 activations or the int8 KV cache rows. Nothing runs per token.
//
// Sites (every scale derived from the checkpoint's own weights and norms):
//  - LayerNorm -> the linears it feeds (vision ln1 -> attn.qkv, ln2 -> mlp.fc1; text ln ->
//    attn.qkv and mlp.fc1; vision post_ln -> proj_mlp.fc1 (both halves of its input); text
//    post_ln -> lm_head): SmoothQuant with alpha = 1/2, s_j = sqrt(a_j / w_j), a_j =
//    c·|gamma_j| + |beta_j| (the LN output's range for a normalised input of c sigmas),
//    w_j = max over the fed linears of max_i |W[i, j]|; gamma, beta /= s, W[:, j] *= s.
//  - attention values -> attn.proj: s_j = sqrt(r_v_j / max_i |W_proj[i, j]|) with r_v_j the
//    value channel's range estimated through the LN (c·||W_v[j,:]·gamma|| + |W_v[j,:]·beta
//    + b_v[j]|); W_v rows and b_v /= s, W_proj[:, j] *= s. Also evens out the int8 KV
//    cache's value rows.
//  - keys <-> queries (text only: the vision tower's attention runs in fp32, so only the
//    int8 KV cache, i.e. the text keys, sees them): s = sqrt(r_k / r_q) per channel, equal
//    for a rotary pair (j, j + rot/2); K rows /= s, Q rows *= s; q·k is unchanged.
// Only outlier channels are folded: a channel whose scale lies within a factor
// SmoothingOptions::min_scale_ratio of its site's median keeps scale 1, and a site without
// an outlier is left as it is. Folding the ordinary channels too (plain SmoothQuant) only
// reshuffled their rounding: on the unstressed full-size checkpoint the scales span
// 1.4-1.6x and folding them moved INT8-vs-FP32 by noise, and on the full-size key x100
// stress it raised the mean KL 5.2e-3 -> 6.8e-3.
// Each group of a block is computed the first time one of its tensors is requested, from
// the mmap'd source tensors: column maxima straight from the stored bits, row ranges from
// 256 KB fp32 blocks, one parallel pass each (docs/quantization.md, "Cost at load").
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/weights/safetensors.h"
#include "quantization/linear.h"

namespace moondream {

struct SmoothingOptions {
  int text_heads = 0;      // text attention heads (key/query balancing); 0 = skip it
  double sigmas = 3.0;     // c: range of the normalised LN input, in standard deviations
  // A channel is folded only when its scale is this factor or more above or below its
  // site's median (then by scale / median); 1 = every channel (plain SmoothQuant).
  double min_scale_ratio = 2.0;
};

// Multipliers for one tensor: rows [out] (or the elements of a 1-D tensor), cols [in].
// Either may be undefined (= ones). fp32 on the CPU.
struct TensorScaling {
  at::Tensor rows, cols;
};

// What the method did to one linear's input (and, for attn.qkv, its K and V outputs);
// applied = false with the spreads (before = after) when the site was left as it is.
// spread = max_j / median_j of the estimated per-channel activation range: 1-3 on a
// checkpoint without outliers, ~K·(that) with a K-fold outlier channel.
struct SmoothingStats {
  bool applied = false;
  std::string source;                    // e.g. "text.blocks.0.ln", "text.blocks.0.attn.v"
  double input_spread_before = 0, input_spread_after = 0;
  double scale_min = 1, scale_max = 1;   // of the input-channel scales s
  // attn.qkv only: worst head's key / value channel spread (the int8 KV cache rows).
  double key_spread_before = 0, key_spread_after = 0;
  double value_spread_before = 0, value_spread_after = 0;
};

// QuantizePerChannel(src ⊙ rows[:, None] ⊙ cols[None, :]) a chunk of rows at a time (a few
// MB of fp32 transient, never the whole fp32 matrix); same q and scales as one call.
absl::StatusOr<quant::Int8Matrix> QuantizeScaled(const at::Tensor& src, const TensorScaling& scaling,
                                                 std::string_view name, quant::QuantStats* stats);
// A copy of `t` with the multipliers applied (in t's dtype and device).
at::Tensor ApplyScaling(const at::Tensor& t, const TensorScaling& scaling);

class SmoothingPlan {
 public:
  SmoothingPlan(const SafetensorsFile* file, SmoothingOptions options)
      : file_(file), options_(options) {}

  // Multipliers for the tensor `name` ("model.…"), computing its group on first use;
  // nullptr when the tensor is left as it is.
  absl::StatusOr<const TensorScaling*> For(const std::string& name);
  // Stats for a linear `label` (name without "model." and ".weight"); nullptr: none.
  const SmoothingStats* StatsFor(const std::string& label) const;

 private:
  absl::Status Compute(const std::string& group);
  absl::Status ComputeBlock(const std::string& prefix, bool text);
  absl::Status ComputePostLn(const std::string& ln, const std::string& linear, bool doubled);
  // The site's scales relative to their median, with every channel within min_scale_ratio
  // of it set to 1; undefined when no channel is outside (the site is left alone).
  at::Tensor Gate(const at::Tensor& s) const;
  // Records `linear`'s input from `source`: channel ranges `range` before, divided by the
  // scales `s` after (applied), or unchanged when `s` is undefined.
  void RecordInput(const std::string& linear, const std::string& source,
                   const at::Tensor& range, const at::Tensor& s);

  const SafetensorsFile* file_;
  SmoothingOptions options_;
  std::set<std::string> computed_;
  std::map<std::string, TensorScaling> scalings_;  // by full tensor name
  std::map<std::string, SmoothingStats> stats_;    // by linear label
};

}  // namespace moondream
