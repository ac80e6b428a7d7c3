// Layers shared by the vision encoder, the text decoder and the region head (spec §9.1,
// §9.2): LayerNorm and GELU in fp32, and the two-layer MLP.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/weights/weight_store.h"
#include "quantization/linear.h"

namespace moondream {

// LayerNorm with fp32 statistics (spec §9.1); the result has x's dtype.
struct LayerNorm {
  at::Tensor weight, bias;  // fp32 [dim]
  double eps = 1e-5;
  static absl::StatusOr<LayerNorm> Load(const WeightStore::Scope& scope, int64_t dim);
  at::Tensor Forward(const at::Tensor& x) const;
};

// GELU, tanh approximation, evaluated in fp32 (spec §9.2); the result has x's dtype.
at::Tensor GeluTanh(const at::Tensor& x);

// fc1 -> GELU_tanh -> fc2. With an INT8 fc1 the GELU is fused into fc1's GEMM
// (quant::Activation::kGeluTanh: same function, rounding within a few ulp of GeluTanh).
struct Mlp {
  quant::Linear fc1, fc2;
  static absl::StatusOr<Mlp> Load(const WeightStore::Scope& scope, int64_t dim, int64_t inner,
                                  int64_t out);
  at::Tensor Forward(const at::Tensor& x) const;
};

}  // namespace moondream
