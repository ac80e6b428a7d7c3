// End to end through the engine Model interface: image file bytes -> Moondream::Encode ->
// Run, for every fixture image of both checkpoints and the real-file images (JPEG,
// progressive JPEG, animated GIF, palette PNG; public-a). Greedy token ids and detect/point
// objects must equal the goldens exactly; image embeddings are compared at the fp32 level
// (same tolerance argument as decoder_parity_test: fp32-vs-fp64 <= 6e-5 in the README).
// On aarch64 an image whose crops this build resamples differently from upstream (libvips's
// C path there: tests/model/golden.h) is skipped, saying so: the goldens are of other
// pixels. OverlapCrops bounds those crops and vision_test checks the encoder on upstream's.
#include <cstdlib>
#include <fstream>
#include <map>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/model/moondream.h"
#include "kernels/cpu.h"
#include "tests/model/golden.h"

namespace moondream::testing {
namespace {

using Case = GoldenCase;

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

const Moondream& Fp32Model(const std::string& ckpt_dir) {
  static std::map<std::string, std::unique_ptr<Moondream>> models;
  auto it = models.find(ckpt_dir);
  if (it == models.end()) {
    MoondreamOptions options;
    options.model_dir = ckpt_dir;
    auto model = Moondream::Load(options);
    if (!model.ok()) throw std::runtime_error(model.status().ToString());
    it = models.emplace(ckpt_dir, std::move(*model)).first;
  }
  return *it->second;
}

class EndToEnd : public ::testing::TestWithParam<Case> {};

TEST_P(EndToEnd, MatchesGoldens) {
  const Case& c = GetParam();
  const nlohmann::json golden = ReadJson(c.set.golden_dir + "/golden.json");
  const nlohmann::json& image = golden["images"][c.image];
  const auto tensors = ReadGoldenTensors(c.set.golden_dir + "/" + c.image + ".safetensors");
  const Moondream& model = Fp32Model(c.set.ckpt_dir);
  const std::string bytes = ReadBytes(c.file);
  ASSERT_FALSE(bytes.empty()) << c.file;
#if defined(__aarch64__)
  const Crops crops = CropsOf(c, CropConfig{});
  if (crops.pixels != WithUpstreamPixels(c, crops).pixels) {
    GTEST_SKIP() << c.image << ": this build's crops are libvips's C path's, not upstream's";
  }
#endif

  RunContext ctx;
  auto embeds = model.EncodeEmbeds(bytes, ctx, nullptr);
  ASSERT_TRUE(embeds.ok()) << embeds.status();
  const double embed_err = MaxAbsDiff(*embeds, tensors.at("image_embeds"));
  std::printf("[max-abs-err] image_embeds %.3g\n", embed_err);
  EXPECT_LE(embed_err, 1e-4 + 1e-4 * tensors.at("image_embeds").abs().max().item<double>());

  Timings timings;
  ctx.timings = &timings;
  auto encoded = model.Encode(bytes, ctx);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_GT(timings.image_decode_ms, 0);
  EXPECT_GT(timings.vision_encode_ms, 0);
  EXPECT_GT(timings.image_prefill_ms, 0);  // its own stage, not inside vision_encode_ms

  const std::string question = golden["prompts"]["question_text"];
  const std::string object = golden["prompts"]["object_text"];
  const struct {
    std::string name;
    Task task;
    CaptionLength length;
    std::string text;
  } tasks[] = {{"caption_short", Task::kCaption, CaptionLength::kShort, ""},
               {"caption_normal", Task::kCaption, CaptionLength::kNormal, ""},
               {"query", Task::kQuery, CaptionLength::kNormal, question},
               {"detect", Task::kDetect, CaptionLength::kNormal, object},
               {"point", Task::kPoint, CaptionLength::kNormal, object}};
  for (const auto& t : tasks) {
    SCOPED_TRACE(t.name);
    Request request;
    request.task = t.task;
    request.caption_length = t.length;
    request.text = t.text;
    request.settings.max_tokens = 20;
    auto result = model.Run(request, **encoded, RunContext{});
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->model, "moondream2");
    if (t.task == Task::kDetect) {
      const nlohmann::json& objects = image["region"]["detect"]["objects"];
      ASSERT_EQ(result->boxes.size(), objects.size());
      for (size_t i = 0; i < objects.size(); ++i) {
        EXPECT_EQ(result->boxes[i].x_min, objects[i]["x_min"].get<double>()) << i;
        EXPECT_EQ(result->boxes[i].y_max, objects[i]["y_max"].get<double>()) << i;
      }
    } else if (t.task == Task::kPoint) {
      const nlohmann::json& objects = image["region"]["point"]["objects"];
      ASSERT_EQ(result->points.size(), objects.size());
      for (size_t i = 0; i < objects.size(); ++i) {
        EXPECT_EQ(result->points[i].x, objects[i]["x"].get<double>()) << i;
        EXPECT_EQ(result->points[i].y, objects[i]["y"].get<double>()) << i;
      }
    } else {
      EXPECT_EQ(result->token_ids,
                image["generate"][t.name]["token_ids"].get<std::vector<int32_t>>());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EndToEnd, ::testing::ValuesIn(AllGoldenCases()),
                         [](const auto& info) { return GoldenCaseName(info.param); });

TEST(LoadMoondream, FillsModelInfo) {
  MoondreamOptions options;
  options.model_dir = AllGoldenSets()[1].ckpt_dir;  // public-b
  options.name = "tiny-b";
  auto model = LoadMoondream(options);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelInfo& info = (*model)->info();
  EXPECT_EQ(info.name, "tiny-b");
  EXPECT_EQ(info.precision, "fp32");
  EXPECT_EQ(info.source, options.model_dir);
  EXPECT_GT(info.parameter_count, 7'000'000u);  // README: 7.34 M
  EXPECT_LT(info.parameter_count, 7'500'000u);
  EXPECT_FALSE(info.weights.empty());
}

TEST(LoadMoondream, MissingDirectoryFails) {
  MoondreamOptions options;
  options.model_dir = "/nonexistent/moondream";
  EXPECT_FALSE(LoadMoondream(options).ok());
}

// Without cpu_kernels (bench tools, tests) MOONDREAM_CPU_ISA names the kernels: an ISA that
// does not exist, or that this CPU lacks, fails the load with a status naming it, not an abort.
TEST(LoadMoondream, CpuIsaTheCpuLacksIsInvalidArgument) {
  const char* saved = std::getenv("MOONDREAM_CPU_ISA");
  const std::string previous = saved != nullptr ? saved : "";
#if defined(__aarch64__)
  const std::vector<std::string> refused = {"bogus", "avx2"};
#else
  const std::vector<std::string> refused = {"bogus", "neon"};
#endif
  for (const std::string& isa : refused) {
    ::setenv("MOONDREAM_CPU_ISA", isa.c_str(), 1);
    MoondreamOptions options;
    options.model_dir = AllGoldenSets()[1].ckpt_dir;
    auto model = LoadMoondream(options);
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << isa;
    EXPECT_NE(model.status().message().find("MOONDREAM_CPU_ISA: --cpu-isa=" + isa), std::string::npos)
        << model.status();
  }
  if (saved != nullptr) {
    ::setenv("MOONDREAM_CPU_ISA", previous.c_str(), 1);
  } else {
    ::unsetenv("MOONDREAM_CPU_ISA");
  }
}

// bf16 on an x86 CPU without AVX-512 BF16 says at load that its matmuls run a slow fallback
// (an AVX2-only Zen 3: ~100x fp32 for vision); a CPU with it loads without the warning.
TEST(LoadMoondream, Bf16WarnsWhereTheCpuLacksIt) {
  MoondreamOptions options;
  options.model_dir = AllGoldenSets()[1].ckpt_dir;
  options.precision = "bf16";
  ::testing::internal::CaptureStderr();
  auto model = LoadMoondream(options);
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(model.ok()) << model.status();
  const bool warned = log.find("event=bf16_without_cpu_support") != std::string::npos;
#if defined(__x86_64__)
  EXPECT_EQ(warned, !kernels::HostCpu().avx512bf16) << log;
#else
  EXPECT_FALSE(warned) << log;
#endif
}

TEST(LoadMoondream, BadImageIsInvalidArgument) {
  const Moondream& model = Fp32Model(AllGoldenSets()[0].ckpt_dir);
  auto encoded = model.Encode("definitely not an image", RunContext{});
  EXPECT_EQ(encoded.status().code(), absl::StatusCode::kInvalidArgument) << encoded.status();
}

}  // namespace
}  // namespace moondream::testing
