// Test helpers: the moondream-tiny fixture goldens (golden.json + <img>.safetensors with
// F32/I64 tensors) and loading the language side of a fixture checkpoint.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/model/language.h"
#include "engine/weights/weight_store.h"

namespace moondream::testing {

// One golden set: a checkpoint plus the goldens computed with it.
struct GoldenSet {
  std::string name;        // "public-a", "public-b", "real"
  std::string ckpt_dir;    // .../public-a/ckpt
  std::string golden_dir;  // .../public-a/golden
};
std::vector<GoldenSet> AllGoldenSets();  // public-a, public-b, real (public-a checkpoint)
std::string FixturesDir();

nlohmann::json ReadJson(const std::string& path);

// All tensors of a golden safetensors file (F32 -> kFloat, I64 -> kLong), copied.
std::map<std::string, at::Tensor> ReadGoldenTensors(const std::string& path);

// The weight store stays alive with the model (it owns the report).
struct LoadedLanguage {
  std::unique_ptr<WeightStore> store;
  std::unique_ptr<Language> lm;
};
absl::StatusOr<LoadedLanguage> LoadLanguage(const std::string& ckpt_dir, Precision precision);

// max |a - b| (both converted to fp32).
double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b);

}  // namespace moondream::testing
