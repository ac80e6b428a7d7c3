// Operations surface of the real binary: health (Check, Watch), reflection (C++ v1alpha
// client and tools/grpc-reflect), and /metrics validated by promtool.
#include <signal.h>

#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "reflection.grpc.pb.h"
#include "tests/server/server_process.h"

namespace moondream::testing {
namespace {

namespace health = grpc::health::v1;
namespace reflection = grpc::reflection::v1alpha;
using std::chrono::seconds;

const char* const kServices[] = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                                 "moondream.v1.Moondream"};

health::HealthCheckResponse::ServingStatus Check(ServerProcess& server, const std::string& service,
                                                 grpc::StatusCode* code) {
  auto stub = health::Health::NewStub(server.Channel());
  health::HealthCheckRequest request;
  request.set_service(service);
  health::HealthCheckResponse response;
  grpc::ClientContext ctx;
  *code = stub->Check(&ctx, request, &response).error_code();
  return response.status();
}

TEST(HealthTest, CheckReportsServing) {
  ServerProcess server;
  ASSERT_TRUE(server.serving()) << server.Logs();
  grpc::StatusCode code;
  EXPECT_EQ(Check(server, "", &code), health::HealthCheckResponse::SERVING);
  EXPECT_EQ(code, grpc::StatusCode::OK);
  EXPECT_EQ(Check(server, "moondream.v1.Moondream", &code), health::HealthCheckResponse::SERVING);
  Check(server, "no.such.Service", &code);
  EXPECT_EQ(code, grpc::StatusCode::NOT_FOUND);
}

TEST(HealthTest, WatchSeesNotServingOnSigterm) {
  ServerProcess server;
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto stub = health::Health::NewStub(server.Channel());
  health::HealthCheckRequest request;
  request.set_service("moondream.v1.Moondream");
  grpc::ClientContext ctx;
  auto watch = stub->Watch(&ctx, request);
  health::HealthCheckResponse response;
  ASSERT_TRUE(watch->Read(&response));
  EXPECT_EQ(response.status(), health::HealthCheckResponse::SERVING);
  server.Signal(SIGTERM);
  ASSERT_TRUE(watch->Read(&response));
  EXPECT_EQ(response.status(), health::HealthCheckResponse::NOT_SERVING);
  ctx.TryCancel();
  EXPECT_EQ(server.WaitExit(seconds(10)), 0) << server.Logs();
}

// One reflection request/response on a fresh stream.
reflection::ServerReflectionResponse Reflect(ServerProcess& server,
                                             const reflection::ServerReflectionRequest& request) {
  auto stub = reflection::ServerReflection::NewStub(server.Channel());
  grpc::ClientContext ctx;
  auto stream = stub->ServerReflectionInfo(&ctx);
  reflection::ServerReflectionResponse response;
  EXPECT_TRUE(stream->Write(request));
  stream->WritesDone();
  EXPECT_TRUE(stream->Read(&response));
  stream->Finish();
  return response;
}

TEST(ReflectionTest, ListsAndResolvesEveryService) {
  ServerProcess server;
  ASSERT_TRUE(server.serving()) << server.Logs();
  reflection::ServerReflectionRequest list;
  list.set_list_services("");
  std::set<std::string> listed;
  const reflection::ServerReflectionResponse services = Reflect(server, list);
  for (const auto& s : services.list_services_response().service()) listed.insert(s.name());
  for (const char* service : kServices) {
    EXPECT_TRUE(listed.count(service)) << service;
    reflection::ServerReflectionRequest resolve;
    resolve.set_file_containing_symbol(service);
    const reflection::ServerReflectionResponse response = Reflect(server, resolve);
    ASSERT_FALSE(response.has_error_response()) << service << ": " << response.error_response().error_message();
    bool defines_service = false;
    for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
      google::protobuf::FileDescriptorProto file;
      ASSERT_TRUE(file.ParseFromString(bytes));
      for (const auto& s : file.service()) {
        defines_service |= file.package() + "." + s.name() == service;
      }
    }
    EXPECT_TRUE(defines_service) << service;
  }
}

TEST(ReflectionTest, GrpcReflectToolListsDescribesAndCalls) {
  ServerProcess server;
  ASSERT_TRUE(server.serving()) << server.Logs();
  const std::string tool = std::string(MOONDREAM_SOURCE_DIR) + "/tools/grpc-reflect/grpc-reflect -plaintext " +
                           server.address() + " ";
  std::string out;
  ASSERT_EQ(RunCommand(tool + "list", "", &out), 0) << out;
  for (const char* service : kServices) EXPECT_NE(out.find(service), std::string::npos) << out;
  ASSERT_EQ(RunCommand(tool + "describe grpc.health.v1.Health", "", &out), 0) << out;
  EXPECT_NE(out.find("rpc Watch ( .grpc.health.v1.HealthCheckRequest ) returns ( stream "),
            std::string::npos) << out;
  ASSERT_EQ(RunCommand(tool + "-d '{}' grpc.health.v1.Health/Check", "", &out), 0) << out;
  EXPECT_NE(out.find("\"SERVING\""), std::string::npos) << out;

  // A call with the request JSON on stdin (-d @), image bytes base64-encoded.
  const std::string png = ReadFixture("images/img4_64x48.png");
  std::string json = "{\"image\": {\"data\": \"";
  {
    static const char* kB64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; i + 2 < png.size(); i += 3) {
      const unsigned v = (uint8_t(png[i]) << 16) | (uint8_t(png[i + 1]) << 8) | uint8_t(png[i + 2]);
      for (int k = 3; k >= 0; --k) json += kB64[(v >> (6 * k)) & 63];
    }
    if (i < png.size()) {
      const unsigned v = (uint8_t(png[i]) << 16) | (i + 1 < png.size() ? uint8_t(png[i + 1]) << 8 : 0);
      json += kB64[(v >> 18) & 63];
      json += kB64[(v >> 12) & 63];
      json += i + 1 < png.size() ? kB64[(v >> 6) & 63] : '=';
      json += '=';
    }
  }
  json += "\"}, \"length\": \"CAPTION_LENGTH_SHORT\"}";
  ASSERT_EQ(RunCommand(tool + "-d @ moondream.v1.Moondream/Caption", json, &out), 0) << out;
  EXPECT_NE(out.find("64×48"), std::string::npos) << out;
  ASSERT_EQ(RunCommand(tool + "-d @ moondream.v1.Moondream/StreamCaption", json, &out), 0) << out;
  EXPECT_NE(out.find("\"final\": true"), std::string::npos) << out;

  EXPECT_EQ(RunCommand(tool + "-d '{\"name\": \"nope\"}' moondream.v1.Moondream/GetModel", "", &out), 1);
  EXPECT_NE(out.find("Code: NOT_FOUND"), std::string::npos) << out;
  EXPECT_NE(out.find("Message: unknown model \"nope\""), std::string::npos) << out;
}

// --reflection=false: reflection answers UNIMPLEMENTED, health and the API still work.
TEST(ReflectionTest, FlagTurnsReflectionOff) {
  ServerProcess server({"--reflection=false"});
  ASSERT_TRUE(server.serving()) << server.Logs();
  const std::string tool = std::string(MOONDREAM_SOURCE_DIR) + "/tools/grpc-reflect/grpc-reflect -plaintext " +
                           server.address() + " ";
  std::string out;
  EXPECT_NE(RunCommand(tool + "list", "", &out), 0) << out;
  EXPECT_NE(out.find("UNIMPLEMENTED"), std::string::npos) << out;
  v1::GetModelRequest request;
  v1::ModelInfo info;
  grpc::ClientContext ctx;
  EXPECT_TRUE(server.Stub()->GetModel(&ctx, request, &info).ok());
}

TEST(ConfigTest, EnvironmentSetsFlagsAndTheCommandLineWins) {
  ServerProcess server({"--max-concurrency=2"},
                       {"MOONDREAM_MAX_QUEUE=3", "MOONDREAM_DRAIN_GRACE=7s", "MOONDREAM_MAX_CONCURRENCY=4"});
  ASSERT_TRUE(server.serving()) << server.Logs();
  const std::string logs = server.Logs();
  const std::string config = logs.substr(logs.find("event=config"));
  EXPECT_EQ(LogField(config, "max_queue"), "3") << config;
  EXPECT_EQ(LogField(config, "drain_grace"), "7s") << config;
  EXPECT_EQ(LogField(config, "max_concurrency"), "2") << config;
}

TEST(ConfigTest, ModelLoadFailureExitsWithAClearError) {
  ServerProcess server({"--model=moondream2", "--model-dir=/nonexistent/moondream"});
  EXPECT_FALSE(server.serving());
  EXPECT_EQ(server.WaitExit(seconds(30)), 1) << server.Logs();
  EXPECT_NE(server.Logs().find("event=model_load_failed"), std::string::npos) << server.Logs();
}

// --cpu-isa (here from MOONDREAM_CPU_ISA) naming an ISA this CPU lacks stops the start with
// an error that names it and what the CPU does run; a runnable one is logged.
TEST(ConfigTest, CpuIsaTheCpuLacksExitsWithAClearError) {
#if defined(__x86_64__)
  const std::string foreign = "neon-dot";
#else
  const std::string foreign = "avx2";
#endif
  ServerProcess refused({}, {"MOONDREAM_CPU_ISA=" + foreign});
  EXPECT_FALSE(refused.serving());
  EXPECT_EQ(refused.WaitExit(seconds(30)), 1) << refused.Logs();
  EXPECT_NE(refused.Logs().find("this CPU lacks " + foreign), std::string::npos) << refused.Logs();
  EXPECT_NE(refused.Logs().find("scalar"), std::string::npos) << refused.Logs();

  ServerProcess scalar({"--cpu-isa=scalar"});
  ASSERT_TRUE(scalar.serving()) << scalar.Logs();
  EXPECT_NE(scalar.Logs().find("event=cpu_kernels cpu_isa=scalar"), std::string::npos)
      << scalar.Logs();
}

TEST(ConfigTest, SigtermDuringModelLoadExitsZeroAtOnce) {
  ServerProcess server({"--test-model-load-delay-ms=60000"}, {}, "event=listening");
  ASSERT_TRUE(server.serving()) << server.Logs();
  const auto start = std::chrono::steady_clock::now();
  server.Signal(SIGTERM);
  EXPECT_EQ(server.WaitExit(seconds(10)), 0) << server.Logs();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));
  EXPECT_NE(server.Logs().find("during=model_load"), std::string::npos) << server.Logs();
  EXPECT_EQ(server.Logs().find("event=serving"), std::string::npos) << server.Logs();
}

TEST(MetricsTest, ScrapeHasEverySeriesAndPassesPromtool) {
  ServerProcess server;
  ASSERT_TRUE(server.serving()) << server.Logs();
  auto stub = server.Stub();
  v1::CaptionRequest caption;
  caption.mutable_image()->set_data(ReadFixture("images/img4_64x48.png"));
  v1::CaptionResponse response;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub->Caption(&ctx, caption, &response).ok());
  v1::GetModelRequest unknown;
  unknown.set_name("nope");
  v1::ModelInfo info;
  grpc::ClientContext unknown_ctx;
  ASSERT_FALSE(stub->GetModel(&unknown_ctx, unknown, &info).ok());

  const std::string scrape = HttpGet(server.metrics_address(), "/metrics");
  EXPECT_EQ(MetricValue(scrape, "moondream_requests_total",
                        {"method=\"Caption\"", "model=\"test\"", "code=\"OK\""}), 1) << scrape;
  EXPECT_EQ(MetricValue(scrape, "moondream_requests_total",
                        {"method=\"GetModel\"", "model=\"unknown\"", "code=\"NOT_FOUND\""}), 1);
  EXPECT_EQ(MetricValue(scrape, "moondream_request_duration_seconds_count", {"method=\"Caption\""}), 1);
  for (const char* stage : {"queue", "image_decode", "vision_encode", "prefill", "decode",
                            "time_to_first_token", "total"}) {
    EXPECT_EQ(MetricValue(scrape, "moondream_stage_duration_seconds_count",
                          {"model=\"test\"", "precision=\"none\"", "device=\"cpu\"",
                           "stage=\"" + std::string(stage) + "\""}), 1) << stage;
  }
  EXPECT_EQ(MetricValue(scrape, "moondream_generated_tokens_total", {"model=\"test\""}),
            response.usage().generated_tokens());
  EXPECT_EQ(MetricValue(scrape, "moondream_decode_tokens_per_second_count", {"model=\"test\""}), 1);
  for (const char* gauge : {"moondream_requests_in_flight", "moondream_queue_depth",
                            "moondream_image_cache_bytes", "moondream_image_cache_entries",
                            "moondream_kv_cache_bytes"}) {
    EXPECT_EQ(MetricValue(scrape, gauge), 0) << gauge;
  }
  EXPECT_GT(MetricValue(scrape, "moondream_process_resident_memory_bytes"), 1e6);
  EXPECT_EQ(MetricValue(scrape, "moondream_grpc_connections"), 1);  // the stub's
  EXPECT_EQ(MetricValue(scrape, "moondream_grpc_connections_refused_total"), 0);
  EXPECT_EQ(MetricValue(scrape, "moondream_model_info",
                        {"model=\"test\"", "precision=\"none\"", "device=\"cpu\""}), 1);
  EXPECT_GE(MetricValue(scrape, "moondream_model_parameters", {"model=\"test\""}), 0);
  EXPECT_GE(MetricValue(scrape, "moondream_model_load_seconds", {"model=\"test\""}), 0);

  std::string out;
  EXPECT_EQ(RunCommand("promtool check metrics", scrape, &out), 0) << out;
}

}  // namespace
}  // namespace moondream::testing
