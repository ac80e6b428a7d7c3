// The language side of Moondream2: everything that runs after the image embeddings
// (text decoder, region head, tokenizer, config). Immutable after Load; shared by requests.
#pragma once

#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/region.h"
#include "engine/model/text.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/weights/config.h"
#include "engine/weights/weight_store.h"

namespace moondream {

// KV cache dtype: the compute dtype, except INT8 (fp32 compute) keeps its cache as int8
// rows with a scale per (position, head) (kv_cache.h), a quarter of fp32's bytes; attention
// math is fp32 either way.
at::ScalarType KvCacheDtype(Precision precision);

struct Language {
  MoondreamConfig config;
  Tokenizer tokenizer;
  TextDecoder text;
  RegionHead region;
  at::ScalarType kv_dtype = at::kFloat;

  // Loads "model.text" and "model.region" from `store` and the tokenizer file; the
  // components run as `plan` says.
  static absl::StatusOr<std::unique_ptr<Language>> Load(const WeightStore& store,
                                                        const MoondreamConfig& config,
                                                        const std::string& tokenizer_json,
                                                        const ExecutionPlan& plan);
};

}  // namespace moondream
