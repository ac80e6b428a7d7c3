// Key/value cache of the text decoder (spec §5.5).
//
// Layout [L, 2 (K, V), 1, H, positions, head_dim]: keys are stored after rotary, values raw.
// A request's cache continues an encoded image's prefix without copying it: positions
// 0..prefix-1 are read from the image's cache (shared, never written again), positions
// prefix..capacity-1 live in the request's own storage. capacity is the number of positions
// the owner can reach (the image prefix alone, or prefix + prompt + generation budget),
// never more than max_context.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "engine/weights/config.h"

namespace moondream {

// Keys and values of consecutive positions of one layer: [H, n, head_dim] views. An int8
// cache also gives each row's scale ([H, n] fp32: value = q * scale); undefined otherwise.
struct KvSegment {
  at::Tensor keys, values;
  at::Tensor key_scales, value_scales;
};

class KvCache {
 public:
  KvCache() = default;
  // Cache for `capacity` positions. dtype kChar: symmetric int8 per (position, head) row,
  // scale = max|row| / 127 (the INT8 model's cache: half of bf16's bytes).
  static KvCache Allocate(const TextConfig& config, int64_t capacity, at::ScalarType dtype,
                          at::Device device);
  // A cache of `capacity` (>= prefix.length()) positions whose first prefix.length() are
  // prefix's, shared read-only (the encoded image's cache serving a request). `prefix`
  // must not itself extend another cache.
  static KvCache Extend(const KvCache& prefix, int64_t capacity);

  // k, v: [H, T, head_dim] for positions pos..pos+T-1 of `layer` (converted to the cache
  // dtype, or quantized per row for int8); pos must not lie in a shared prefix. Advances length() to at least pos+T.
  void Write(int layer, int64_t pos, const at::Tensor& k, const at::Tensor& v);
  // Positions 0..end-1 of `layer`, in order: the shared prefix (if any) then own positions.
  std::vector<KvSegment> Segments(int layer, int64_t end) const;

  int64_t capacity() const { return prefix_length_ + (data_.defined() ? data_.size(4) : 0); }
  int64_t length() const { return length_; }  // positions written so far (0..length-1)
  int64_t shared_prefix() const { return prefix_length_; }
  at::ScalarType dtype() const { return data_.scalar_type(); }
  // Bytes of this cache's own storage (a shared prefix is counted by its owner).
  uint64_t bytes() const;
  const at::Tensor& data() const { return data_; }  // own storage [L, 2, 1, H, n, hd]

 private:
  at::Tensor prefix_;          // shared [L, 2, 1, H, prefix_length_, hd], or undefined
  int64_t prefix_length_ = 0;
  at::Tensor data_;            // own positions prefix_length_.. capacity-1
  at::Tensor prefix_scales_, scales_;  // int8 only: fp32 [L, 2, 1, H, n]
  int64_t length_ = 0;
};

}  // namespace moondream
