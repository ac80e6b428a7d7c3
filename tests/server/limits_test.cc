// Admission, deadlines, cancellation, draining and bad input, on the real binary.
#include <signal.h>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>
#include <vector>

#include "tests/server/server_process.h"

namespace moondream::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kPng[] = "images/img4_64x48.png";
constexpr char kJpeg[] = "real/images/p1_astronaut_prog_512x512.jpg";

v1::CaptionRequest CaptionOf(const std::string& bytes, int max_tokens = 0) {
  v1::CaptionRequest request;
  request.mutable_image()->set_data(bytes);
  request.mutable_settings()->set_max_tokens(max_tokens);
  return request;
}

grpc::Status CallCaption(v1::Moondream::Stub* stub, const v1::CaptionRequest& request,
                         grpc::ClientContext* ctx) {
  v1::CaptionResponse response;
  return stub->Caption(ctx, request, &response);
}

// A unary Caption running on its own thread, cancellable from the test.
struct PendingCaption {
  grpc::ClientContext ctx;
  std::future<grpc::Status> status;
  void Start(v1::Moondream::Stub* stub, const v1::CaptionRequest& request) {
    status = std::async(std::launch::async, [this, stub, request] {
      return CallCaption(stub, request, &ctx);
    });
  }
};

TEST(LimitsTest, FullQueueAnswersResourceExhausted) {
  ServerProcess server({"--max-queue=1", "--max-concurrency=1", "--test-model-token-delay-ms=200"});
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto stub = server.Stub();
  const v1::CaptionRequest slow = CaptionOf(ReadFixture(kPng), 20);
  PendingCaption running, queued;
  running.Start(stub.get(), slow);
  ASSERT_TRUE(WaitForMetric(server, "moondream_requests_in_flight", {}, 1, seconds(5)));
  queued.Start(stub.get(), slow);
  ASSERT_TRUE(WaitForMetric(server, "moondream_queue_depth", {}, 1, seconds(5)));

  grpc::ClientContext ctx;
  const grpc::Status rejected = CallCaption(stub.get(), slow, &ctx);
  EXPECT_EQ(rejected.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(rejected.error_message().find("queue"), std::string::npos) << rejected.error_message();
  running.ctx.TryCancel();
  queued.ctx.TryCancel();
  EXPECT_EQ(running.status.get().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(queued.status.get().error_code(), grpc::StatusCode::CANCELLED);
}

// --max-deadline bounds a request that set no deadline; --queue-timeout fails a request
// that waited too long in the queue with UNAVAILABLE (retryable) while the worker is busy.
TEST(LimitsTest, ServerMaxDeadlineAndQueueTimeout) {
  ServerProcess server({"--max-concurrency=1", "--test-model-token-delay-ms=200",
                        "--max-deadline=1s", "--queue-timeout=500ms"});
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto stub = server.Stub();
  const v1::CaptionRequest slow = CaptionOf(ReadFixture(kPng), 50);  // 10 s of tokens
  PendingCaption running;
  const auto start = std::chrono::steady_clock::now();
  running.Start(stub.get(), slow);  // no client deadline
  ASSERT_TRUE(WaitForMetric(server, "moondream_requests_in_flight", {}, 1, seconds(5)));
  grpc::ClientContext queued_ctx;
  const grpc::Status queued = CallCaption(stub.get(), slow, &queued_ctx);
  EXPECT_EQ(queued.error_code(), grpc::StatusCode::UNAVAILABLE) << queued.error_message();
  EXPECT_NE(queued.error_message().find("--queue-timeout"), std::string::npos)
      << queued.error_message();
  EXPECT_EQ(running.status.get().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(8));
}

// --max-queued-bytes caps the image bytes of the queued and running requests together: a
// request that would pass it answers RESOURCE_EXHAUSTED at once, naming the flag, and the
// bytes are released when a request finishes.
TEST(LimitsTest, QueuedImageBytesAreCapped) {
  constexpr int kCap = 1 << 20;
  // 1 s per token: the running caption (about ten tokens) outlasts the flood below even on a
  // starved host (at 200 ms it could finish first under a load of 12 on 2 cores).
  ServerProcess server({"--max-queued-bytes=" + std::to_string(kCap), "--max-concurrency=1",
                        "--test-model-token-delay-ms=1000"});
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto stub = server.Stub();
  // 700 KB each: one fits under the 1 MiB cap beside the running request, two do not. They
  // are not images (decode fails with INVALID_ARGUMENT), but admission never decodes.
  const v1::CaptionRequest large = CaptionOf(std::string(700 << 10, 'x'));
  PendingCaption running, queued;
  running.Start(stub.get(), CaptionOf(ReadFixture(kPng), 20));  // ~10 s of tokens
  ASSERT_TRUE(WaitForMetric(server, "moondream_requests_in_flight", {}, 1, seconds(5)));
  queued.Start(stub.get(), large);
  ASSERT_TRUE(WaitForMetric(server, "moondream_queue_depth", {}, 1, seconds(5)));

  std::vector<std::unique_ptr<PendingCaption>> flood;
  for (int i = 0; i < 4; ++i) {
    flood.push_back(std::make_unique<PendingCaption>());
    flood.back()->Start(stub.get(), large);
  }
  for (auto& pending : flood) {
    const grpc::Status status = pending->status.get();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
    EXPECT_NE(status.error_message().find("--max-queued-bytes=" + std::to_string(kCap)),
              std::string::npos)
        << status.error_message();
  }
  running.ctx.TryCancel();
  EXPECT_EQ(running.status.get().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(queued.status.get().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Both finished: their bytes are released, so a large request is admitted again (and fails
  // only at decode).
  grpc::ClientContext again_ctx;
  const grpc::Status again = CallCaption(stub.get(), large, &again_ctx);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << again.error_message();
}

// --max-concurrent-streams bounds the calls of one connection: with 1, a second call on the
// busy connection waits for the stream (and misses its deadline) while the same call on
// another connection is served at once.
// A stub on a connection of its own.
std::unique_ptr<v1::Moondream::Stub> OwnConnection(const ServerProcess& server) {
  return v1::Moondream::NewStub(OwnChannel(server.address()));
}

grpc::Status CallGetModel(v1::Moondream::Stub* stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
  v1::GetModelRequest request;
  v1::ModelInfo info;
  return stub->GetModel(&ctx, request, &info);
}

TEST(LimitsTest, MaxConcurrentStreamsPerConnection) {
  ServerProcess server({"--max-concurrent-streams=1", "--max-concurrency=2",
                        "--test-model-token-delay-ms=200"});
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto busy = OwnConnection(server);
  auto other = OwnConnection(server);
  PendingCaption running;
  running.Start(busy.get(), CaptionOf(ReadFixture(kPng), 20));  // 4 s of tokens
  ASSERT_TRUE(WaitForMetric(server, "moondream_requests_in_flight", {}, 1, seconds(5)));
  const v1::CaptionRequest quick = CaptionOf(ReadFixture(kPng), 1);

  grpc::ClientContext waiting_ctx;
  waiting_ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(1500));
  const grpc::Status waiting = CallCaption(busy.get(), quick, &waiting_ctx);
  EXPECT_EQ(waiting.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << waiting.error_message();

  grpc::ClientContext served_ctx;
  served_ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(1500));
  const grpc::Status served = CallCaption(other.get(), quick, &served_ctx);
  EXPECT_TRUE(served.ok()) << served.error_code() << " " << served.error_message();
  running.ctx.TryCancel();
  EXPECT_EQ(running.status.get().error_code(), grpc::StatusCode::CANCELLED);
}

TEST(LimitsTest, MaxConnectionsClosesTheNextUntilOneCloses) {
  ServerProcess server({"--grpc-max-connections=2"});
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto first = OwnConnection(server);
  auto second = OwnConnection(server);
  ASSERT_TRUE(CallGetModel(first.get()).ok());
  ASSERT_TRUE(CallGetModel(second.get()).ok());

  auto third = OwnConnection(server);
  const grpc::Status refused = CallGetModel(third.get());
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  EXPECT_TRUE(server.WaitForLog("event=grpc_connections_refused", seconds(5))) << server.Logs();
  const std::string scrape = HttpGet(server.metrics_address(), "/metrics");
  EXPECT_EQ(MetricValue(scrape, "moondream_grpc_connections"), 2) << scrape;
  EXPECT_GE(MetricValue(scrape, "moondream_grpc_connections_refused_total"), 1) << scrape;
  EXPECT_TRUE(CallGetModel(first.get()).ok());  // the admitted ones go on
  third.reset();  // its channel would reconnect and could take the slot freed next

  first.reset();  // its channel, and so its connection, closes: the slot is free again
  ASSERT_TRUE(WaitForMetric(server, "moondream_grpc_connections", {}, 1, seconds(10)));
  auto fourth = OwnConnection(server);
  const grpc::Status admitted = CallGetModel(fourth.get());
  EXPECT_TRUE(admitted.ok()) << admitted.error_code() << " " << admitted.error_message();
}

TEST(LimitsTest, IdleConnectionsFreeTheirSlot) {
  ServerProcess server({"--grpc-max-connections=1", "--max-connection-idle=1s"});
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto idle = OwnConnection(server);
  ASSERT_TRUE(CallGetModel(idle.get()).ok());
  // The server's GOAWAY closes the idle connection; the channel itself stays.
  ASSERT_TRUE(WaitForMetric(server, "moondream_grpc_connections", {}, 0, seconds(10)));
  auto other = OwnConnection(server);
  const grpc::Status admitted = CallGetModel(other.get());
  EXPECT_TRUE(admitted.ok()) << admitted.error_code() << " " << admitted.error_message();
}

TEST(LimitsTest, DeadlineStopsGeneration) {
  ServerProcess server({"--test-model-token-delay-ms=200"});
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto stub = server.Stub();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(500));
  const grpc::Status status = CallCaption(stub.get(), CaptionOf(ReadFixture(kPng), 50), &ctx);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server saw the deadline itself and freed the worker (50 tokens would take 10 s).
  EXPECT_TRUE(WaitForMetric(server, "moondream_requests_total",
                            {"code=\"DEADLINE_EXCEEDED\"", "method=\"Caption\""}, 1, seconds(2)));
  EXPECT_TRUE(WaitForMetric(server, "moondream_requests_in_flight", {}, 0, seconds(1)));
}

TEST(LimitsTest, ClientCancelStopsWork) {
  ServerProcess server({"--test-model-token-delay-ms=100"});
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto stub = server.Stub();
  grpc::ClientContext ctx;
  auto reader = stub->StreamCaption(&ctx, CaptionOf(ReadFixture(kPng), 200));
  v1::TextChunk chunk;
  ASSERT_TRUE(reader->Read(&chunk));
  ASSERT_TRUE(reader->Read(&chunk));
  ctx.TryCancel();
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitForMetric(server, "moondream_requests_total",
                            {"code=\"CANCELLED\"", "method=\"StreamCaption\""}, 1, seconds(2)));
  EXPECT_TRUE(WaitForMetric(server, "moondream_requests_in_flight", {}, 0, seconds(1)));
  // No tokens were counted for the cancelled request, and none are generated later.
  const std::string before = HttpGet(server.metrics_address(), "/metrics");
  std::this_thread::sleep_for(milliseconds(500));
  const std::string after = HttpGet(server.metrics_address(), "/metrics");
  EXPECT_EQ(MetricValue(before, "moondream_generated_tokens_total"),
            MetricValue(after, "moondream_generated_tokens_total"));
  EXPECT_EQ(MetricValue(after, "moondream_kv_cache_bytes"), 0);
}

TEST(LimitsTest, SigtermDrainsAcceptedRequests) {
  ServerProcess server({"--max-concurrency=1", "--test-model-token-delay-ms=100"});
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto stub = server.Stub();
  const v1::CaptionRequest slow = CaptionOf(ReadFixture(kPng), 5);
  std::vector<std::unique_ptr<PendingCaption>> accepted;
  for (int i = 0; i < 3; ++i) {
    accepted.push_back(std::make_unique<PendingCaption>());
    accepted.back()->Start(stub.get(), slow);
  }
  ASSERT_TRUE(WaitForMetric(server, "moondream_queue_depth", {}, 2, seconds(5)));
  server.Signal(SIGTERM);
  ASSERT_TRUE(server.WaitForLog("event=draining", seconds(5)));
  std::this_thread::sleep_for(milliseconds(200));  // the line is logged just before Drain()

  grpc::ClientContext late_ctx;
  const grpc::Status late = CallCaption(stub.get(), slow, &late_ctx);
  EXPECT_EQ(late.error_code(), grpc::StatusCode::UNAVAILABLE) << late.error_message();
  for (auto& pending : accepted) {
    const grpc::Status status = pending->status.get();
    EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  }
  EXPECT_EQ(server.WaitExit(seconds(10)), 0) << server.Logs();
}

class BadInputTest : public ::testing::Test {
 protected:
  static constexpr int kMaxMessageBytes = 1 << 20;
  static void SetUpTestSuite() {
    server_ = new ServerProcess({"--max-message-bytes=" + std::to_string(kMaxMessageBytes)});
  }
  static void TearDownTestSuite() { delete server_; }
  void SetUp() override {
    ASSERT_TRUE(server_->serving()) << server_->Logs();
    stub_ = server_->Stub();
  }
  void TearDown() override {  // the server keeps serving after every bad request
    grpc::ClientContext ctx;
    const grpc::Status status = CallCaption(stub_.get(), CaptionOf(ReadFixture(kPng)), &ctx);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  void ExpectCaptionError(const std::string& bytes, grpc::StatusCode code, const std::string& word) {
    grpc::ClientContext ctx;
    const grpc::Status status = CallCaption(stub_.get(), CaptionOf(bytes), &ctx);
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_NE(status.error_message().find(word), std::string::npos) << status.error_message();
  }

  static ServerProcess* server_;
  std::unique_ptr<v1::Moondream::Stub> stub_;
};

ServerProcess* BadInputTest::server_ = nullptr;

TEST_F(BadInputTest, EmptyImage) {
  ExpectCaptionError("", grpc::StatusCode::INVALID_ARGUMENT, "image");
}

TEST_F(BadInputTest, TruncatedJpeg) {
  const std::string jpeg = ReadFixture(kJpeg);
  ExpectCaptionError(jpeg.substr(0, jpeg.size() / 2), grpc::StatusCode::INVALID_ARGUMENT, "JPEG");
}

TEST_F(BadInputTest, CorruptPng) {
  std::string png = ReadFixture(kPng);
  for (size_t i = 64; i < png.size(); i += 7) png[i] = static_cast<char>(png[i] ^ 0x5a);
  ExpectCaptionError(png, grpc::StatusCode::INVALID_ARGUMENT, "PNG");
}

TEST_F(BadInputTest, NonImageBytes) {
  ExpectCaptionError("this is plain text, not an image", grpc::StatusCode::INVALID_ARGUMENT, "image");
}

TEST_F(BadInputTest, OversizeMessageNamesTheLimit) {
  ExpectCaptionError(std::string(kMaxMessageBytes + 1024, 'x'), grpc::StatusCode::RESOURCE_EXHAUSTED,
                     std::to_string(kMaxMessageBytes));
}

TEST_F(BadInputTest, EmptyQuestion) {
  v1::QueryRequest request;
  request.mutable_image()->set_data(ReadFixture(kPng));
  v1::QueryResponse response;
  grpc::ClientContext ctx;
  const grpc::Status status = stub_->Query(&ctx, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("question"), std::string::npos) << status.error_message();
}

TEST_F(BadInputTest, MaxTokensOutOfRange) {
  v1::CaptionRequest request = CaptionOf(ReadFixture(kPng), 5000);
  grpc::ClientContext ctx;
  const grpc::Status status = CallCaption(stub_.get(), request, &ctx);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("max_tokens"), std::string::npos) << status.error_message();
}

}  // namespace
}  // namespace moondream::testing
