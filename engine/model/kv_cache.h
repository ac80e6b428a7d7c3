// Per-request key/value cache of the text decoder (spec §5.5).
//
// Layout [L, 2 (K, V), 1, H, capacity, head_dim]: keys are stored after rotary, values raw.
// capacity is the number of positions the owner can reach (the image prefix alone, or
// prefix + prompt + generation budget), never more than max_context.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "engine/weights/config.h"

namespace moondream {

class KvCache {
 public:
  KvCache() = default;
  // Zero-initialised cache for `capacity` positions.
  static KvCache Allocate(const TextConfig& config, int64_t capacity, at::ScalarType dtype,
                          at::Device device);
  // A new cache of `capacity` (>= source.length()) holding a copy of source's filled
  // positions: the copy-on-use of an encoded image's immutable prefix.
  static KvCache CopyOf(const KvCache& source, int64_t capacity);

  // k, v: [H, T, head_dim] for positions pos..pos+T-1 of `layer` (converted to the cache
  // dtype). Advances length() to at least pos+T.
  void Write(int layer, int64_t pos, const at::Tensor& k, const at::Tensor& v);
  // Views of positions 0..end-1: [H, end, head_dim].
  at::Tensor Keys(int layer, int64_t end) const;
  at::Tensor Values(int layer, int64_t end) const;

  int64_t capacity() const { return data_.defined() ? data_.size(4) : 0; }
  int64_t length() const { return length_; }  // positions written so far (0..length-1)
  at::ScalarType dtype() const { return data_.scalar_type(); }
  uint64_t bytes() const;
  const at::Tensor& data() const { return data_; }  // [L, 2, 1, H, capacity, hd]

 private:
  at::Tensor data_;
  int64_t length_ = 0;
};

}  // namespace moondream
