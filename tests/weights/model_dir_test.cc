#include "engine/weights/model_dir.h"

#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>

#include "tests/weights/test_util.h"

namespace moondream {
namespace {

using testing::TempDir;
using testing::WriteFile;

void MakeModelDir(const std::string& dir, bool with_tokenizer = true) {
  WriteFile(dir + "/model.safetensors", "x");
  WriteFile(dir + "/config.json", "{}");
  if (with_tokenizer) WriteFile(dir + "/tokenizer.json", "{}");
}

// Sets an environment variable for the scope of the object, restoring the old value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    value ? ::setenv(name, value, 1) : ::unsetenv(name);
  }
  ~ScopedEnv() { had_ ? ::setenv(name_, old_.c_str(), 1) : ::unsetenv(name_); }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

TEST(ModelDir, FlagDirMustHoldAllFiles) {
  TempDir dir;
  MakeModelDir(dir.Path("m"), /*with_tokenizer=*/false);
  auto r = ResolveModelDir(dir.Path("m"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("tokenizer.json"), std::string::npos) << r.status();
  WriteFile(dir.Path("m/tokenizer.json"), "{}");
  auto ok = ResolveModelDir(dir.Path("m") + "/");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, dir.Path("m"));
  EXPECT_FALSE(ResolveModelDir(dir.Path("absent")).ok());
}

TEST(ModelDir, HubCachePrefersPinnedRevision) {
  TempDir dir;
  const std::string repo = dir.Path("hf/hub/models--vikhyatk--moondream2");
  MakeModelDir(repo + "/snapshots/aaa");
  MakeModelDir(repo + "/snapshots/ccc");
  WriteFile(repo + "/refs/2025-01-09", "ccc\n");
  WriteFile(repo + "/refs/main", "aaa");
  ScopedEnv hf("HF_HOME", dir.Path("hf").c_str());
  auto r = ResolveModelDir("");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, repo + "/snapshots/ccc");
}

// Only other revisions in the cache: refused, naming the refs and snapshots found, unless
// --allow-any-revision, which takes the first complete snapshot.
TEST(ModelDir, HubCacheRefusesOtherRevisionsUnlessAllowed) {
  TempDir dir;
  const std::string repo = dir.Path("hf/hub/models--vikhyatk--moondream2");
  MakeModelDir(repo + "/snapshots/aaa", /*with_tokenizer=*/false);
  MakeModelDir(repo + "/snapshots/bbb");
  MakeModelDir(repo + "/snapshots/zzz", /*with_tokenizer=*/false);
  WriteFile(repo + "/refs/2025-01-09", "zzz");  // pinned snapshot incomplete
  WriteFile(repo + "/refs/2025-06-21", "bbb");
  ScopedEnv hf("HF_HOME", dir.Path("hf").c_str());
  auto refused = ResolveModelDir("");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string msg(refused.status().message());
  EXPECT_NE(msg.find("2025-06-21 -> bbb"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--allow-any-revision"), std::string::npos) << msg;
  auto r = ResolveModelDir("", /*allow_any_revision=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, repo + "/snapshots/bbb");
  EXPECT_EQ(DescribeRevision(*r).rfind("snapshot bbb (refs: 2025-06-21), files ", 0), 0u)
      << DescribeRevision(*r);
}

// The fingerprint changes with the tokenizer (the file a wrong revision changes).
TEST(ModelDir, DescribeRevisionFingerprintsConfigAndTokenizer) {
  TempDir dir;
  MakeModelDir(dir.Path("m"));
  const std::string before = DescribeRevision(dir.Path("m"));
  EXPECT_EQ(before.rfind("directory, files ", 0), 0u) << before;
  WriteFile(dir.Path("m/tokenizer.json"), "{\"model\": {}}");
  EXPECT_NE(DescribeRevision(dir.Path("m")), before);
}

TEST(ModelDir, HomeCacheWhenNoHfHome) {
  TempDir dir;
  const std::string repo = dir.Path("home/.cache/huggingface/hub/models--vikhyatk--moondream2");
  MakeModelDir(repo + "/snapshots/rev1");
  WriteFile(repo + "/refs/2025-01-09", "rev1");
  ScopedEnv hf("HF_HOME", nullptr);
  ScopedEnv home("HOME", dir.Path("home").c_str());
  auto r = ResolveModelDir("");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, repo + "/snapshots/rev1");
}

TEST(ModelDir, NotFoundListsSearchedPaths) {
  TempDir dir;
  ScopedEnv hf("HF_HOME", dir.Path("hf").c_str());
  ScopedEnv home("HOME", dir.Path("home").c_str());
  auto r = ResolveModelDir("");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  const std::string msg(r.status().message());
  EXPECT_NE(msg.find(dir.Path("hf/hub/models--vikhyatk--moondream2/snapshots")), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.Path("home/.cache/huggingface/hub/models--vikhyatk--moondream2/snapshots")),
            std::string::npos) << msg;
}

}  // namespace
}  // namespace moondream
