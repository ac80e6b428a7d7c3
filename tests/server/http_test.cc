// The HTTP front's transport on the real binary: slow, idle and excess clients cannot
// block it, a client that hangs up cancels its request, 100-continue, pipelining and
// early 413; and the API key on gRPC. Well-behaved requests go through curl (a real
// client); misbehaving ones through raw sockets, since no client library misbehaves on
// purpose. The OpenAI API itself is tested with the OpenAI SDK (tests/http).
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "tests/server/server_process.h"

namespace moondream::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

const std::vector<std::string> kHttp = {"--http-listen=127.0.0.1:0"};

std::vector<std::string> With(std::vector<std::string> args) {
  args.insert(args.end(), kHttp.begin(), kHttp.end());
  return args;
}

void Send(int fd, const std::string& data) { (void)!send(fd, data.data(), data.size(), MSG_NOSIGNAL); }

// Reads until the peer closes or `timeout` passes; what arrived.
std::string ReadUntilClosed(int fd, milliseconds timeout, bool* closed = nullptr) {
  std::string data;
  const auto end = Clock::now() + timeout;
  char buffer[4096];
  while (Clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    const int left = static_cast<int>(std::chrono::duration_cast<milliseconds>(end - Clock::now()).count());
    if (poll(&p, 1, std::max(left, 1)) <= 0) continue;
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) {
      if (closed) *closed = true;
      return data;
    }
    data.append(buffer, static_cast<size_t>(n));
  }
  if (closed) *closed = false;
  return data;
}

// curl's output: the body, then the status code on its own last line.
std::string Curl(const std::string& args, int* code) {
  std::string output;
  RunCommand("curl -s -S --max-time 10 -w '\\n%{http_code}' " + args, "", &output);
  const size_t newline = output.rfind('\n');
  *code = newline == std::string::npos ? 0 : std::atoi(output.c_str() + newline + 1);
  return newline == std::string::npos ? output : output.substr(0, newline);
}

std::string ChatBody(const std::string& text, int max_tokens, bool stream = false) {
  const std::string image = absl::Base64Escape(ReadFixture("images/img4_64x48.png"));
  return std::string("{\"model\":\"test\",\"max_tokens\":") + std::to_string(max_tokens) +
         (stream ? ",\"stream\":true" : "") +
         ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"" + text +
         "\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64," + image +
         "\"}}]}]}";
}

std::string PostRequest(const std::string& body) {
  return "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
         "Connection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

TEST(HttpTransportTest, SlowAndIdleClientsNeitherBlockOthersNorStayForever) {
  ServerProcess server(With({"--http-read-timeout=4s"}));
  ASSERT_TRUE(server.serving()) << server.Logs();
  // Eight clients trickle a header byte every 300 ms (each recv resets no timer: the
  // whole request has 4 s), four connect and send nothing.
  std::atomic<bool> stop{false};
  std::vector<int> trickling, idle;
  for (int i = 0; i < 8; ++i) trickling.push_back(ConnectTo(server.http_address()));
  for (int i = 0; i < 4; ++i) idle.push_back(ConnectTo(server.http_address()));
  std::thread trickle([&] {
    const std::string header = "GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaa";
    for (size_t i = 0; i < header.size() && !stop; ++i) {
      for (int fd : trickling) Send(fd, header.substr(i, 1));
      std::this_thread::sleep_for(milliseconds(300));
    }
  });
  // Meanwhile a normal client is answered at once, API and metrics alike.
  const auto start = Clock::now();
  int code = 0;
  EXPECT_EQ(Curl("http://" + server.http_address() + "/readyz", &code), "ready\n");
  EXPECT_EQ(code, 200);
  Curl(" -o /dev/null http://" + server.http_address() + "/metrics", &code);
  EXPECT_EQ(code, 200);
  EXPECT_LT(Clock::now() - start, seconds(2)) << "blocked until the slow clients' timeout";
  // Every slow and idle connection is closed by the server within its 4 s (+ slack).
  for (int fd : trickling) {
    bool closed = false;
    ReadUntilClosed(fd, milliseconds(6000), &closed);
    EXPECT_TRUE(closed) << "a trickling client was still connected after 6 s";
  }
  for (int fd : idle) {
    bool closed = false;
    ReadUntilClosed(fd, milliseconds(1000), &closed);
    EXPECT_TRUE(closed) << "an idle client was still connected";
  }
  stop = true;
  trickle.join();
  for (int fd : trickling) close(fd);
  for (int fd : idle) close(fd);
}

TEST(HttpTransportTest, ConnectionsBeyondTheLimitGet503AndTheRestStillWork) {
  ServerProcess server(With({"--http-max-connections=3"}));
  ASSERT_TRUE(server.serving()) << server.Logs();
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) held.push_back(ConnectTo(server.http_address()));
  std::this_thread::sleep_for(milliseconds(200));  // accepted
  const int extra = ConnectTo(server.http_address());
  EXPECT_NE(ReadUntilClosed(extra, milliseconds(3000)).find("503"), std::string::npos);
  close(extra);
  close(held.back());  // a slot frees up
  held.pop_back();
  std::this_thread::sleep_for(milliseconds(200));
  int code = 0;
  EXPECT_EQ(Curl("http://" + server.http_address() + "/healthz", &code), "ok\n");
  for (int fd : held) close(fd);
}

TEST(HttpTransportTest, ClientThatHangsUpCancelsItsRequest) {
  ServerProcess server(With({"--test-model-token-delay-ms=200"}));
  ASSERT_TRUE(server.serving()) << server.Logs();
  for (const bool stream : {false, true}) {
    const int fd = ConnectTo(server.http_address());
    Send(fd, PostRequest(ChatBody("slow question", 100, stream)));
    ASSERT_TRUE(WaitForMetric(server, "moondream_requests_in_flight", {}, 1, seconds(5)));
    close(fd);  // 100 tokens would take 20 s
    const char* method = stream ? "method=\"StreamChatCompletions\"" : "method=\"ChatCompletions\"";
    EXPECT_TRUE(WaitForMetric(server, "moondream_requests_total",
                              {"transport=\"http\"", method, "code=\"CANCELLED\""}, 1, seconds(3)))
        << "stream=" << stream;
    EXPECT_TRUE(WaitForMetric(server, "moondream_requests_in_flight", {}, 0, seconds(3)));
  }
}

TEST(HttpTransportTest, ExpectContinuePipeliningAndEarly413) {
  ServerProcess server(With({"--max-message-bytes=100000"}));
  ASSERT_TRUE(server.serving()) << server.Logs();
  // curl waits up to 1 s for "100 Continue" before sending a body it announced.
  char path[] = "/tmp/moondream-http-body-XXXXXX";
  const int body_fd = mkstemp(path);
  const std::string body = ChatBody("what is it", 5);
  (void)!write(body_fd, body.data(), body.size());
  close(body_fd);
  std::string verbose;
  RunCommand("curl -sS -v -o /dev/null -H 'Expect: 100-continue' -H 'Content-Type: application/json' "
             "--data-binary @" + std::string(path) + " http://" + server.http_address() +
             "/v1/chat/completions", "", &verbose);
  unlink(path);
  EXPECT_NE(verbose.find("< HTTP/1.1 100 Continue"), std::string::npos) << verbose;
  EXPECT_NE(verbose.find("< HTTP/1.1 200 OK"), std::string::npos) << verbose;
  // Two pipelined requests on one connection are answered in order.
  int fd = ConnectTo(server.http_address());
  Send(fd, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  const std::string both = ReadUntilClosed(fd, milliseconds(3000));
  close(fd);
  EXPECT_LT(both.find("ok\n"), both.find("ready\n")) << both;
  // A body announced over the limit is refused before it is sent.
  fd = ConnectTo(server.http_address());
  Send(fd, "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000\r\n\r\n");
  const std::string refused = ReadUntilClosed(fd, milliseconds(3000));
  close(fd);
  EXPECT_EQ(refused.rfind("HTTP/1.1 413", 0), 0u) << refused;
  EXPECT_NE(refused.find("\"request_too_large\""), std::string::npos) << refused;
  // Bytes that are not HTTP get a 400.
  fd = ConnectTo(server.http_address());
  Send(fd, "HELLO THERE\r\n\r\n");
  EXPECT_EQ(ReadUntilClosed(fd, milliseconds(3000)).rfind("HTTP/1.1 400", 0), 0u);
  close(fd);
}

TEST(HttpTransportTest, BodiesInFlightShareOneBudget) {
  // One body may be 100000 / 3 * 4 + 64 KiB = 198868 bytes; two 150000-byte bodies do not
  // fit 200000 at once.
  ServerProcess server(With({"--max-message-bytes=100000", "--http-memory-bytes=200000"}));
  ASSERT_TRUE(server.serving()) << server.Logs();
  const std::string header =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 150000\r\n\r\n";
  const int slow = ConnectTo(server.http_address());
  Send(slow, header + std::string(1000, ' '));  // holds its 150000 while it trickles
  std::this_thread::sleep_for(milliseconds(300));
  int fd = ConnectTo(server.http_address());
  Send(fd, header);
  const std::string refused = ReadUntilClosed(fd, milliseconds(3000));
  close(fd);
  EXPECT_EQ(refused.rfind("HTTP/1.1 429", 0), 0u) << refused;
  EXPECT_NE(refused.find("--http-memory-bytes"), std::string::npos) << refused;
  close(slow);  // its reservation is returned
  std::this_thread::sleep_for(milliseconds(300));
  fd = ConnectTo(server.http_address());
  Send(fd, header + std::string(150000, ' '));
  const std::string answered = ReadUntilClosed(fd, milliseconds(3000));
  close(fd);
  EXPECT_EQ(answered.rfind("HTTP/1.1 400", 0), 0u) << answered;  // spaces are not JSON
  // A body without a length cannot be budgeted.
  fd = ConnectTo(server.http_address());
  Send(fd, "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
  EXPECT_EQ(ReadUntilClosed(fd, milliseconds(3000)).rfind("HTTP/1.1 411", 0), 0u);
  close(fd);
}

TEST(HttpTransportTest, DrainFinishesARunningStreamThenCloses) {
  ServerProcess server(With({"--test-model-token-delay-ms=100"}));
  ASSERT_TRUE(server.serving()) << server.Logs();
  const int fd = ConnectTo(server.http_address());
  Send(fd, PostRequest(ChatBody("drain me", 10, /*stream=*/true)));
  ASSERT_TRUE(WaitForMetric(server, "moondream_requests_in_flight", {}, 1, seconds(5)));
  server.Signal(SIGTERM);
  const std::string stream = ReadUntilClosed(fd, milliseconds(10000));
  close(fd);
  EXPECT_NE(stream.find("data: [DONE]"), std::string::npos) << stream;
  EXPECT_EQ(server.WaitExit(seconds(10)), 0) << server.Logs();
}

// Liveness is engine-aware: a worker still busy well past its request's deadline (here a
// test-model encode that ignores deadlines for 4 s, with 1 s deadlines) fails /healthz,
// which recovers once the worker is free; readiness is not affected.
TEST(HttpTransportTest, LivenessFailsWhileAWorkerIsStuckPastItsDeadline) {
  ServerProcess server(With({"--test-model-stall-ms=4000", "--max-deadline=1s", "--stall-timeout=1s"}));
  ASSERT_TRUE(server.serving()) << server.Logs();
  int code = 0;
  EXPECT_EQ(Curl("http://" + server.metrics_address() + "/healthz", &code), "ok\n");
  const int fd = ConnectTo(server.http_address());
  Send(fd, PostRequest(ChatBody("stuck", 5)));
  std::string body;
  const auto end = Clock::now() + seconds(4);
  while (Clock::now() < end) {
    body = Curl("http://" + server.metrics_address() + "/healthz", &code);
    if (code == 503) break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_EQ(code, 503);
  EXPECT_NE(body.find("--stall-timeout"), std::string::npos) << body;
  Curl("http://" + server.metrics_address() + "/readyz", &code);
  EXPECT_EQ(code, 200);
  EXPECT_NE(ReadUntilClosed(fd, milliseconds(8000)).find("HTTP/1.1 504"), std::string::npos);
  close(fd);
  EXPECT_EQ(Curl("http://" + server.metrics_address() + "/healthz", &code), "ok\n");
}

TEST(HttpTransportTest, ApiKeyGuardsGrpcAndHttpButNotHealth) {
  ServerProcess server(With({}), {"MOONDREAM_API_KEY=s3cret"});
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto stub = server.Stub();
  v1::ListModelsRequest request;
  v1::ListModelsResponse response;
  grpc::ClientContext anonymous;
  EXPECT_EQ(stub->ListModels(&anonymous, request, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext wrong;
  wrong.AddMetadata("authorization", "Bearer s3cre7");
  EXPECT_EQ(stub->ListModels(&wrong, request, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext right;
  right.AddMetadata("authorization", "Bearer s3cret");
  EXPECT_TRUE(stub->ListModels(&right, request, &response).ok());
  EXPECT_EQ(response.models_size(), 1);
  int code = 0;
  Curl("http://" + server.http_address() + "/v1/models", &code);
  EXPECT_EQ(code, 401);
  Curl("-H 'Authorization: Bearer s3cret' http://" + server.http_address() + "/v1/models", &code);
  EXPECT_EQ(code, 200);
  Curl("http://" + server.http_address() + "/readyz", &code);
  EXPECT_EQ(code, 200);
  EXPECT_EQ(server.Logs().find("s3cret"), std::string::npos) << "the key must not be logged";
}

}  // namespace
}  // namespace moondream::testing
