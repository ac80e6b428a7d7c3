#include "engine/model/attention.h"

#include <algorithm>

#include "engine/model/torch_compat.h"

namespace moondream {
namespace {

constexpr int64_t kScoreBudgetBytes = 8ll << 20;  // fp32 scores per attention call

bool KernelApplies(const at::Tensor& q, const std::vector<KvSegment>& kv) {
  if (q.size(1) != 1 || !q.device().is_cpu()) return false;
  const at::ScalarType dtype = kv.front().keys.scalar_type();
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kChar) return false;
  for (const KvSegment& seg : kv) {
    if (seg.keys.scalar_type() != dtype || seg.values.scalar_type() != dtype ||
        seg.keys.strides() != seg.values.strides() || seg.keys.stride(2) != 1) {
      return false;
    }
    if (dtype == at::kChar &&
        (seg.key_scales.stride(1) != 1 || seg.key_scales.strides() != seg.value_scales.strides())) {
      return false;
    }
  }
  return true;
}

kernels::KvType KvTypeOf(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return kernels::KvType::kFloat32;
    case at::kChar: return kernels::KvType::kInt8;
    default: return kernels::KvType::kBFloat16;
  }
}

at::Tensor KernelDecode(const kernels::KernelSet& ks, const at::Tensor& q,
                        const std::vector<KvSegment>& kv) {
  std::vector<kernels::KvSegment> segments;
  for (const KvSegment& seg : kv) {
    kernels::KvSegment s;
    s.type = KvTypeOf(seg.keys.scalar_type());
    s.keys = seg.keys.data_ptr();
    s.values = seg.values.data_ptr();
    s.n = seg.keys.size(1);
    s.head_stride = seg.keys.stride(0);
    s.row_stride = seg.keys.stride(1);
    if (seg.key_scales.defined()) {
      s.key_scales = seg.key_scales.data_ptr<float>();
      s.value_scales = seg.value_scales.data_ptr<float>();
      s.scale_head_stride = seg.key_scales.stride(0);
    }
    segments.push_back(s);
  }
  const at::Tensor qf = q.to(at::kFloat).contiguous();  // [H, 1, hd]
  at::Tensor out = at::empty(qf.sizes(), at::kFloat);
  kernels::DecodeAttentionArgs args;
  args.q = qf.data_ptr<float>();
  args.heads = q.size(0);
  args.hd = q.size(2);
  args.segments = segments.data();
  args.n_segments = static_cast<int64_t>(segments.size());
  args.out = out.data_ptr<float>();
  kernels::DecodeAttention(ks, args);
  return out.to(q.scalar_type());
}

// An int8 segment's rows in fp32 (rows * scales); other dtypes as they are.
at::Tensor Dequantized(const at::Tensor& rows, const at::Tensor& scales) {
  return scales.defined() ? rows.to(at::kFloat).mul_(scales.unsqueeze(-1)) : rows;
}

at::Tensor Joined(const std::vector<at::Tensor>& parts) {
  return parts.size() == 1 ? parts.front() : at::cat(parts, 1);
}

// Sdpa over the joined segments, a group of heads at a time.
at::Tensor Chunked(const at::Tensor& q, const std::vector<KvSegment>& kv, const at::Tensor& mask) {
  std::vector<at::Tensor> keys, values;
  for (const KvSegment& seg : kv) {
    keys.push_back(Dequantized(seg.keys, seg.key_scales));
    values.push_back(Dequantized(seg.values, seg.value_scales));
  }
  const at::Tensor k = Joined(keys), v = Joined(values);  // [H, end, hd]
  const int64_t heads = q.size(0), t = q.size(1), end = k.size(1);
  const int64_t group = std::max<int64_t>(1, kScoreBudgetBytes / (t * end * 4));
  if (group >= heads) return Sdpa(q, k, v, mask);
  at::Tensor out = at::empty_like(q);
  for (int64_t h = 0; h < heads; h += group) {
    const int64_t n = std::min(group, heads - h);
    out.narrow(0, h, n).copy_(Sdpa(q.narrow(0, h, n), k.narrow(0, h, n), v.narrow(0, h, n), mask));
  }
  return out;
}

}  // namespace

at::Tensor KernelSelfAttention(const kernels::KernelSet& ks, const at::Tensor& qkv,
                               int64_t heads) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.scalar_type() == at::kFloat && qkv.device().is_cpu() &&
                  heads > 0 && qkv.size(1) % (3 * heads) == 0 && qkv.stride(1) == 1 &&
                  qkv.size(0) > 0,
              "KernelSelfAttention: qkv must be fp32 [T > 0, 3·heads·hd] on CPU with "
              "contiguous rows");
  const int64_t t = qkv.size(0), hd = qkv.size(1) / (3 * heads);
  at::Tensor out = at::empty({t, heads * hd}, qkv.options());
  kernels::SelfAttentionArgs args;
  args.qkv = qkv.data_ptr<float>();
  args.t = t;
  args.ld = qkv.stride(0);
  args.heads = heads;
  args.hd = hd;
  args.out = out.data_ptr<float>();
  kernels::SelfAttention(ks, args);
  return out;
}

at::Tensor CachedAttention(const at::Tensor& q, const std::vector<KvSegment>& kv,
                           const at::Tensor& mask, const kernels::KernelSet* decode_kernels) {
  TORCH_CHECK(q.dim() == 3 && !kv.empty(), "attention: q must be [H, T, hd] with >= 1 segment");
  if (decode_kernels != nullptr && !mask.defined() && KernelApplies(q, kv)) {
    return KernelDecode(*decode_kernels, q, kv);
  }
  return Chunked(q, kv, mask);
}

}  // namespace moondream
