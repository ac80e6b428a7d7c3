#include "engine/model/kv_cache.h"

#include <algorithm>

#include <c10/util/Exception.h>

namespace moondream {

KvCache KvCache::Allocate(const TextConfig& config, int64_t capacity, at::ScalarType dtype,
                          at::Device device) {
  TORCH_CHECK(capacity > 0 && capacity <= config.max_context, "KV cache capacity ", capacity,
              " outside 1..", config.max_context);
  KvCache cache;
  cache.data_ = at::zeros({config.n_layers, 2, 1, config.n_heads, capacity, config.head_dim()},
                          at::TensorOptions().dtype(dtype).device(device));
  return cache;
}

KvCache KvCache::Extend(const KvCache& prefix, int64_t capacity) {
  TORCH_CHECK(prefix.data_.defined(), "extending an empty KV cache");
  TORCH_CHECK(!prefix.prefix_.defined(), "extending a cache that already extends another");
  TORCH_CHECK(capacity >= prefix.length_, "KV cache capacity ", capacity, " < prefix ",
              prefix.length_);
  KvCache cache;
  cache.prefix_ = prefix.data_.narrow(4, 0, prefix.length_);  // shares the storage
  cache.prefix_length_ = prefix.length_;
  cache.length_ = prefix.length_;
  auto sizes = prefix.data_.sizes().vec();
  sizes[4] = capacity - prefix.length_;
  // Own positions are never read before they are written, so no zeroing is needed.
  cache.data_ = at::empty(sizes, prefix.data_.options());
  return cache;
}

void KvCache::Write(int layer, int64_t pos, const at::Tensor& k, const at::Tensor& v) {
  const int64_t t = k.size(1);
  TORCH_CHECK(pos >= prefix_length_ && pos + t <= capacity(), "KV cache write of positions ",
              pos, "..", pos + t - 1, " outside ", prefix_length_, "..", capacity() - 1);
  at::Tensor layer_kv = data_[layer];  // [2, 1, H, n, hd]
  layer_kv[0][0].narrow(1, pos - prefix_length_, t).copy_(k);
  layer_kv[1][0].narrow(1, pos - prefix_length_, t).copy_(v);
  length_ = std::max(length_, pos + t);
}

std::vector<KvSegment> KvCache::Segments(int layer, int64_t end) const {
  TORCH_CHECK(end <= length_, "KV cache read of ", end, " positions, ", length_, " written");
  std::vector<KvSegment> segments;
  const int64_t shared = std::min(end, prefix_length_);
  if (shared > 0) {
    const at::Tensor kv = prefix_[layer];  // [2, 1, H, prefix, hd]
    segments.push_back({kv[0][0].narrow(1, 0, shared), kv[1][0].narrow(1, 0, shared)});
  }
  if (end > prefix_length_) {
    const at::Tensor kv = data_[layer];
    const int64_t own = end - prefix_length_;
    segments.push_back({kv[0][0].narrow(1, 0, own), kv[1][0].narrow(1, 0, own)});
  }
  return segments;
}

uint64_t KvCache::bytes() const {
  return data_.defined() ? static_cast<uint64_t>(data_.numel()) * data_.element_size() : 0;
}

}  // namespace moondream
