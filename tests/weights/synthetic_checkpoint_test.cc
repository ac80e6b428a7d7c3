// Runs tools/make-synthetic-checkpoint (Debian python + numpy) at tiny sizes.
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "engine/weights/config.h"
#include "engine/weights/safetensors.h"
#include "tests/weights/test_util.h"

namespace moondream {
namespace {

using testing::FixtureCkpt;
using testing::TempDir;

int RunTool(const std::string& args) {
  const std::string cmd = std::string(MOONDREAM_SOURCE_DIR) +
                          "/tools/make-synthetic-checkpoint/make-synthetic-checkpoint --quiet " + args;
  return std::system(cmd.c_str());
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(SyntheticCheckpoint, TinyReproducesFixtureA) {
  TempDir dir;
  ASSERT_EQ(RunTool("--size tiny --seed 20250109 --eos-bias 9.5 --out " + dir.Path()), 0);
  auto config = LoadConfig(dir.Path("config.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  auto file = SafetensorsFile::Open(dir.Path("model.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(CheckShapes(*config, **file).ok()) << CheckShapes(*config, **file);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  // The fixture was generated independently (upstream-side generator): same seed => same bits.
  auto fixture = SafetensorsFile::Open(FixtureCkpt("public-a") + "/model.safetensors");
  ASSERT_TRUE(fixture.ok());
  ASSERT_EQ((*file)->tensors().size(), (*fixture)->tensors().size());
  for (const TensorView& t : (*fixture)->tensors()) {
    const TensorView* mine = (*file)->Find(t.name);
    ASSERT_NE(mine, nullptr) << t.name;
    ASSERT_EQ(mine->nbytes, t.nbytes) << t.name;
    EXPECT_EQ(std::memcmp(mine->data, t.data, t.nbytes), 0) << t.name;
  }
  EXPECT_EQ(Slurp(dir.Path("tokenizer.json")), Slurp(FixtureCkpt("public-a") + "/tokenizer.json"));
}

TEST(SyntheticCheckpoint, ExplicitDimsGiveConsistentConfigAndFile) {
  TempDir dir;
  ASSERT_EQ(RunTool("--size tiny --seed 3 --set text.n_layers=1 --set vision.enc_ff_dim=48 --out " + dir.Path()), 0);
  auto config = LoadConfig(dir.Path("config.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->text.n_layers, 1);
  EXPECT_EQ(config->vision.enc_ff_dim, 48);
  auto file = SafetensorsFile::Open(dir.Path("model.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(CheckShapes(*config, **file).ok()) << CheckShapes(*config, **file);
  EXPECT_EQ((*file)->tensors().size(), ExpectedTensors(*config).size());
}

// The offset stresses (issue 12) rewrite biases only: the LayerNorm's and its fed
// linears' (lnb), the value and out-projection biases (vb), the key biases (kb); every
// other tensor keeps public-a's bits.
TEST(SyntheticCheckpoint, OffsetSitesRewriteOnlyTheirBiases) {
  auto fixture = SafetensorsFile::Open(FixtureCkpt("public-a") + "/model.safetensors");
  ASSERT_TRUE(fixture.ok());
  const std::pair<const char*, std::vector<std::string>> cases[] = {
      {"lnb:100", {"ln.bias", "ln1.bias", "ln2.bias", "post_ln.bias", "attn.qkv.bias", "mlp.fc1.bias",
                   "proj_mlp.fc1.bias", "lm_head.bias"}},
      {"vb:100", {"attn.qkv.bias", "attn.proj.bias"}},
      {"kb:100", {"attn.qkv.bias"}},
  };
  for (const auto& [spec, allowed] : cases) {
    SCOPED_TRACE(spec);
    TempDir dir;
    ASSERT_EQ(RunTool(std::string("--size tiny --eos-bias 9.5 --outliers ") + spec + " --out " + dir.Path()), 0);
    auto file = SafetensorsFile::Open(dir.Path("model.safetensors"));
    ASSERT_TRUE(file.ok()) << file.status();
    int changed = 0;
    for (const TensorView& t : (*fixture)->tensors()) {
      const TensorView* mine = (*file)->Find(t.name);
      ASSERT_NE(mine, nullptr) << t.name;
      ASSERT_EQ(mine->nbytes, t.nbytes) << t.name;
      if (std::memcmp(mine->data, t.data, t.nbytes) == 0) continue;
      ++changed;
      bool ok = false;
      for (const std::string& suffix : allowed) {
        ok = ok || (t.name.size() > suffix.size() && t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0);
      }
      EXPECT_TRUE(ok) << t.name << " changed";
    }
    EXPECT_GT(changed, 0);
  }
}

TEST(SyntheticCheckpoint, RejectsUnknownOutlierSite) {
  TempDir dir;
  EXPECT_NE(RunTool("--outliers zz:100 --out " + dir.Path() + " 2>/dev/null"), 0);
}

TEST(SyntheticCheckpoint, RejectsUnknownDim) {
  TempDir dir;
  EXPECT_NE(RunTool("--set text.bogus=3 --out " + dir.Path() + " 2>/dev/null"), 0);
}

}  // namespace
}  // namespace moondream
