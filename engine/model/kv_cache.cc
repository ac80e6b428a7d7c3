#include "engine/model/kv_cache.h"

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

KvCache KvCache::CopyOf(const KvCache& source, int64_t capacity) {
  TORCH_CHECK(source.data_.defined(), "copy of an empty KV cache");
  TORCH_CHECK(capacity >= source.length_, "KV cache capacity ", capacity, " < prefix ",
              source.length_);
  auto sizes = source.data_.sizes().vec();
  sizes[4] = capacity;
  KvCache cache;
  // Positions >= length are never read before they are written, so no zeroing is needed.
  cache.data_ = at::empty(sizes, source.data_.options());
  cache.data_.narrow(4, 0, source.length_).copy_(source.data_.narrow(4, 0, source.length_));
  cache.length_ = source.length_;
  return cache;
}

void KvCache::Write(int layer, int64_t pos, const at::Tensor& k, const at::Tensor& v) {
  const int64_t t = k.size(1);
  TORCH_CHECK(pos >= 0 && pos + t <= capacity(), "KV cache write of positions ", pos, "..",
              pos + t - 1, " beyond capacity ", capacity());
  at::Tensor layer_kv = data_[layer];  // [2, 1, H, capacity, hd]
  layer_kv[0][0].narrow(1, pos, t).copy_(k);
  layer_kv[1][0].narrow(1, pos, t).copy_(v);
  length_ = std::max(length_, pos + t);
}

at::Tensor KvCache::Keys(int layer, int64_t end) const {
  return data_[layer][0][0].narrow(1, 0, end);
}

at::Tensor KvCache::Values(int layer, int64_t end) const {
  return data_[layer][1][0].narrow(1, 0, end);
}

uint64_t KvCache::bytes() const {
  return data_.defined() ? static_cast<uint64_t>(data_.numel()) * data_.element_size() : 0;
}

}  // namespace moondream
