#include "engine/weights/config.h"

#include <algorithm>
#include <functional>

#include <gtest/gtest.h>

#include "tests/weights/test_util.h"

namespace moondream {
namespace {

using testing::FixtureCkpt;
using testing::TempDir;
using testing::WriteFile;

const std::map<std::string, std::vector<int32_t>> kTemplates = {
    {"caption_short", {198, 198, 16438, 8305, 25}}, {"caption_normal", {198, 198, 24334, 1159, 25}},
    {"query_prefix", {198, 198, 24361, 25}},        {"query_suffix", {198, 198, 33706, 25}},
    {"detect_prefix", {198, 198, 47504, 25}},       {"detect_suffix", {628}},
    {"point_prefix", {198, 198, 12727, 25}},        {"point_suffix", {628}},
};

TEST(Config, EmptyConfigGives2BDefaults) {
  for (const char* text : {R"({"model_type":"moondream1","config":{}})", "{}"}) {
    auto c = ParseConfig(text, "inline");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->text.dim, 2048);
    EXPECT_EQ(c->text.n_layers, 24);
    EXPECT_EQ(c->text.n_heads, 32);
    EXPECT_EQ(c->text.head_dim(), 64);
    EXPECT_EQ(c->text.rot_dim(), 32);
    EXPECT_EQ(c->text.prefix_attn, 730);
    EXPECT_EQ(c->vision.enc_dim, 1152);
    EXPECT_EQ(c->vision.enc_ff_dim, 4304);
    EXPECT_EQ(c->vision.grid(), 27);
    EXPECT_EQ(c->vision.proj_inner_dim, 8192);
    EXPECT_EQ(c->region.inner_dim, 8192);
    EXPECT_EQ(c->region.size_out_dim, 2048);
    EXPECT_EQ(c->tokenizer.eos_id, 50256);
    EXPECT_EQ(c->tokenizer.templates, kTemplates);
  }
}

TEST(Config, ExpectedTensorsMatchSpecTotals) {
  const auto expected = ExpectedTensors(DefaultConfig());
  ASSERT_EQ(expected.size(), 592u);  // spec §2.3
  uint64_t params = 0;
  for (const auto& e : expected) {
    uint64_t n = 1;
    for (int64_t d : e.shape) n *= d;
    params += n;
  }
  EXPECT_EQ(params, 1927237104u);
}

TEST(Config, FixtureADims) {
  auto c = LoadConfig(FixtureCkpt("public-a") + "/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.dim, 128);
  EXPECT_EQ(c->text.n_layers, 2);
  EXPECT_EQ(c->text.n_heads, 2);
  EXPECT_EQ(c->text.head_dim(), 64);
  EXPECT_EQ(c->vision.enc_dim, 64);
  EXPECT_EQ(c->vision.enc_n_heads, 4);
  EXPECT_EQ(c->vision.enc_ff_dim, 128);
  EXPECT_EQ(c->vision.proj_inner_dim, 256);
  EXPECT_EQ(c->vision.proj_out_dim, 128);
  EXPECT_EQ(c->region.inner_dim, 256);
  EXPECT_EQ(c->region.coord_out_dim, 1024);
  EXPECT_EQ(c->tokenizer.templates, kTemplates);
}

TEST(Config, FixtureBDims) {
  auto c = LoadConfig(FixtureCkpt("public-b") + "/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.dim, 64);
  EXPECT_EQ(c->text.n_layers, 3);
  EXPECT_EQ(c->text.n_heads, 1);
  EXPECT_EQ(c->vision.enc_dim, 32);
  EXPECT_EQ(c->vision.enc_ff_dim, 96);
  EXPECT_EQ(c->region.coord_feat_dim, 128);
  EXPECT_EQ(c->region.coord_out_dim, 512);
  EXPECT_EQ(c->region.size_out_dim, 1024);
}

TEST(Config, TemplateOverrideAndErrors) {
  auto c = ParseConfig(R"({"config":{"tokenizer":{"eos_id":7,"templates":{"query":{"prefix":[1,2]}}}}})", "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tokenizer.eos_id, 7);
  EXPECT_EQ(c->tokenizer.templates.at("query_prefix"), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(c->tokenizer.templates.at("query_suffix"), kTemplates.at("query_suffix"));

  struct Bad {
    const char* json;
    const char* expect;
  } bad[] = {
      {"{", "not valid JSON"},
      {R"({"config":{"text":{"dim":"big"}}})", "config.text.dim"},
      {R"({"config":{"text":{"dim":0}}})", "config.text.dim"},
      {R"({"config":{"vision":[]}})", "config.vision"},
      {R"({"config":{"text":{"dim":100,"n_heads":3}}})", "n_heads"},
      {R"({"config":{"tokenizer":{"templates":{"detect":{"suffix":[1,"x"]}}}}})", "templates.detect.suffix"},
      // Sizes the engine derives in int, and runaway layer counts (found by tests/fuzz/model_config).
      {R"({"config":{"text":{"n_layers":1073741824}}})", "n_layers"},
      {R"({"config":{"text":{"n_heads":1073741824,"dim":1073741824}}})", "2*text.n_heads"},
      {R"({"config":{"vision":{"enc_dim":1073741824,"enc_n_heads":1}}})", "3*vision.enc_dim"},
      {R"({"config":{"vision":{"in_channels":1073741824}}})", "in_channels*enc_patch_size^2"},
      {R"({"config":{"vision":{"crop_size":1073741824,"enc_patch_size":1}}})", "crop_size/enc_patch_size"},
  };
  for (const Bad& b : bad) {
    auto r = ParseConfig(b.json, "cfg.json");
    ASSERT_FALSE(r.ok()) << b.json;
    EXPECT_NE(r.status().message().find(b.expect), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find("cfg.json"), std::string::npos) << r.status();
  }
  EXPECT_EQ(LoadConfig("/nonexistent/config.json").status().code(), absl::StatusCode::kNotFound);
}

TEST(Config, CheckShapesPassesOnFixtures) {
  for (const char* name : {"public-a", "public-b"}) {
    auto c = LoadConfig(FixtureCkpt(name) + "/config.json");
    ASSERT_TRUE(c.ok()) << c.status();
    auto file = SafetensorsFile::Open(FixtureCkpt(name) + "/model.safetensors");
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_TRUE(CheckShapes(*c, **file).ok()) << CheckShapes(*c, **file);
    // The 2B defaults do not fit a tiny file.
    EXPECT_FALSE(CheckShapes(DefaultConfig(), **file).ok());
  }
}

// Rewrites fixture public-a with `mutate` applied to the entry list (data copied or zeroed).
std::string MutatedCopy(const TempDir& dir, const std::function<void(std::vector<SafetensorsWriter::Entry>*)>& mutate) {
  auto src = SafetensorsFile::Open(FixtureCkpt("public-a") + "/model.safetensors");
  EXPECT_TRUE(src.ok());
  std::vector<SafetensorsWriter::Entry> entries;
  for (const TensorView& t : (*src)->tensors()) entries.push_back({t.name, t.dtype, t.shape});
  mutate(&entries);
  const std::string path = dir.Path("mutated.safetensors");
  auto w = SafetensorsWriter::Create(path, entries, {{"format", "pt"}});
  EXPECT_TRUE(w.ok());
  for (const auto& e : entries) {
    size_t n = DTypeSize(e.dtype);
    for (int64_t d : e.shape) n *= d;
    const TensorView* t = (*src)->Find(e.name);
    std::vector<uint8_t> zeros(n, 0);
    EXPECT_TRUE((*w)->Write(t != nullptr && t->nbytes == n ? t->data : zeros.data(), n).ok());
  }
  EXPECT_TRUE((*w)->Finish().ok());
  return path;
}

TEST(Config, CheckShapesNamesTheWrongTensor) {
  TempDir dir;
  auto c = LoadConfig(FixtureCkpt("public-a") + "/config.json");
  ASSERT_TRUE(c.ok());
  const std::string wrong = MutatedCopy(dir, [](auto* entries) {
    for (auto& e : *entries)
      if (e.name == "model.text.blocks.1.mlp.fc1.weight") e.shape = {512, 127};
  });
  auto file = SafetensorsFile::Open(wrong);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::Status s = CheckShapes(*c, **file);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model.text.blocks.1.mlp.fc1.weight has shape [512, 127], expected [512, 128]"),
            std::string::npos) << s;
}

TEST(Config, CheckShapesNamesMissingTensorAndToleratesExtras) {
  TempDir dir;
  auto c = LoadConfig(FixtureCkpt("public-a") + "/config.json");
  ASSERT_TRUE(c.ok());
  const std::string missing = MutatedCopy(dir, [](auto* entries) {
    entries->erase(std::remove_if(entries->begin(), entries->end(),
                                  [](const auto& e) { return e.name == "model.region.size_features"; }),
                   entries->end());
    entries->push_back({"model.text.extra", DType::kF32, {3}});
  });
  auto file = SafetensorsFile::Open(missing);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::Status s = CheckShapes(*c, **file);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing tensor model.region.size_features (expected shape [2, 256])"),
            std::string::npos) << s;
}

TEST(Config, ExtraTensorIsOnlyAWarning) {
  TempDir dir;
  auto c = LoadConfig(FixtureCkpt("public-a") + "/config.json");
  ASSERT_TRUE(c.ok());
  const std::string extra = MutatedCopy(dir, [](auto* entries) {
    entries->push_back({"model.text.extra", DType::kF32, {3}});
  });
  auto file = SafetensorsFile::Open(extra);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(CheckShapes(*c, **file).ok());
}

}  // namespace
}  // namespace moondream
