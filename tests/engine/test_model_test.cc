// The weight-free test model: deterministic answers, streaming, limits.
#include <set>
#include <string>

#include "engine/engine.h"
#include "gtest/gtest.h"
#include "tests/engine/engine_test_util.h"

namespace moondream {
namespace {

using ::moondream::testing::CaptionRequest;
using ::moondream::testing::FixtureImage;
using ::moondream::testing::IsValidUtf8;
using ::moondream::testing::MakeTestEngine;
using ::moondream::testing::RunSync;
using ::moondream::testing::Submit;

Request Locate(Task task, const std::string& image, const std::string& object,
               int max_objects = 0) {
  Request request;
  request.task = task;
  request.image_bytes = image;
  request.text = object;
  request.max_objects = max_objects;
  return request;
}

class TestModelTest : public ::testing::Test {
 protected:
  std::unique_ptr<Engine> engine_ = MakeTestEngine();
  const std::string img1_ = FixtureImage("img1_640x480.png");
  const std::string img3_ = FixtureImage("img3_300x1200.png");
};

TEST_F(TestModelTest, SameInputSameOutput) {
  for (Task task : {Task::kCaption, Task::kQuery, Task::kDetect, Task::kPoint}) {
    Request request = Locate(task, img1_, "a cat");
    auto first = RunSync(*engine_, request);
    auto second = RunSync(*engine_, request);
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE(second.ok());
    EXPECT_EQ(first->text, second->text) << TaskName(task);
    EXPECT_EQ(first->token_ids, second->token_ids);
    ASSERT_EQ(first->boxes.size(), second->boxes.size());
    for (size_t i = 0; i < first->boxes.size(); ++i) {
      EXPECT_EQ(first->boxes[i].x_min, second->boxes[i].x_min);
      EXPECT_EQ(first->boxes[i].y_max, second->boxes[i].y_max);
    }
    ASSERT_EQ(first->points.size(), second->points.size());
    for (size_t i = 0; i < first->points.size(); ++i) {
      EXPECT_EQ(first->points[i].x, second->points[i].x);
    }
  }
}

TEST_F(TestModelTest, CaptionDependsOnImageAndLength) {
  auto short1 = RunSync(*engine_, CaptionRequest(img1_, CaptionLength::kShort));
  auto normal1 = RunSync(*engine_, CaptionRequest(img1_, CaptionLength::kNormal));
  auto short3 = RunSync(*engine_, CaptionRequest(img3_, CaptionLength::kShort));
  ASSERT_TRUE(short1.ok() && normal1.ok() && short3.ok());
  EXPECT_EQ(short1->text.rfind("a test image of 640×480 pixels, mostly ", 0), 0u) << short1->text;
  EXPECT_NE(short3->text.find("300×1200"), std::string::npos) << short3->text;
  EXPECT_NE(short1->text, normal1->text);
  EXPECT_GT(normal1->token_ids.size(), short1->token_ids.size());
}

TEST_F(TestModelTest, StreamsValidUtf8PiecesThatMakeTheText) {
  for (CaptionLength length : {CaptionLength::kShort, CaptionLength::kNormal}) {
    auto pending = Submit(*engine_, CaptionRequest(img1_, length));
    auto result = pending->Wait();
    ASSERT_TRUE(result.ok()) << result.status();
    std::string joined;
    for (const std::string& piece : pending->pieces()) {
      EXPECT_TRUE(IsValidUtf8(piece)) << piece;
      joined += piece;
    }
    EXPECT_EQ(joined, result->text);
    EXPECT_EQ(pending->pieces().size(), result->token_ids.size());
    EXPECT_NE(joined.find("×"), std::string::npos);  // a multi-byte character was streamed
  }
}

TEST_F(TestModelTest, QueryEchoesTheQuestion) {
  Request request = Locate(Task::kQuery, img1_, "¿Qué hay aquí? 🐱");
  auto pending = Submit(*engine_, request);
  auto result = pending->Wait();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_NE(result->text.find("¿Qué hay aquí? 🐱"), std::string::npos) << result->text;
  for (const std::string& piece : pending->pieces()) EXPECT_TRUE(IsValidUtf8(piece)) << piece;
  EXPECT_GT(result->usage.prompt_tokens, 3);
}

TEST_F(TestModelTest, MaxTokensLimitsGeneration) {
  Request request = CaptionRequest(img1_);
  request.settings.max_tokens = 3;
  auto limited = RunSync(*engine_, request);
  ASSERT_TRUE(limited.ok());
  EXPECT_EQ(limited->token_ids.size(), 3u);
  EXPECT_EQ(limited->usage.generated_tokens, 3);
  EXPECT_EQ(limited->finish_reason, FinishReason::kLength);
  auto full = RunSync(*engine_, CaptionRequest(img1_));
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->finish_reason, FinishReason::kStop);
  EXPECT_EQ(full->text.rfind(limited->text, 0), 0u);  // a prefix of the full caption
  EXPECT_TRUE(
      std::equal(limited->token_ids.begin(), limited->token_ids.end(), full->token_ids.begin()));
}

TEST_F(TestModelTest, DetectAndPointHonourMaxObjects) {
  for (Task task : {Task::kDetect, Task::kPoint}) {
    auto all = RunSync(*engine_, Locate(task, img1_, "cat"));
    ASSERT_TRUE(all.ok()) << all.status();
    const size_t found = task == Task::kDetect ? all->boxes.size() : all->points.size();
    EXPECT_GE(found, 3u);
    EXPECT_LE(found, 5u);
    EXPECT_EQ(all->finish_reason, FinishReason::kStop);
    auto two = RunSync(*engine_, Locate(task, img1_, "cat", 2));
    ASSERT_TRUE(two.ok());
    EXPECT_EQ(task == Task::kDetect ? two->boxes.size() : two->points.size(), 2u);
    EXPECT_EQ(two->finish_reason, FinishReason::kLength);
  }
  auto boxes = RunSync(*engine_, Locate(Task::kDetect, img1_, "cat"));
  for (const Box& box : boxes->boxes) {
    EXPECT_LT(box.x_min, box.x_max);
    EXPECT_LT(box.y_min, box.y_max);
    EXPECT_GE(box.x_min, 0.0f);
    EXPECT_LE(box.y_max, 1.0f);
  }
}

TEST_F(TestModelTest, RegionsDependOnTheObject) {
  std::set<std::pair<float, float>> firsts;
  for (const char* object : {"cat", "dog", "face", "car"}) {
    auto result = RunSync(*engine_, Locate(Task::kPoint, img1_, object));
    ASSERT_TRUE(result.ok());
    firsts.insert({result->points[0].x, result->points[0].y});
  }
  EXPECT_EQ(firsts.size(), 4u);
}

}  // namespace
}  // namespace moondream
