// The Engine on the real Moondream2 code with the public-a tiny checkpoint: variant
// naming, the default model, image handles across variants, and greedy token ids
// against the golden (an independent reference run of the upstream code).
#include <algorithm>
#include <atomic>
#include <fstream>
#include <string>

#include "engine/engine.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/engine_test_util.h"

namespace moondream {
namespace {

using ::moondream::testing::CaptionRequest;
using ::moondream::testing::FixtureImage;
using ::moondream::testing::Pending;
using ::moondream::testing::RunSync;
using ::moondream::testing::Submit;

const std::string kCheckpoint = std::string(MOONDREAM_FIXTURES_DIR) + "/public-a/ckpt";

nlohmann::json Golden() {
  std::ifstream in(std::string(MOONDREAM_FIXTURES_DIR) + "/public-a/golden/golden.json");
  return nlohmann::json::parse(in);
}

TEST(EngineMoondreamTest, MissingModelDirFailsNamingIt) {
  EngineOptions options;
  options.model_dir = "/nonexistent/moondream";
  options.variants = {"fp32"};
  auto engine = Engine::Create(options);
  EXPECT_FALSE(engine.ok());
  EXPECT_NE(engine.status().message().find("/nonexistent/moondream"), std::string::npos)
      << engine.status();
}

// A request that cannot fit the context is refused at Submit, before any work (on_done is
// never called), naming the numbers; one that fits is accepted.
TEST(EngineMoondreamTest, RequestsThatCannotFitTheContextAreRefusedAtSubmit) {
  EngineOptions options;
  options.model_dir = kCheckpoint;
  options.variants = {"int8"};
  auto engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Request request = CaptionRequest(FixtureImage("img4_64x48.png"));
  request.model = "moondream2-int8";
  request.settings.max_tokens = 2000;  // 730 image positions + 2000 > 2048
  bool called = false;
  const absl::Status status =
      (*engine)->Submit(request, Callbacks{nullptr, [&](absl::StatusOr<Result>) { called = true; }});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("settings.max_tokens 2000"), std::string::npos) << status;
  EXPECT_NE(status.message().find("2048-position context"), std::string::npos) << status;
  EXPECT_FALSE(called);
  request.settings.max_tokens = 4;
  EXPECT_TRUE(RunSync(**engine, request).ok());
}

TEST(EngineMoondreamTest, VariantsHandlesAndGoldenTokens) {
  EngineOptions options;
  options.model_dir = kCheckpoint;
  options.variants = {"fp32", "bf16"};
  options.threads = 1;
  auto engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<ModelInfo> models = (*engine)->ListModels();
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0].name, "moondream2");
  EXPECT_EQ(models[0].precision, "fp32");
  EXPECT_TRUE(models[0].is_default);
  EXPECT_EQ(models[1].name, "moondream2-bf16");
  EXPECT_EQ(models[1].precision, "bf16");
  EXPECT_FALSE(models[1].is_default);

  const std::string png = FixtureImage("img0_378x378.png");
  Request encode;
  encode.task = Task::kEncodeImage;
  encode.image_bytes = png;
  auto encoded = RunSync(**engine, encode);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(encoded->model, "moondream2");
  EXPECT_GT(encoded->image_cached_bytes, 0u);
  EXPECT_GT(encoded->timings.vision_encode_ms, 0);
  EXPECT_GT(encoded->timings.image_prefill_ms, 0);

  const nlohmann::json golden = Golden();
  Request caption = CaptionRequest("", CaptionLength::kShort);
  caption.image_handle = encoded->image_handle;
  caption.settings.max_tokens = golden["sampling"]["max_tokens"].get<int>();
  auto from_handle = RunSync(**engine, caption);
  ASSERT_TRUE(from_handle.ok()) << from_handle.status();
  const auto expected = golden["images"]["img0_378x378"]["generate"]["caption_short"]["token_ids"]
                            .get<std::vector<int32_t>>();
  EXPECT_EQ(from_handle->token_ids, expected);
  EXPECT_EQ(from_handle->timings.vision_encode_ms, 0);  // the cached encoding was used
  EXPECT_EQ(from_handle->timings.image_prefill_ms, 0);
  EXPECT_GT(from_handle->timings.prefill_ms, 0);  // the prompt

  // The KV cache of a running request shows in the stats, and is gone afterwards.
  std::atomic<uint64_t> kv_while_running{0};
  Engine* raw = engine->get();
  auto streamed = Submit(**engine, caption, [raw, &kv_while_running](Pending&) {
    kv_while_running = std::max<uint64_t>(kv_while_running, raw->Stats().kv_cache_bytes);
  });
  ASSERT_TRUE(streamed->Wait().ok());
  EXPECT_EQ(streamed->pieces().size(), expected.size());
  EXPECT_GT(kv_while_running.load(), 0u);
  EXPECT_EQ((*engine)->Stats().kv_cache_bytes, 0u);

  caption.model = "moondream2-bf16";
  auto foreign = RunSync(**engine, caption);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kInvalidArgument) << foreign.status();
}

}  // namespace
}  // namespace moondream
