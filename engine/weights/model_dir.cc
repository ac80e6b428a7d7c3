#include "engine/weights/model_dir.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace moondream {
namespace {

namespace fs = std::filesystem;

// Name of the first model file missing from `dir`, empty when complete.
std::string MissingFile(const fs::path& dir) {
  for (const char* name : kModelFiles) {
    std::error_code ec;
    if (!fs::is_regular_file(dir / name, ec)) return name;  // follows the HF cache's symlinks
  }
  return "";
}

std::string ReadRef(const fs::path& ref) {
  std::ifstream in(ref);
  std::string rev;
  std::getline(in, rev);
  return std::string(absl::StripAsciiWhitespace(rev));
}

std::vector<fs::path> HubRoots() {
  std::vector<fs::path> roots;
  if (const char* hf_home = std::getenv("HF_HOME"); hf_home != nullptr && *hf_home != '\0') {
    roots.push_back(fs::path(hf_home) / "hub");
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    roots.push_back(fs::path(home) / ".cache" / "huggingface" / "hub");
  }
  return roots;
}

// The snapshot refs/<kPreferredRevision> names if complete, else the first complete one.
std::string FindSnapshot(const fs::path& repo, std::vector<std::string>* searched) {
  const fs::path snapshots = repo / "snapshots";
  const std::string preferred = ReadRef(repo / "refs" / kPreferredRevision);
  if (!preferred.empty()) {
    searched->push_back((snapshots / preferred).string());
    if (MissingFile(snapshots / preferred).empty()) return (snapshots / preferred).string();
  }
  std::vector<fs::path> candidates;
  std::error_code ec;
  for (fs::directory_iterator it(snapshots, ec), end; !ec && it != end; it.increment(ec)) {
    candidates.push_back(it->path());
  }
  std::sort(candidates.begin(), candidates.end());
  searched->push_back((snapshots / "*").string());
  for (const fs::path& dir : candidates) {
    if (MissingFile(dir).empty()) return dir.string();
  }
  return "";
}

}  // namespace

absl::StatusOr<std::string> ResolveModelDir(const std::string& flag_value) {
  if (!flag_value.empty()) {
    std::string dir(absl::StripSuffix(flag_value, "/"));
    if (dir.empty()) dir = "/";
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      return absl::NotFoundError(absl::StrCat("model directory ", dir, " does not exist"));
    }
    const std::string missing = MissingFile(dir);
    if (!missing.empty()) {
      return absl::NotFoundError(absl::StrCat("model directory ", dir, " has no ", missing));
    }
    return dir;
  }
  std::vector<std::string> searched;
  for (const fs::path& root : HubRoots()) {
    const std::string found = FindSnapshot(root / "models--vikhyatk--moondream2", &searched);
    if (!found.empty()) return found;
  }
  return absl::NotFoundError(absl::StrCat(
      "no moondream2 snapshot with ", absl::StrJoin(kModelFiles, ", "), " found (searched ",
      searched.empty() ? std::string("nothing: neither HF_HOME nor HOME is set") : absl::StrJoin(searched, ", "),
      "); pass the model directory explicitly (nothing is downloaded)"));
}

}  // namespace moondream
