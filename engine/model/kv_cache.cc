#include "engine/model/kv_cache.h"

#include <algorithm>

#include <c10/util/Exception.h>

#include "quantization/linear.h"

namespace moondream {

KvCache KvCache::Allocate(const TextConfig& config, int64_t capacity, at::ScalarType dtype,
                          at::Device device) {
  TORCH_CHECK(capacity > 0 && capacity <= config.max_context, "KV cache capacity ", capacity,
              " outside 1..", config.max_context);
  KvCache cache;
  const at::TensorOptions options = at::TensorOptions().dtype(dtype).device(device);
  cache.data_ = at::zeros({config.n_layers, 2, 1, config.n_heads, capacity, config.head_dim()},
                          options);
  if (dtype == at::kChar) {
    cache.scales_ = at::zeros({config.n_layers, 2, 1, config.n_heads, capacity},
                              options.dtype(at::kFloat));
  }
  return cache;
}

KvCache KvCache::Extend(const KvCache& prefix, int64_t capacity) {
  TORCH_CHECK(prefix.data_.defined(), "extending an empty KV cache");
  TORCH_CHECK(!prefix.prefix_.defined(), "extending a cache that already extends another");
  TORCH_CHECK(capacity >= prefix.length_, "KV cache capacity ", capacity, " < prefix ",
              prefix.length_);
  // Own storage shaped like `full` with the positions after the prefix; they are never read
  // before they are written, so no zeroing is needed.
  auto own = [&](const at::Tensor& full) {
    auto sizes = full.sizes().vec();
    sizes[4] = capacity - prefix.length_;
    return at::empty(sizes, full.options());
  };
  KvCache cache;
  cache.prefix_ = prefix.data_.narrow(4, 0, prefix.length_);  // shares the storage
  cache.data_ = own(prefix.data_);
  if (prefix.scales_.defined()) {
    cache.prefix_scales_ = prefix.scales_.narrow(4, 0, prefix.length_);
    cache.scales_ = own(prefix.scales_);
  }
  cache.prefix_length_ = prefix.length_;
  cache.length_ = prefix.length_;
  return cache;
}

namespace {

// x: [H, T, hd] -> int8 rows into q ([H, T, hd]) and their scales ([H, T]), with the
// weights' per-row scheme (quant::QuantizePerChannel). NaN/Inf activations throw.
void QuantizeRows(const at::Tensor& x, at::Tensor q, at::Tensor scale) {
  absl::StatusOr<quant::Int8Matrix> m =
      quant::QuantizePerChannel(x.reshape({-1, x.size(2)}), "KV cache", nullptr);
  TORCH_CHECK(m.ok(), m.status().ToString());
  q.copy_(m->q.view(q.sizes()));
  scale.copy_(m->scale.view(scale.sizes()));
}

}  // namespace

void KvCache::Write(int layer, int64_t pos, const at::Tensor& k, const at::Tensor& v) {
  const int64_t t = k.size(1);
  TORCH_CHECK(pos >= prefix_length_ && pos + t <= capacity(), "KV cache write of positions ",
              pos, "..", pos + t - 1, " outside ", prefix_length_, "..", capacity() - 1);
  at::Tensor layer_kv = data_[layer];  // [2, 1, H, n, hd]
  const int64_t at_pos = pos - prefix_length_;
  if (scales_.defined()) {
    const at::Tensor layer_scales = scales_[layer];  // [2, 1, H, n]
    QuantizeRows(k, layer_kv[0][0].narrow(1, at_pos, t), layer_scales[0][0].narrow(1, at_pos, t));
    QuantizeRows(v, layer_kv[1][0].narrow(1, at_pos, t), layer_scales[1][0].narrow(1, at_pos, t));
  } else {
    layer_kv[0][0].narrow(1, at_pos, t).copy_(k);
    layer_kv[1][0].narrow(1, at_pos, t).copy_(v);
  }
  length_ = std::max(length_, pos + t);
}

std::vector<KvSegment> KvCache::Segments(int layer, int64_t end) const {
  TORCH_CHECK(end <= length_, "KV cache read of ", end, " positions, ", length_, " written");
  std::vector<KvSegment> segments;
  const int64_t shared = std::min(end, prefix_length_);
  auto segment = [&](const at::Tensor& data, const at::Tensor& scales, int64_t n) {
    const at::Tensor kv = data[layer];  // [2, 1, H, positions, hd]
    KvSegment seg{kv[0][0].narrow(1, 0, n), kv[1][0].narrow(1, 0, n), {}, {}};
    if (scales.defined()) {
      const at::Tensor s = scales[layer];  // [2, 1, H, positions]
      seg.key_scales = s[0][0].narrow(1, 0, n);
      seg.value_scales = s[1][0].narrow(1, 0, n);
    }
    segments.push_back(std::move(seg));
  };
  if (shared > 0) segment(prefix_, prefix_scales_, shared);
  if (end > prefix_length_) segment(data_, scales_, end - prefix_length_);
  return segments;
}

uint64_t KvCache::bytes() const {
  auto size = [](const at::Tensor& t) {
    return t.defined() ? static_cast<uint64_t>(t.numel()) * t.element_size() : 0;
  };
  return size(data_) + size(scales_);
}

}  // namespace moondream
