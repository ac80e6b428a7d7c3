// Engine API on the test model: model listing, request validation, image handles,
// bad images.
#include "engine/engine.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/engine/engine_test_util.h"

namespace moondream {
namespace {

using ::moondream::testing::CaptionRequest;
using ::moondream::testing::FixtureImage;
using ::moondream::testing::MakeTestEngine;
using ::moondream::testing::RunSync;

TEST(EngineTest, TestModelIsTheOnlyAndDefaultModel) {
  auto engine = MakeTestEngine();
  std::vector<ModelInfo> models = engine->ListModels();
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0].name, "test");
  EXPECT_EQ(models[0].precision, "none");
  EXPECT_EQ(models[0].device, "cpu");
  EXPECT_EQ(models[0].source, "builtin");
  EXPECT_TRUE(models[0].is_default);
  auto by_default = engine->GetModel("");
  ASSERT_TRUE(by_default.ok());
  EXPECT_EQ(by_default->name, "test");
  auto unknown = engine->GetModel("moondream2");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find("loaded: test"), std::string::npos);
}

TEST(EngineTest, CreateRejectsBadOptions) {
  EngineOptions options;
  options.model = "gpt";
  EXPECT_EQ(Engine::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.model = "moondream2";
  options.variants = {"int4"};
  auto bad_precision = Engine::Create(options);
  EXPECT_EQ(bad_precision.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_precision.status().message().find("int4"), std::string::npos);
  options.model = "test";
  options.variants = {"fp32"};
  options.max_concurrency = 0;
  EXPECT_EQ(Engine::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EngineTest, CaptionResultCarriesModelUsageAndTimings) {
  auto engine = MakeTestEngine();
  auto result = RunSync(*engine, CaptionRequest(FixtureImage("img1_640x480.png")));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->model, "test");
  EXPECT_NE(result->text.find("640×480"), std::string::npos) << result->text;
  EXPECT_EQ(result->finish_reason, FinishReason::kStop);
  EXPECT_EQ(result->usage.generated_tokens, static_cast<int>(result->token_ids.size()));
  EXPECT_GT(result->usage.prompt_tokens, 0);
  EXPECT_GT(result->timings.image_decode_ms, 0);
  EXPECT_GE(result->timings.total_ms, result->timings.queue_ms + result->timings.image_decode_ms);
  EXPECT_GE(result->timings.total_ms, result->timings.decode_ms);
}

struct InvalidCase {
  const char* name;
  std::function<void(Request&)> edit;
  const char* field;
};

TEST(EngineTest, InvalidRequestsAreRejectedAtSubmitNamingTheField) {
  auto engine = MakeTestEngine();
  const std::string png = FixtureImage("img4_64x48.png");
  const InvalidCase cases[] = {
      {"no image", [](Request& r) { r.image_bytes.clear(); }, "image"},
      {"both", [](Request& r) { r.image_handle = "abc"; }, "image"},
      {"empty question", [](Request& r) { r.task = Task::kQuery; }, "question"},
      {"empty object", [](Request& r) { r.task = Task::kDetect; }, "object"},
      {"empty point object", [](Request& r) { r.task = Task::kPoint; }, "object"},
      {"max_tokens < 0", [](Request& r) { r.settings.max_tokens = -1; }, "max_tokens"},
      {"max_tokens > 2048", [](Request& r) { r.settings.max_tokens = 2049; }, "[0, 2048]"},
      {"temperature", [](Request& r) { r.settings.temperature = 2.5f; }, "temperature"},
      {"temperature nan", [](Request& r) { r.settings.temperature = NAN; }, "temperature"},
      {"top_p", [](Request& r) { r.settings.top_p = 1.5f; }, "top_p"},
      {"top_p < 0", [](Request& r) { r.settings.top_p = -0.1f; }, "top_p"},
      {"max_objects", [](Request& r) { r.max_objects = 51; }, "max_objects"},
      {"encode with handle",
       [](Request& r) {
         r.task = Task::kEncodeImage;
         r.image_bytes.clear();
         r.image_handle = "abc";
       },
       "image"},
  };
  for (const InvalidCase& c : cases) {
    Request request = CaptionRequest(png);
    c.edit(request);
    bool called = false;
    Callbacks callbacks;
    callbacks.on_done = [&called](absl::StatusOr<Result>) { called = true; };
    absl::Status status = engine->Submit(std::move(request), std::move(callbacks));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << status;
    EXPECT_NE(status.message().find(c.field), std::string::npos) << c.name << ": " << status;
    EXPECT_FALSE(called) << c.name;
  }
}

TEST(EngineTest, BoundaryValuesAreAccepted) {
  auto engine = MakeTestEngine();
  Request request = CaptionRequest(FixtureImage("img4_64x48.png"));
  request.settings.max_tokens = 2048;
  request.settings.temperature = 2;
  request.settings.top_p = 0;
  EXPECT_TRUE(RunSync(*engine, request).ok());
  request.task = Task::kDetect;
  request.text = "cat";
  request.max_objects = 50;
  EXPECT_TRUE(RunSync(*engine, request).ok());
}

TEST(EngineTest, UnknownModelIsNotFoundListingLoadedModels) {
  auto engine = MakeTestEngine();
  Request request = CaptionRequest(FixtureImage("img4_64x48.png"));
  request.model = "moondream2-int8";
  absl::Status status = engine->Submit(request, Callbacks{nullptr, [](absl::StatusOr<Result>) {}});
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(status.message().find("moondream2-int8"), std::string::npos);
  EXPECT_NE(status.message().find("loaded: test"), std::string::npos);
}

// A client's model name is quoted into the error (and so into logs) cut to 64 bytes at a
// character boundary, control characters replaced: no unbounded echo.
TEST(EngineTest, UnknownModelNameIsQuotedBounded) {
  auto engine = MakeTestEngine();
  const std::string name = "x\n" + std::string(9990, 'a') + "\xc3\xa9";
  absl::StatusOr<ModelInfo> info = engine->GetModel(name);
  ASSERT_EQ(info.status().code(), absl::StatusCode::kNotFound);
  const std::string message(info.status().message());
  EXPECT_LT(message.size(), 200u) << message;
  EXPECT_NE(message.find("\"x?aaa"), std::string::npos) << message;
  EXPECT_NE(message.find("(cut, 9994 bytes)"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos);
  Request request = CaptionRequest(FixtureImage("img4_64x48.png"));
  request.model = name;
  const absl::Status status = engine->Submit(request, Callbacks{nullptr, [](absl::StatusOr<Result>) {}});
  EXPECT_EQ(status.message(), info.status().message());
}

TEST(EngineTest, BadImagesFailWithInvalidArgument) {
  auto engine = MakeTestEngine();
  const std::string png = FixtureImage("img1_640x480.png");
  for (const std::string& bytes :
       {png.substr(0, png.size() / 2), std::string("definitely not an image"),
        std::string("\x89PNG\r\n\x1a\n", 8)}) {
    auto result = RunSync(*engine, CaptionRequest(bytes));
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  }
  // The engine keeps serving.
  EXPECT_TRUE(RunSync(*engine, CaptionRequest(png)).ok());
}

TEST(EngineTest, EncodeImageHandleServesLaterRequests) {
  auto engine = MakeTestEngine();
  const std::string png = FixtureImage("img2_1200x300.png");
  Request encode;
  encode.task = Task::kEncodeImage;
  encode.image_bytes = png;
  auto encoded = RunSync(*engine, encode);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(encoded->image_handle.size(), 40u);
  EXPECT_GT(encoded->image_cached_bytes, 0u);
  EXPECT_EQ(engine->Stats().image_cache_entries, 1);
  EXPECT_EQ(engine->Stats().image_cache_bytes, encoded->image_cached_bytes);

  Request by_handle = CaptionRequest("");
  by_handle.image_handle = encoded->image_handle;
  auto from_handle = RunSync(*engine, by_handle);
  ASSERT_TRUE(from_handle.ok()) << from_handle.status();
  auto from_bytes = RunSync(*engine, CaptionRequest(png));
  ASSERT_TRUE(from_bytes.ok());
  EXPECT_EQ(from_handle->text, from_bytes->text);
  EXPECT_EQ(from_handle->timings.image_decode_ms, 0);  // no decode for a cached image

  by_handle.image_handle[20] = by_handle.image_handle[20] == 'a' ? 'b' : 'a';
  auto unknown = RunSync(*engine, by_handle);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(unknown.status().message(), "unknown or expired image handle");
}

}  // namespace
}  // namespace moondream
