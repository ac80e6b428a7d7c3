#include "quantization/linear.h"

#include <exception>
#include <utility>
#include <vector>

namespace moondream::quant {

// Exactly one representation is live: dense weight, packed INT8 (CPU) or plain INT8 (CUDA).
struct Linear::Impl {
  int64_t in = 0, out = 0;
  bool int8 = false;
  at::Tensor dense;    // [out, in] compute dtype (Dense)
  at::Tensor packed;   // int8, kernels::PackInt8Weights layout (CPU INT8)
  at::Tensor row_sum;  // int32 [out] (CPU INT8)
  const kernels::KernelSet* kernels = nullptr;  // CPU INT8; CPU bf16/fp32 Dense (GEMV)
  Int8Matrix plain;    // CUDA INT8: weight-only dequantization per call
  at::Tensor scale;    // fp32 [out] (INT8)
  at::Tensor bias;     // [out] or undefined
};

namespace {

uint64_t Bytes(const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

// CUDA: weight-only dequantization, then matmul in x's dtype (fp16 when x is fp32/fp16).
at::Tensor DequantizedForward(const Linear::Impl& l, const at::Tensor& x) {
  const at::ScalarType compute = x.scalar_type() != at::kBFloat16 ? at::kHalf : x.scalar_type();
  const at::Tensor w = Dequantize(l.plain, compute);
  const at::Tensor b = l.bias.defined() ? l.bias.to(compute) : at::Tensor();
  return at::linear(x.to(compute), w, b).to(x.scalar_type());
}

// The CPU INT8 GEMM over the packed weights: x [m, in] fp32 contiguous -> [m, out] fp32.
at::Tensor PackedForward(const Linear::Impl& l, const at::Tensor& x, Activation act) {
  at::Tensor y = at::empty({x.size(0), l.out}, at::kFloat);
  kernels::Int8GemmArgs args;
  args.x = x.data_ptr<float>();
  args.m = x.size(0);
  args.ldx = l.in;
  args.w = l.packed.data_ptr<int8_t>();
  args.w_row_sum = l.row_sum.data_ptr<int32_t>();
  args.n = l.out;
  args.k = l.in;
  args.w_scale = l.scale.data_ptr<float>();
  args.bias = l.bias.defined() ? l.bias.data_ptr<float>() : nullptr;
  args.y = y.data_ptr<float>();
  args.ldy = l.out;
  args.epilogue = act == Activation::kGeluTanh ? kernels::Epilogue::kGeluTanh
                                               : kernels::Epilogue::kNone;
  kernels::Int8Gemm(*l.kernels, args);
  return y;
}

// Decode on the kernel layer's dense GEMV: x [in] in the weight dtype -> [out] in the weight
// dtype (fp32 accumulation and bias add, one rounding at the end for bf16).
at::Tensor GemvForward(const Linear::Impl& l, const at::Tensor& x) {
  const at::Tensor x32 = x.to(at::kFloat).contiguous();
  const at::Tensor b32 = l.bias.defined() ? l.bias.to(at::kFloat).contiguous() : at::Tensor();
  at::Tensor y = at::empty({l.out}, at::kFloat);
  kernels::GemvArgs args;
  const bool bf16 = l.dense.scalar_type() == at::kBFloat16;
  args.type = bf16 ? kernels::GemvWeights::kBFloat16 : kernels::GemvWeights::kFloat32;
  args.w = bf16 ? static_cast<const void*>(l.dense.data_ptr<at::BFloat16>())
                : static_cast<const void*>(l.dense.data_ptr<float>());
  args.n = l.out;
  args.k = l.in;
  args.ldw = l.in;
  args.x = x32.data_ptr<float>();
  args.bias = b32.defined() ? b32.data_ptr<float>() : nullptr;
  args.y = y.data_ptr<float>();
  kernels::Gemv(*l.kernels, args);
  return bf16 ? y.to(at::kBFloat16) : y;
}

}  // namespace

bool EnsureBf16Matmul() {
  static const bool onednn_turned_off = [] {
    // Large enough for ATen to pick oneDNN (it keeps small products on its own GEMM); the
    // failure is a dnnl::error, a std::exception but not a c10::Error.
    const at::Tensor a = at::ones({64, 64}, at::kBFloat16);
    try {
      at::linear(a, a);
      return false;
    } catch (const std::exception&) {
      at::globalContext().setUserEnabledMkldnn(false);
      at::linear(a, a);  // still throwing: the caller's at::linear would too; let it say so
      return true;
    }
  }();
  return onednn_turned_off;
}

Linear Linear::Dense(at::Tensor weight, at::Tensor bias, const kernels::KernelSet* kernels) {
  TORCH_CHECK(weight.dim() == 2, "Linear::Dense: weight must be [out, in]");
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
              "Linear::Dense: bias must be [out]");
  auto impl = std::make_shared<Impl>();
  impl->in = weight.size(1);
  impl->out = weight.size(0);
  impl->dense = weight.contiguous();
  impl->bias = bias;
  const at::ScalarType wt = weight.scalar_type();
  if (weight.device().is_cpu() && (wt == at::kFloat || wt == at::kBFloat16)) {
    impl->kernels = kernels != nullptr ? kernels : &kernels::DefaultKernels();
    if (wt == at::kBFloat16) EnsureBf16Matmul();
  }
  Linear l;
  l.impl_ = std::move(impl);
  return l;
}

Linear Linear::Int8(Int8Matrix weight, at::Tensor bias, const kernels::KernelSet* kernels) {
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
  if (weight.q.device().is_cpu()) {
    impl->kernels = kernels != nullptr ? kernels : &kernels::DefaultKernels();
    impl->row_sum = at::empty({impl->out}, at::kInt);
    at::Tensor q = std::move(weight.q);
    if (!q.is_contiguous()) q = q.contiguous();
    // A plain copy this call alone holds is packed where it lies (the shapes without
    // padding: every Moondream layer): no second buffer, its pages faulted once. Otherwise
    // it is packed into a new buffer and dropped with `weight`.
    const bool in_place = kernels::PackableInPlace(impl->out, impl->in) && q.use_count() == 1 &&
                          q.storage().use_count() == 1 && q.storage_offset() == 0;
    const int64_t bytes = kernels::PackedInt8Bytes(impl->out, impl->in);
    impl->packed = in_place ? q.view({-1}) : at::empty({bytes}, at::kChar);
    kernels::PackInt8Weights(q.data_ptr<int8_t>(), impl->out, impl->in,
                             impl->packed.data_ptr<int8_t>(), impl->row_sum.data_ptr<int32_t>());
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
  if (l.packed.defined()) {
    TORCH_CHECK(x.device().is_cpu(), "Linear::Forward: CPU INT8 weights need CPU activations");
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = l.out;
    const at::Tensor x2 = x.reshape({-1, l.in}).to(at::kFloat).contiguous();
    return PackedForward(l, x2, act).to(x.scalar_type()).view(shape);
  }
  at::Tensor y;
  if (l.int8) {
    y = DequantizedForward(l, x);
  } else {
    const at::ScalarType wt = l.dense.scalar_type();
    if (l.kernels != nullptr && x.numel() == l.in && x.device().is_cpu()) {
      std::vector<int64_t> shape = x.sizes().vec();
      shape.back() = l.out;
      y = GemvForward(l, x.reshape({l.in}).to(wt)).to(x.scalar_type()).view(shape);
    } else {
      const at::Tensor b = l.bias.defined() ? l.bias.to(wt) : at::Tensor();
      y = at::linear(x.to(wt), l.dense, b).to(x.scalar_type());
    }
  }
  if (act == Activation::kGeluTanh) y = at::gelu(y.to(at::kFloat), "tanh").to(y.scalar_type());
  return y;
}

int64_t Linear::in_features() const { return impl_ ? impl_->in : 0; }
int64_t Linear::out_features() const { return impl_ ? impl_->out : 0; }
bool Linear::is_int8() const { return impl_ && impl_->int8; }
uint64_t Linear::bytes() const {
  if (!impl_) return 0;
  const Impl& l = *impl_;
  return Bytes(l.dense) + Bytes(l.packed) + Bytes(l.row_sum) + Bytes(l.plain.q) +
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
