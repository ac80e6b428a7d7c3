#include "engine/model/layers.h"

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
                              int64_t out) {
  Mlp mlp;
  MD_ASSIGN_OR_RETURN(mlp.fc1, scope.Linear("fc1", inner, dim));
  MD_ASSIGN_OR_RETURN(mlp.fc2, scope.Linear("fc2", out, inner));
  return mlp;
}

at::Tensor Mlp::Forward(const at::Tensor& x) const {
  return fc2.Forward(GeluTanh(fc1.Forward(x)));
}

}  // namespace moondream
