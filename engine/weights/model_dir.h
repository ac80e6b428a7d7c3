// Locates a Moondream2 model directory (never downloads).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace moondream {

// Files a model directory must hold.
inline constexpr const char* kModelFiles[] = {"model.safetensors", "config.json",
                                              "tokenizer.json"};
// HF revision preferred in the hub cache.
inline constexpr const char* kPreferredRevision = "2025-01-09";

// `flag_value` non-empty: that directory, which must hold all kModelFiles (error names the
// missing file). Empty: the HF hub cache ($HF_HOME/hub, else ~/.cache/huggingface/hub),
// models--vikhyatk--moondream2/snapshots/<rev>/, preferring the snapshot that
// refs/2025-01-09 names, else any complete snapshot (sorted by name). NOT_FOUND lists the
// paths searched. Returns the directory without a trailing slash.
absl::StatusOr<std::string> ResolveModelDir(const std::string& flag_value);

}  // namespace moondream
