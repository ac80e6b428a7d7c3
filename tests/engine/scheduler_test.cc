// Queueing, deadlines, cancellation and drain, observed through the Engine on the test
// model slowed down by a per-token delay.
#include <chrono>
#include <thread>

#include "engine/engine.h"
#include "gtest/gtest.h"
#include "tests/engine/engine_test_util.h"

namespace moondream {
namespace {

using ::moondream::testing::CaptionRequest;
using ::moondream::testing::FixtureImage;
using ::moondream::testing::MakeTestEngine;
using ::moondream::testing::Pending;
using ::moondream::testing::Submit;
using std::chrono::milliseconds;

constexpr int kTokenDelayMs = 40;

class SchedulerTest : public ::testing::Test {
 protected:
  // A long request (the normal caption has ~20 tokens).
  Request Slow() const { return CaptionRequest(png_); }

  // Waits until the engine reports `in_flight` running and `queued` waiting requests.
  void WaitForStats(Engine& engine, int in_flight, int queued) {
    const Clock::time_point give_up = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < give_up) {
      EngineStats stats = engine.Stats();
      if (stats.in_flight == in_flight && stats.queued == queued) return;
      std::this_thread::sleep_for(milliseconds(2));
    }
    FAIL() << "engine never reached in_flight=" << in_flight << " queued=" << queued;
  }

  const std::string png_ = FixtureImage("img4_64x48.png");
};

TEST_F(SchedulerTest, FullQueueIsResourceExhausted) {
  auto engine = MakeTestEngine(kTokenDelayMs, /*max_queue=*/1);
  auto running = Submit(*engine, Slow());
  WaitForStats(*engine, 1, 0);
  auto queued = Submit(*engine, Slow());
  ASSERT_TRUE(queued->submit_status.ok());
  auto rejected = Submit(*engine, Slow());
  EXPECT_EQ(rejected->submit_status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(rejected->submit_status.message(), "request queue is full (1 queued, --max-queue=1)");
  running->cancel->store(true);
  queued->cancel->store(true);
  EXPECT_EQ(running->Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(queued->Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(Submit(*engine, Slow())->submit_status.ok());  // room again
}

TEST_F(SchedulerTest, DeadlineWhileQueuedAnswersWithoutWaitingForAWorker) {
  auto engine = MakeTestEngine(kTokenDelayMs, /*max_queue=*/1);
  auto running = Submit(*engine, Slow());  // ~800 ms
  WaitForStats(*engine, 1, 0);
  Request late = Slow();
  late.deadline = Clock::now() + milliseconds(60);
  auto queued = Submit(*engine, late);
  ASSERT_TRUE(queued->DoneWithin(400));
  EXPECT_FALSE(running->DoneWithin(0));
  auto result = queued->Wait();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded) << result.status();
  EXPECT_NE(result.status().message().find("in the queue"), std::string::npos);
  EXPECT_TRUE(queued->pieces().empty());
  WaitForStats(*engine, 1, 0);  // its queue slot is free again
  auto next = Submit(*engine, Slow());
  EXPECT_TRUE(next->submit_status.ok()) << next->submit_status;
  running->cancel->store(true);
  next->cancel->store(true);
}

TEST_F(SchedulerTest, DeadlineWhileGenerating) {
  auto engine = MakeTestEngine(kTokenDelayMs);
  Request request = Slow();  // ~20 tokens: 800 ms
  request.deadline = Clock::now() + milliseconds(300);
  auto pending = Submit(*engine, request);
  auto result = pending->Wait();
  const Clock::time_point done = Clock::now();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded) << result.status();
  EXPECT_EQ(result.status().message().find("in the queue"), std::string::npos);
  EXPECT_LT(pending->pieces().size(), 10u);
  EXPECT_LT(done - request.deadline, milliseconds(300));  // stopped at the next token step
  WaitForStats(*engine, 0, 0);                            // the worker let go of it
}

TEST_F(SchedulerTest, CancelStopsWithinOneToken) {
  auto engine = MakeTestEngine(kTokenDelayMs);
  auto pending = Submit(*engine, Slow(), [](Pending& p) {
    if (p.pieces().size() == 2) p.cancel->store(true);
  });
  auto result = pending->Wait();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_EQ(pending->pieces().size(), 2u);
}

TEST_F(SchedulerTest, CancelWhileQueuedAnswersAndFreesTheSlot) {
  auto engine = MakeTestEngine(kTokenDelayMs, /*max_queue=*/1);
  auto running = Submit(*engine, Slow());
  WaitForStats(*engine, 1, 0);
  auto queued = Submit(*engine, Slow());
  queued->cancel->store(true);
  ASSERT_TRUE(queued->DoneWithin(400));
  EXPECT_FALSE(running->DoneWithin(0));
  auto result = queued->Wait();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(result.status().message(), "request cancelled while queued");
  WaitForStats(*engine, 1, 0);
  running->cancel->store(true);
}

// --max-queued-bytes counts the image bytes of the queued and running requests; a request
// cancelled while queued gives its bytes back (through the reaper), like a finished one.
TEST_F(SchedulerTest, QueuedImageBytesAreCappedAndReleased) {
  EngineOptions options;
  options.model = "test";
  options.test_model_token_delay_ms = kTokenDelayMs;
  options.max_queued_bytes = 2 * png_.size();
  auto created = Engine::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  Engine& engine = **created;
  auto running = Submit(engine, Slow());
  WaitForStats(engine, 1, 0);
  auto queued = Submit(engine, Slow());
  ASSERT_TRUE(queued->submit_status.ok());
  auto rejected = Submit(engine, Slow());
  EXPECT_EQ(rejected->submit_status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(rejected->submit_status.message().find(
                "--max-queued-bytes=" + std::to_string(2 * png_.size())),
            std::string::npos)
      << rejected->submit_status;
  queued->cancel->store(true);
  EXPECT_EQ(queued->Wait().status().code(), absl::StatusCode::kCancelled);
  absl::Status readmitted = absl::ResourceExhaustedError("not tried");
  for (int i = 0; i < 200 && !readmitted.ok(); ++i) {  // bytes leave just after on_done
    auto pending = Submit(engine, Slow());
    readmitted = pending->submit_status;
    if (readmitted.ok()) pending->cancel->store(true);
    else std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_TRUE(readmitted.ok()) << readmitted;
  running->cancel->store(true);
}

TEST_F(SchedulerTest, ConcurrencyRunsRequestsSideBySide) {
  auto engine = MakeTestEngine(kTokenDelayMs, /*max_queue=*/0, /*max_concurrency=*/2);
  auto a = Submit(*engine, Slow());
  auto b = Submit(*engine, Slow());
  ASSERT_TRUE(a->submit_status.ok());
  ASSERT_TRUE(b->submit_status.ok());
  WaitForStats(*engine, 2, 0);
  EXPECT_EQ(Submit(*engine, Slow())->submit_status.code(), absl::StatusCode::kResourceExhausted);
  a->cancel->store(true);
  b->cancel->store(true);
  EXPECT_EQ(a->Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(b->Wait().status().code(), absl::StatusCode::kCancelled);
}

TEST_F(SchedulerTest, DrainFinishesAcceptedWorkAndRejectsNew) {
  auto engine = MakeTestEngine(/*token_delay_ms=*/10, /*max_queue=*/64);
  std::vector<std::shared_ptr<Pending>> accepted = {Submit(*engine, Slow()),
                                                    Submit(*engine, Slow())};
  std::thread drain([&] { engine->Drain(std::chrono::seconds(60)); });
  absl::Status rejected;
  while (rejected.ok()) {  // accepted until the drain begins, then rejected
    auto pending = Submit(*engine, Slow());
    rejected = pending->submit_status;
    if (rejected.ok()) accepted.push_back(pending);
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_EQ(rejected.code(), absl::StatusCode::kUnavailable) << rejected;
  drain.join();
  for (auto& pending : accepted) {
    ASSERT_TRUE(pending->DoneWithin(0));  // Drain returned after every accepted request
    auto result = pending->Wait();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->finish_reason, FinishReason::kStop);
  }
  engine->Drain(std::chrono::seconds(1));  // idempotent
}

TEST_F(SchedulerTest, DrainCancelsWhatOutlastsTheGrace) {
  auto engine = MakeTestEngine(kTokenDelayMs);
  auto running = Submit(*engine, Slow());
  auto queued = Submit(*engine, Slow());
  WaitForStats(*engine, 1, 1);
  const Clock::time_point start = Clock::now();
  engine->Drain(milliseconds(3 * kTokenDelayMs));
  EXPECT_LT(Clock::now() - start, milliseconds(600));  // not the ~800 ms of the request
  for (auto* pending : {running.get(), queued.get()}) {
    ASSERT_TRUE(pending->DoneWithin(0));
    auto result = pending->Wait();
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  }
  EXPECT_LE(running->pieces().size(), 4u);
}

TEST_F(SchedulerTest, DestructorCompletesEveryAcceptedRequest) {
  auto engine = MakeTestEngine(kTokenDelayMs);
  auto running = Submit(*engine, Slow());
  auto queued = Submit(*engine, Slow());
  engine.reset();
  EXPECT_TRUE(running->DoneWithin(0));
  EXPECT_TRUE(queued->DoneWithin(0));
  EXPECT_FALSE(queued->Wait().ok());
}

}  // namespace
}  // namespace moondream
