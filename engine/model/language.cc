#include "engine/model/language.h"

#include <utility>

#include "engine/model/status_macros.h"

namespace moondream {

at::ScalarType KvCacheDtype(Precision precision) {
  return precision == Precision::kINT8 ? at::kChar : ComputeDtype(precision);
}

absl::StatusOr<std::unique_ptr<Language>> Language::Load(const WeightStore& store,
                                                          const MoondreamConfig& config,
                                                          const std::string& tokenizer_json,
                                                          const ExecutionPlan& plan) {
  const Precision precision = store.options().precision;
  const at::ScalarType dtype = ComputeDtype(precision);
  MD_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::FromFile(tokenizer_json));
  MD_ASSIGN_OR_RETURN(TextDecoder text,
                      TextDecoder::Load(store.Root().Sub("text"), config.text, dtype, plan));
  MD_ASSIGN_OR_RETURN(RegionHead region,
                      RegionHead::Load(store.Root().Sub("region"), config.region, dtype, plan));
  return std::unique_ptr<Language>(new Language{config, std::move(tokenizer), std::move(text),
                                                std::move(region), KvCacheDtype(precision)});
}

}  // namespace moondream
