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
// models--vikhyatk--moondream2/snapshots/<commit>/: the snapshot refs/2025-01-09 names.
// A cache that holds only other revisions is refused with FAILED_PRECONDITION naming the
// refs and snapshots it found (other revisions change the tokenizer and would load and
// answer nonsense), unless `allow_any_revision`, which takes the first complete snapshot
// (sorted by name). NOT_FOUND lists the paths searched. Returns the directory without a
// trailing slash.
absl::StatusOr<std::string> ResolveModelDir(const std::string& flag_value,
                                            bool allow_any_revision = false);

// What the loaded files are, for the load log: "snapshot <commit> (refs: 2025-01-09)" in
// the HF cache, else "directory", then "files <16 hex digits>", a fingerprint (FNV-1a) of
// config.json and tokenizer.json, so two deployments can tell whether they serve the same
// revision.
std::string DescribeRevision(const std::string& dir);

}  // namespace moondream
