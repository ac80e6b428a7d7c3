// Region head (spec §6.5): Fourier-feature encoders and MLP decoders for coordinates and
// sizes, used by detect/point. Decoders read the RAW last-layer hidden (no post_ln).
#pragma once

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/layers.h"
#include "engine/weights/config.h"
#include "engine/weights/weight_store.h"
#include "quantization/linear.h"

namespace moondream {

class RegionHead {
 public:
  // scope = "model.region"; dtype = compute dtype of the activations.
  static absl::StatusOr<RegionHead> Load(const WeightStore::Scope& scope,
                                         const RegionConfig& config, at::ScalarType dtype,
                                         const ExecutionPlan& plan);

  // x in [0, 1] -> embedding [D] (compute dtype).
  at::Tensor EncodeCoordinate(float x) const;
  // (w, h) -> embedding [D] (compute dtype).
  at::Tensor EncodeSize(float w, float h) const;
  // h: raw hidden [D] -> fp32 logits [coord_bins].
  at::Tensor DecodeCoordinate(const at::Tensor& h) const;
  // h: raw hidden [D] -> fp32 logits [2, size_bins] (row 0 width, row 1 height).
  at::Tensor DecodeSize(const at::Tensor& h) const;

  // Linear bins (this revision, spec §6.5): argmax / bins, lowest index on ties.
  static float BinValue(const at::Tensor& logits /*[bins]*/);

 private:
  // z = (2*pi*x) F; [cos z, sin z] in fp32 (the goldens are fp32 activations; the fp16
  // reference rounds each step, spec §9.14), then cast to the compute dtype.
  at::Tensor Fourier(const at::Tensor& x /*fp32 [1, k]*/, const at::Tensor& features) const;

  RegionConfig config_;
  at::ScalarType dtype_ = at::kFloat;
  at::Tensor coord_features_, size_features_;  // fp32 [1, coord_feat/2], [2, size_feat/2]
  quant::Linear coord_encoder_, size_encoder_;
  Mlp coord_decoder_, size_decoder_;
};

}  // namespace moondream
