#include "engine/model/layers.h"

#include <algorithm>
#include <vector>

#include "engine/model/status_macros.h"

namespace moondream {

absl::StatusOr<LayerNorm> LayerNorm::Load(const WeightStore::Scope& scope, int64_t dim) {
  LayerNorm ln;
  MD_ASSIGN_OR_RETURN(at::Tensor w, scope.Tensor("weight", {dim}));
  MD_ASSIGN_OR_RETURN(at::Tensor b, scope.Tensor("bias", {dim}));
  ln.weight = w.to(at::kFloat);
  ln.bias = b.to(at::kFloat);
  return ln;
}

at::Tensor LayerNorm::Forward(const at::Tensor& x) const {
  return at::layer_norm(x.to(at::kFloat), {weight.size(0)}, weight, bias, eps)
      .to(x.scalar_type());
}

at::Tensor GeluTanh(const at::Tensor& x) {
  return at::gelu(x.to(at::kFloat), "tanh").to(x.scalar_type());
}

absl::StatusOr<Mlp> Mlp::Load(const WeightStore::Scope& scope, int64_t dim, int64_t inner,
                              int64_t out, const ExecutionPlan& plan) {
  Mlp mlp;
  mlp.fused = plan.fused_mlp;
  MD_ASSIGN_OR_RETURN(mlp.fc1, scope.Linear("fc1", inner, dim));
  MD_ASSIGN_OR_RETURN(mlp.fc2, scope.Linear("fc2", out, inner));
  return mlp;
}

at::Tensor Mlp::Forward(const at::Tensor& x) const {
  if (!fused) return fc2.Forward(GeluTanh(fc1.Forward(x)));
  // GELU fused into fc1, and the rows in chunks whose fp32 hidden activations stay under
  // kHiddenChunkBytes. The INT8 kernel quantizes activations per row, so chunking does not
  // change the result; it caps the temporaries of long inputs (a vision crop's 729 tokens,
  // the 730-position image prefill) at a few MB instead of tens.
  constexpr int64_t kHiddenChunkBytes = 8 << 20;
  const int64_t inner = fc1.out_features();
  const at::Tensor x2 = x.reshape({-1, x.size(-1)});
  const int64_t rows = x2.size(0);
  const int64_t max_rows = std::max<int64_t>(64, kHiddenChunkBytes / (inner * 4));
  if (rows <= max_rows) return fc2.Forward(fc1.Forward(x, quant::Activation::kGeluTanh));
  const int64_t chunks = (rows + max_rows - 1) / max_rows;
  const int64_t per_chunk = (rows + chunks - 1) / chunks;
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = fc2.out_features();
  at::Tensor out = at::empty({rows, fc2.out_features()}, x.options());
  for (int64_t r0 = 0; r0 < rows; r0 += per_chunk) {
    const int64_t n = std::min(per_chunk, rows - r0);
    out.narrow(0, r0, n).copy_(
        fc2.Forward(fc1.Forward(x2.narrow(0, r0, n), quant::Activation::kGeluTanh)));
  }
  return out.view(shape);
}

}  // namespace moondream
