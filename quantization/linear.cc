#include "quantization/linear.h"

#include <cstdlib>
#include <cstring>

#include "quantization/int8_gemm.h"

namespace moondream::quant {

// Exactly one representation is live: dense weight, packed INT8 (VNNI CPU) or plain INT8.
struct Linear::Impl {
  int64_t in = 0, out = 0;
  bool int8 = false;
  at::Tensor dense;               // [out, in] compute dtype (Dense)
  internal::PackedWeight packed;  // VNNI path
  Int8Matrix plain;               // fallback path (no VNNI, or CUDA)
  at::Tensor scale;               // fp32 [out] (INT8)
  at::Tensor bias;                // [out] or undefined
};

namespace {

uint64_t Bytes(const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

// The VNNI kernel unless the CPU lacks it or MOONDREAM_QUANT_KERNEL=reference asks for the
// portable path (A/B checks, and the tests of that path on VNNI machines).
bool UseVnniKernel(const at::Tensor& q) {
  const char* kernel = std::getenv("MOONDREAM_QUANT_KERNEL");
  const bool reference = kernel != nullptr && std::strcmp(kernel, "reference") == 0;
  return q.device().is_cpu() && internal::CpuHasVnni() && !reference;
}

// Weight-only dequantization, then matmul in x's dtype (fp16 on CUDA when x is fp32/fp16).
at::Tensor FallbackForward(const Linear::Impl& l, const at::Tensor& x) {
  const at::ScalarType compute =
      x.is_cuda() && x.scalar_type() != at::kBFloat16 ? at::kHalf : x.scalar_type();
  const at::Tensor w = Dequantize(l.plain, compute);
  const at::Tensor b = l.bias.defined() ? l.bias.to(compute) : at::Tensor();
  return at::linear(x.to(compute), w, b).to(x.scalar_type());
}

}  // namespace

Linear Linear::Dense(at::Tensor weight, at::Tensor bias) {
  TORCH_CHECK(weight.dim() == 2, "Linear::Dense: weight must be [out, in]");
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
              "Linear::Dense: bias must be [out]");
  auto impl = std::make_shared<Impl>();
  impl->in = weight.size(1);
  impl->out = weight.size(0);
  impl->dense = weight.contiguous();
  impl->bias = bias;
  Linear l;
  l.impl_ = std::move(impl);
  return l;
}

Linear Linear::Int8(Int8Matrix weight, at::Tensor bias) {
  TORCH_CHECK(weight.q.dim() == 2 && weight.q.scalar_type() == at::kChar,
              "Linear::Int8: q must be int8 [out, in]");
  TORCH_CHECK(weight.scale.dim() == 1 && weight.scale.size(0) == weight.q.size(0),
              "Linear::Int8: scale must be [out]");
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.q.size(0)),
              "Linear::Int8: bias must be [out]");
  auto impl = std::make_shared<Impl>();
  impl->in = weight.q.size(1);
  impl->out = weight.q.size(0);
  impl->int8 = true;
  impl->scale = weight.scale.to(at::kFloat).contiguous();
  impl->bias = bias.defined() ? bias.to(at::kFloat).contiguous() : bias;
  if (UseVnniKernel(weight.q)) {
    impl->packed = internal::PackWeight(weight.q);  // the plain copy is dropped with `weight`
  } else {
    impl->plain = Int8Matrix{weight.q.contiguous(), impl->scale};
  }
  Linear l;
  l.impl_ = std::move(impl);
  return l;
}

at::Tensor Linear::Forward(const at::Tensor& x) const { return Forward(x, Activation::kNone); }

at::Tensor Linear::Forward(const at::Tensor& x, Activation act) const {
  TORCH_CHECK(impl_ != nullptr, "Linear::Forward on an empty Linear");
  const Impl& l = *impl_;
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == l.in, "Linear::Forward: x last dim ", x.size(-1),
              " != in_features ", l.in);
  if (!l.int8 || !l.packed.data.defined()) {
    at::Tensor y;
    if (!l.int8) {
      const at::ScalarType wt = l.dense.scalar_type();
      const at::Tensor b = l.bias.defined() ? l.bias.to(wt) : at::Tensor();
      y = at::linear(x.to(wt), l.dense, b).to(x.scalar_type());
    } else {
      y = FallbackForward(l, x);
    }
    if (act == Activation::kGeluTanh) y = at::gelu(y.to(at::kFloat), "tanh").to(y.scalar_type());
    return y;
  }
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = l.out;
  const at::Tensor x2 = x.reshape({-1, l.in}).to(at::kFloat).contiguous();
  return internal::Int8Gemm(l.packed, l.scale, l.bias, x2, act).to(x.scalar_type()).view(shape);
}

int64_t Linear::in_features() const { return impl_ ? impl_->in : 0; }
int64_t Linear::out_features() const { return impl_ ? impl_->out : 0; }
bool Linear::is_int8() const { return impl_ && impl_->int8; }
uint64_t Linear::bytes() const {
  if (!impl_) return 0;
  const Impl& l = *impl_;
  return Bytes(l.dense) + Bytes(l.packed.data) + Bytes(l.packed.row_sum) + Bytes(l.plain.q) +
         Bytes(l.scale) + Bytes(l.bias);
}

Embedding Embedding::Dense(at::Tensor table) {
  TORCH_CHECK(table.dim() == 2, "Embedding::Dense: table must be [rows, dim]");
  Embedding e;
  e.table_ = table.contiguous();
  return e;
}

Embedding Embedding::Int8(Int8Matrix table) {
  TORCH_CHECK(table.q.dim() == 2 && table.q.scalar_type() == at::kChar &&
                  table.scale.numel() == table.q.size(0),
              "Embedding::Int8: need int8 q [rows, dim] and scale [rows]");
  Embedding e;
  e.table_ = table.q.contiguous();
  e.scale_ = table.scale.to(at::kFloat).contiguous();
  return e;
}

at::Tensor Embedding::Lookup(const at::Tensor& ids, at::ScalarType dtype) const {
  TORCH_CHECK(table_.defined(), "Embedding::Lookup on an empty Embedding");
  TORCH_CHECK(ids.dim() == 1, "Embedding::Lookup: ids must be [T]");
  const at::Tensor idx = ids.to(table_.device(), at::kLong);
  const at::Tensor rows = table_.index_select(0, idx);
  if (!scale_.defined()) return rows.to(dtype);
  return (rows.to(at::kFloat) * scale_.index_select(0, idx).unsqueeze(1)).to(dtype);
}

int64_t Embedding::rows() const { return table_.defined() ? table_.size(0) : 0; }
int64_t Embedding::dim() const { return table_.defined() ? table_.size(1) : 0; }
bool Embedding::is_int8() const { return scale_.defined(); }
uint64_t Embedding::bytes() const { return Bytes(table_) + Bytes(scale_); }

}  // namespace moondream::quant
