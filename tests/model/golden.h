// Test helpers: the moondream-tiny fixture goldens (golden.json + <img>.safetensors with
// F32/I64 tensors) and loading the language side of a fixture checkpoint.
#pragma once

#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/image/image.h"
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

// One image of one golden set: the unit of the parameterised parity tests.
struct GoldenCase {
  GoldenSet set;
  std::string image;  // key in golden.json "images"
  std::string file;   // the image file
};
std::vector<GoldenCase> AllGoldenCases();
// "public_a_img0_378x378": a valid gtest parameter name.
std::string GoldenCaseName(const GoldenCase& c);
// Readable gtest output instead of the bytes of the struct.
void PrintTo(const GoldenCase& c, std::ostream* os);
std::string FixturesDir();
// The case of `image` in `set` (its file from the set's images.json).
GoldenCase CaseOf(const GoldenSet& set, const std::string& image);

// This build's crops of a case's image: DecodeImage -> OverlapCrops (spec §3.2-3.3).
Crops CropsOf(const GoldenCase& c, const CropConfig& config);
// The same crops with the upstream reference's pixels (the fixture's lossless crops PNG).
// On x86 the two are equal byte for byte (OverlapCrops.*BitExact). On aarch64 libvips
// resamples on its C path (engine/image/vips_util.cc), a few levels from upstream's on a
// resized image (OverlapCrops bounds it), so tests of the model itself take these there.
Crops WithUpstreamPixels(const GoldenCase& c, Crops crops);

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
