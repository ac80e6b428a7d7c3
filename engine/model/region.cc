#include "engine/model/region.h"

#include <cmath>

#include "engine/model/status_macros.h"

namespace moondream {

absl::StatusOr<RegionHead> RegionHead::Load(const WeightStore::Scope& scope,
                                            const RegionConfig& config, at::ScalarType dtype,
                                            const ExecutionPlan& plan) {
  RegionHead region;
  region.config_ = config;
  region.dtype_ = dtype;
  const int64_t d = config.dim;
  MD_ASSIGN_OR_RETURN(at::Tensor coord_features,
                      scope.Tensor("coord_features", {1, config.coord_feat_dim / 2}));
  MD_ASSIGN_OR_RETURN(at::Tensor size_features,
                      scope.Tensor("size_features", {2, config.size_feat_dim / 2}));
  // Stored already in x·F orientation (spec §2.1): no transpose.
  region.coord_features_ = coord_features.to(at::kFloat);
  region.size_features_ = size_features.to(at::kFloat);
  MD_ASSIGN_OR_RETURN(region.coord_encoder_, scope.Linear("coord_encoder", d, config.coord_feat_dim));
  MD_ASSIGN_OR_RETURN(region.size_encoder_, scope.Linear("size_encoder", d, config.size_feat_dim));
  MD_ASSIGN_OR_RETURN(region.coord_decoder_, Mlp::Load(scope.Sub("coord_decoder"), d,
                                                       config.inner_dim, config.coord_out_dim, plan));
  MD_ASSIGN_OR_RETURN(region.size_decoder_, Mlp::Load(scope.Sub("size_decoder"), d,
                                                      config.inner_dim, config.size_out_dim, plan));
  return region;
}

at::Tensor RegionHead::Fourier(const at::Tensor& x, const at::Tensor& features) const {
  const at::Tensor z = at::matmul(x * (2.0 * M_PI), features);  // [1, n]
  return at::cat({z.cos(), z.sin()}, -1).to(dtype_);          // [1, 2n]
}

at::Tensor RegionHead::EncodeCoordinate(float x) const {
  const at::Tensor in = at::full({1, 1}, x, at::TensorOptions().dtype(at::kFloat));
  return coord_encoder_.Forward(Fourier(in.to(coord_features_.device()), coord_features_))
      .squeeze(0);
}

at::Tensor RegionHead::EncodeSize(float w, float h) const {
  const at::Tensor in = at::tensor({w, h}, at::TensorOptions().dtype(at::kFloat)).view({1, 2});
  return size_encoder_.Forward(Fourier(in.to(size_features_.device()), size_features_))
      .squeeze(0);
}

at::Tensor RegionHead::DecodeCoordinate(const at::Tensor& h) const {
  return coord_decoder_.Forward(h.unsqueeze(0)).squeeze(0).to(at::kFloat);
}

at::Tensor RegionHead::DecodeSize(const at::Tensor& h) const {
  return size_decoder_.Forward(h.unsqueeze(0)).view({2, -1}).to(at::kFloat);
}

float RegionHead::BinValue(const at::Tensor& logits) {
  const int64_t bins = logits.size(-1);
  return static_cast<float>(logits.argmax().item<int64_t>()) / static_cast<float>(bins);
}

}  // namespace moondream
