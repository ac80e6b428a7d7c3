// Layers shared by the vision encoder, the text decoder and the region head (spec §9.1,
// §9.2): LayerNorm and GELU in fp32, and the two-layer MLP.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/plan.h"
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

// fc1 -> GELU_tanh -> fc2. With `fused` (ExecutionPlan::fused_mlp, INT8 on the CPU) the
// GELU runs in fc1's GEMM epilogue (quant::Activation::kGeluTanh: same function, rounding
// within a few ulp of GeluTanh) and long inputs run in row chunks.
struct Mlp {
  quant::Linear fc1, fc2;
  bool fused = false;
  static absl::StatusOr<Mlp> Load(const WeightStore::Scope& scope, int64_t dim, int64_t inner,
                                  int64_t out, const ExecutionPlan& plan);
  at::Tensor Forward(const at::Tensor& x) const;
};

}  // namespace moondream
