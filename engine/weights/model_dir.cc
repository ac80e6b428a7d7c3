#include "engine/weights/model_dir.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <iterator>
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

// Every ref of the repo as "name -> commit".
std::vector<std::string> Refs(const fs::path& repo) {
  std::vector<std::string> refs;
  std::error_code ec;
  for (fs::directory_iterator it(repo / "refs", ec), end; !ec && it != end; it.increment(ec)) {
    refs.push_back(it->path().filename().string() + " -> " + ReadRef(it->path()));
  }
  std::sort(refs.begin(), refs.end());
  return refs;
}

std::vector<fs::path> CompleteSnapshots(const fs::path& repo) {
  std::vector<fs::path> complete;
  std::error_code ec;
  for (fs::directory_iterator it(repo / "snapshots", ec), end; !ec && it != end;
       it.increment(ec)) {
    if (MissingFile(it->path()).empty()) complete.push_back(it->path());
  }
  std::sort(complete.begin(), complete.end());
  return complete;
}

// The snapshot refs/<kPreferredRevision> names if complete; else, with allow_any, the
// first complete one; else FAILED_PRECONDITION when the repo holds other snapshots, and ""
// when it holds none.
absl::StatusOr<std::string> FindSnapshot(const fs::path& repo, bool allow_any,
                                         std::vector<std::string>* searched) {
  const fs::path snapshots = repo / "snapshots";
  const std::string preferred = ReadRef(repo / "refs" / kPreferredRevision);
  if (!preferred.empty()) {
    searched->push_back((snapshots / preferred).string());
    if (MissingFile(snapshots / preferred).empty()) return (snapshots / preferred).string();
  }
  searched->push_back((snapshots / "*").string());
  const std::vector<fs::path> complete = CompleteSnapshots(repo);
  if (complete.empty()) return std::string();
  if (allow_any) return complete.front().string();
  std::vector<std::string> names;
  for (const fs::path& dir : complete) names.push_back(dir.filename().string());
  const std::vector<std::string> refs = Refs(repo);
  return absl::FailedPreconditionError(absl::StrCat(
      "the Hugging Face cache ", repo.string(), " has no complete snapshot of revision ",
      kPreferredRevision, " (refs: ", refs.empty() ? "none" : absl::StrJoin(refs, ", "),
      "; complete snapshots: ", absl::StrJoin(names, ", "), "). This server implements ",
      kPreferredRevision, " only: later revisions (2025-06-21, for one) keep the tensor "
      "shapes but change the tokenizer, and would load and answer nonsense. Fetch revision ",
      kPreferredRevision, ", pass --model-dir, or --allow-any-revision to load ", names.front(),
      " anyway"));
}

uint64_t Fnv1a(const std::string& bytes, uint64_t hash) {
  for (unsigned char c : bytes) hash = (hash ^ c) * 1099511628211ull;
  return hash;
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

absl::StatusOr<std::string> ResolveModelDir(const std::string& flag_value,
                                            bool allow_any_revision) {
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
    absl::StatusOr<std::string> found =
        FindSnapshot(root / "models--vikhyatk--moondream2", allow_any_revision, &searched);
    if (!found.ok() || !found->empty()) return found;
  }
  return absl::NotFoundError(absl::StrCat(
      "no moondream2 snapshot with ", absl::StrJoin(kModelFiles, ", "), " found (searched ",
      searched.empty() ? std::string("nothing: neither HF_HOME nor HOME is set") : absl::StrJoin(searched, ", "),
      "); pass the model directory explicitly (nothing is downloaded)"));
}

std::string DescribeRevision(const std::string& dir) {
  const fs::path path(dir);
  std::string what = "directory";
  if (path.parent_path().filename() == "snapshots") {
    const fs::path repo = path.parent_path().parent_path();
    std::vector<std::string> names;
    std::error_code ec;
    for (fs::directory_iterator it(repo / "refs", ec), end; !ec && it != end; it.increment(ec)) {
      if (ReadRef(it->path()) == path.filename().string()) {
        names.push_back(it->path().filename().string());
      }
    }
    std::sort(names.begin(), names.end());
    what = absl::StrCat("snapshot ", path.filename().string(), " (refs: ",
                        names.empty() ? "none" : absl::StrJoin(names, ", "), ")");
  }
  uint64_t hash = 14695981039346656037ull;
  for (const char* file : {"config.json", "tokenizer.json"}) hash = Fnv1a(ReadAll(path / file), hash);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(hash));
  return what + ", files " + hex;
}

}  // namespace moondream
