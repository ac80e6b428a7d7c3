// libFuzzer target: a model's config.json (engine/weights ParseConfig), then what the loader
// derives from an accepted config before it touches a tensor: the per-head and patch sizes
// and the list of expected tensors with their shapes (ExpectedTensors). A model directory is
// untrusted input: a corrupt config must give a clear error, never a crash or a runaway
// allocation.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/weights/config.h"

namespace {

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "model_config_fuzz: invariant violated: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string json(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<moondream::MoondreamConfig> config = moondream::ParseConfig(json, "fuzz");
  if (!config.ok()) {
    Check(config.status().code() == absl::StatusCode::kInvalidArgument,
          "a refusal is not INVALID_ARGUMENT");
    return 0;
  }
  const moondream::MoondreamConfig& c = *config;
  Check(c.tokenizer.templates.size() == 8, "not all eight prompt templates are present");
  Check(c.text.head_dim() > 0 && c.text.rot_dim() > 0 && c.text.ff_dim() > 0,
        "a text size is not positive");
  Check(c.vision.head_dim() > 0 && c.vision.patch_dim() > 0 && c.vision.n_patches() >= 0,
        "a vision size is not positive");
  for (const moondream::ExpectedTensor& t : moondream::ExpectedTensors(c)) {
    for (int64_t d : t.shape) Check(d >= 0, "an expected tensor has a negative dimension");
  }
  return 0;
}
