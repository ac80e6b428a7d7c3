// Calibration-free INT8 smoothing at load (issue 12; docs/quantization.md, "Outlier
// channels"): function-preserving per-channel shifts and rescalings folded into the weights
// before they are quantized, so that activation outlier channels (a LayerNorm gain or
// bias, attention value or key rows, tens to hundreds of times larger than the rest, or a
// channel that carries a large constant) do not crush the per-token INT8 activations or the
// int8 KV cache rows. Nothing runs per token.
//
// Every channel's activation is estimated from the checkpoint's own weights and norms as a
// center m_j (its value for a zero normalised input) and a half-width h_j (c sigmas of it):
// an LN output has m = beta, h = c·|gamma|; a value or key channel y = W_j·(gamma ⊙ x̂ +
// beta) + b_j has m = W_j·beta + b_j, h = c·||W_j ⊙ gamma||. Two folds, per site:
//  - Shift (a constant offset; OS+-style): a channel with |m_j| >= h_j (its constant at
//    least doubles its range) has m_j moved out of the quantized activation into the next
//    linear's bias: LN beta -= m, fed linear's bias += W[:, j]·m; value bias -= m,
//    attn.proj's bias += W_proj[:, j]·m (attention weights sum to 1); key bias -= m outside
//    the rotary dims (softmax ignores a constant per query), text only.
//  - Scale (SmoothQuant, alpha = 1/2) on the range a_j = h_j + |m_j - shift_j|:
//    - LayerNorm -> the linears it feeds (vision ln1 -> attn.qkv, ln2 -> mlp.fc1; text ln
//      -> attn.qkv and mlp.fc1; vision post_ln -> proj_mlp.fc1 (both halves of its input);
//      text post_ln -> lm_head): s_j = sqrt(a_j / w_j), w_j = max over the fed linears of
//      r_j(W) = max_i |W[i, j]| / max_j' |W[i, j']| (column j's largest share of a row's
//      INT8 grid: weights are quantized per row, so row scales must not count);
//      gamma, beta /= s, W[:, j] *= s.
//    - attention values -> attn.proj: s_j = sqrt(a_v_j / r_j(W_proj)); W_v rows and
//      b_v /= s, W_proj[:, j] *= s. Also evens out the int8 KV cache's value rows.
//    - keys <-> queries (text only: the vision tower's attention runs in fp32, so only the
//      int8 KV cache, i.e. the text keys, sees them): s = sqrt(a_k / a_q) per channel,
//      equal for a rotary pair (j, j + rot/2); K rows /= s, Q rows *= s; q·k is unchanged.
// Only outlier channels are folded: a channel whose scale lies within a factor
// SmoothingOptions::min_scale_ratio of its site's median keeps scale 1, a channel whose
// constant is below its half-width is not shifted, and a site without either is left as
// it is. Folding the ordinary channels too (plain SmoothQuant) only reshuffled their
// rounding: on the unstressed full-size checkpoint the scales span 1.4-1.6x and folding
// them moved INT8-vs-FP32 by noise, and on the full-size key x100 stress it raised the
// mean KL 5.2e-3 -> 6.8e-3.
// Each group of a block is computed the first time one of its tensors is requested, from
// the mmap'd source tensors: the column shares r_j and the row statistics from 256 KB fp32
// blocks, one parallel pass each (docs/quantization.md, "Cost at load"); a shift also reads
// the shifted columns of the fed linears.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

// What the method does to one tensor: new = (old + add) ⊙ rows ⊙ cols, with rows [out] (or
// the elements of a 1-D tensor), cols [in] and add (1-D tensors only: the shifted
// constants). Any may be undefined (= ones, zeros). fp32 on the CPU.
struct TensorScaling {
  at::Tensor rows, cols, add;
};

// What the method did to one linear's input (and, for attn.qkv, its K and V outputs);
// applied = false with the spreads (before = after) when the site was left as it is.
// spread = max_j / median_j of the estimated per-channel activation range (h_j + |m_j|):
// 1-3 on a checkpoint without outliers, ~K·(that) with a K-fold outlier channel.
struct SmoothingStats {
  bool applied = false;
  std::string source;                    // e.g. "text.blocks.0.ln", "text.blocks.0.attn.v"
  double input_spread_before = 0, input_spread_after = 0;
  double scale_min = 1, scale_max = 1;   // of the input-channel scales s
  int shifted_channels = 0;              // input channels whose constant moved into the bias
  // attn.qkv only: worst head's key / value channel spread (the int8 KV cache rows).
  double key_spread_before = 0, key_spread_after = 0;
  double value_spread_before = 0, value_spread_after = 0;
  int shifted_keys = 0, shifted_values = 0;  // K / V channels whose constant left the cache
};

// QuantizePerChannel(src ⊙ rows[:, None] ⊙ cols[None, :]) a chunk of rows at a time (a few
// MB of fp32 transient, never the whole fp32 matrix); same q and scales as one call.
absl::StatusOr<quant::Int8Matrix> QuantizeScaled(const at::Tensor& src, const TensorScaling& scaling,
                                                 std::string_view name, quant::QuantStats* stats);
// A copy of `t` with the multipliers applied (in t's dtype and device).
at::Tensor ApplyScaling(const at::Tensor& t, const TensorScaling& scaling);

// A site's channels, each with half-width h and center m: the range h + |m| before; the
// shift (OS+-style: m_j moves into the next bias) of the channels whose constant dominates
// them (|m_j| >= h_j), zeros elsewhere, undefined when there is none; the range
// h + |m - shift| after it.
struct ChannelRanges {
  at::Tensor before, shift, after;
};

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
  // LayerNorm `ln` -> `linears`, each reading `copies` concatenated copies of its output;
  // returns the LN's (gamma, beta) as in the file.
  absl::StatusOr<std::pair<at::Tensor, at::Tensor>> ComputeLayerNorm(const std::string& ln,
                                                                     const std::vector<std::string>& linears,
                                                                     int copies);
  // The site's scales relative to their median, with every channel within min_scale_ratio
  // of it set to 1; undefined when no channel is outside (the site is left alone).
  at::Tensor Gate(const at::Tensor& s) const;
  // Adds `add` to the 1-D tensor `name`'s TensorScaling::add.
  void AddTo(const std::string& name, const at::Tensor& add);
  // Records `linear`'s input from `source`: its channel ranges `r`, and r.after divided by
  // the scales `s` (undefined: no scale fold).
  void RecordInput(const std::string& linear, const std::string& source, const ChannelRanges& r,
                   const at::Tensor& s);

  const SafetensorsFile* file_;
  SmoothingOptions options_;
  std::set<std::string> computed_;
  std::map<std::string, TensorScaling> scalings_;  // by full tensor name
  std::map<std::string, SmoothingStats> stats_;    // by linear label
};

}  // namespace moondream
