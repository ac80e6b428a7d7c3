#include "server/options.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"

namespace {
const moondream::EngineOptions kEngineDefaults;
}  // namespace

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC listen address host:port (port 0 picks one)");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9464",
          "Operational HTTP (/metrics, /healthz, /readyz) on host:port; empty disables");
ABSL_FLAG(std::string, http_listen, "",
          "OpenAI-compatible HTTP API (/v1/chat/completions, /v1/models) plus /metrics, "
          "/healthz and /readyz on host:port (port 0 picks one); empty = off");
ABSL_FLAG(absl::Duration, http_read_timeout, absl::Seconds(30),
          "HTTP: a whole request (headers and body) must arrive within this, and a client "
          "must take each write within it; idle kept-alive connections close after it");
ABSL_FLAG(absl::Duration, stall_timeout, absl::Seconds(120),
          "Liveness: /healthz answers 503 while a worker is still running a request this long "
          "after its deadline (a stuck worker; kubelet then restarts the container)");
ABSL_FLAG(int, http_max_connections, 256,
          "HTTP: open connections per listener; beyond, 503 and close");
ABSL_FLAG(int64_t, http_memory_bytes, 64 << 20,
          "HTTP: request bodies being received at once, all connections together; beyond, "
          "429 before the body is read (memory budget, docs/memory.md)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC and --http-listen over TLS (with --tls-key); "
          "re-read on SIGHUP (HTTP) and when the file changes (gRPC)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require client certificates it signed (mutual TLS)");
ABSL_FLAG(std::string, api_key, "",
          "When set, gRPC calls and /v1 requests need \"Authorization: Bearer <key>\"; "
          "prefer the environment (MOONDREAM_API_KEY) to the command line");
ABSL_FLAG(bool, flatten_transparency, false,
          "Composite transparent images onto white before the model sees them (requests can "
          "override); off = drop alpha like the reference");
ABSL_FLAG(std::string, model, kEngineDefaults.model,
          "moondream2 (weights from --model-dir) or test (weight-free test model)");
ABSL_FLAG(std::string, model_dir, "", "Moondream2 checkpoint directory; empty = Hugging Face cache");
ABSL_FLAG(std::string, precision, "int8", "Weight precision: fp32, bf16, fp16 or int8");
ABSL_FLAG(bool, allow_any_revision, false,
          "Load a Hugging Face cache snapshot of another revision than 2025-01-09 (refused "
          "by default: later revisions change the tokenizer)");
ABSL_FLAG(std::vector<std::string>, variants, {},
          "Load several precisions, e.g. fp32,int8 (the first is the default); overrides --precision");
ABSL_FLAG(std::string, device, kEngineDefaults.device, "cpu or cuda");
ABSL_FLAG(std::vector<std::string>, int8_skip, {},
          "Glob patterns of layers kept in full precision under int8");
ABSL_FLAG(std::string, int8_smoothing, "on",
          "on|off: INT8 folds calibration-free per-channel shifts and scales (LayerNorm->linear, "
          "values->out-projection, keys<->queries) into the weights at load, so outlier "
          "channels do not crush the per-token activations or the int8 KV cache");
ABSL_FLAG(std::string, cpu_isa, "auto",
          "CPU kernels: auto|avx512vnni|avxvnni|avx2|neon-dot|neon|scalar; an ISA this CPU "
          "lacks fails the start");
ABSL_FLAG(int, threads, kEngineDefaults.threads, "Intra-op threads; 0 = hardware cores");
ABSL_FLAG(int, max_queue, kEngineDefaults.max_queue,
          "Queued requests beyond those running; more answer RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_concurrency, kEngineDefaults.max_concurrency, "Requests computed at once");
ABSL_FLAG(int64_t, max_message_bytes, 20 << 20,
          "Largest request message (bytes); larger ones answer RESOURCE_EXHAUSTED");
ABSL_FLAG(uint64_t, max_queued_bytes, kEngineDefaults.max_queued_bytes,
          "Image bytes of the queued and running requests together; a request past it answers "
          "RESOURCE_EXHAUSTED at once (0 = no cap)");
ABSL_FLAG(int64_t, grpc_memory_bytes, 64 << 20,
          "gRPC ResourceQuota: memory the transport may use for connections and message "
          "buffers (under pressure it reads less and refuses new calls)");
ABSL_FLAG(int, max_concurrent_streams, 32,
          "Most concurrent calls (HTTP/2 streams) per client connection");
ABSL_FLAG(int, grpc_max_connections, 16,
          "Most open gRPC client connections; one more is closed at accept (clients see "
          "UNAVAILABLE and retry)");
ABSL_FLAG(uint64_t, max_image_pixels, kEngineDefaults.max_image_pixels,
          "Largest decoded image (width x height); also the pixels all workers decode at once");
ABSL_FLAG(uint64_t, image_cache_bytes, kEngineDefaults.image_cache_bytes,
          "Memory budget of the EncodeImage cache (LRU)");
ABSL_FLAG(absl::Duration, image_cache_ttl, absl::Seconds(kEngineDefaults.image_cache_ttl_s),
          "Lifetime of an EncodeImage handle");
ABSL_FLAG(absl::Duration, max_deadline, absl::Seconds(kEngineDefaults.max_deadline_s),
          "Longest a request may run, whatever deadline the client sets (or none)");
ABSL_FLAG(absl::Duration, queue_timeout, absl::Seconds(kEngineDefaults.queue_timeout_s),
          "A request queued longer fails with UNAVAILABLE (overloaded; clients retry)");
ABSL_FLAG(absl::Duration, drain_grace, absl::Seconds(30),
          "On SIGTERM, time in-flight requests get to finish");
ABSL_FLAG(absl::Duration, keepalive_time, absl::Hours(2), "Server keepalive ping interval");
ABSL_FLAG(absl::Duration, keepalive_timeout, absl::Seconds(20), "Keepalive ping ack timeout");
ABSL_FLAG(bool, keepalive_permit_without_calls, false,
          "Allow client keepalive pings on connections without calls");
ABSL_FLAG(absl::Duration, keepalive_min_ping_interval, absl::Minutes(5),
          "Shortest client ping interval tolerated (faster clients get GOAWAY)");
ABSL_FLAG(absl::Duration, max_connection_idle, absl::Minutes(5),
          "Close gRPC connections without calls for this long (frees their "
          "--grpc-max-connections slot); inf = never");
ABSL_FLAG(absl::Duration, max_connection_age, absl::InfiniteDuration(),
          "Close connections after this age (spreads load behind L4 balancers); inf = never");
ABSL_FLAG(absl::Duration, max_connection_age_grace, absl::InfiniteDuration(),
          "Time calls get to finish on a connection closed for its age");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warn or error");
ABSL_FLAG(bool, reflection, true,
          "Serve gRPC server reflection (grpcurl list/describe); --reflection=false turns it off");
ABSL_FLAG(int, test_model_token_delay_ms, kEngineDefaults.test_model_token_delay_ms,
          "Per-token delay of the test model (tests of deadlines, cancellation, draining)");
ABSL_FLAG(int, test_model_stall_ms, kEngineDefaults.test_model_stall_ms,
          "The test model's image encode ignores deadlines this long (tests of the liveness "
          "probe)");
ABSL_FLAG(int, test_model_load_delay_ms, kEngineDefaults.test_model_load_delay_ms,
          "Load time of the test model (tests of signals during a model load)");

namespace moondream::server {
namespace {

// Every flag defined in this file may also come from MOONDREAM_<NAME_UPPER>.
absl::Status ApplyEnvironment() {
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!absl::EndsWith(flag->Filename(), "server/options.cc")) continue;
    const std::string env = "MOONDREAM_" + absl::AsciiStrToUpper(name);
    const char* value = std::getenv(env.c_str());
    if (value == nullptr) continue;
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(env + "=" + value + ": " + error);
    }
  }
  return absl::OkStatus();
}

// "--max-queue=4" -> "--max_queue=4" (absl flag names are identifiers).
std::vector<char*> NormalizeFlagNames(int argc, char** argv, std::vector<std::string>* storage) {
  storage->assign(argv, argv + argc);
  for (size_t i = 1; i < storage->size(); ++i) {
    std::string& arg = (*storage)[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    const size_t end = std::min(arg.find('='), arg.size());
    for (size_t j = arg.find_first_not_of('-'); j < end; ++j) {
      if (arg[j] == '-') arg[j] = '_';
    }
  }
  std::vector<char*> args;
  for (std::string& arg : *storage) args.push_back(arg.data());
  return args;
}

EngineOptions EngineFromFlags() {
  EngineOptions e;
  e.model = absl::GetFlag(FLAGS_model);
  e.model_dir = absl::GetFlag(FLAGS_model_dir);
  e.allow_any_revision = absl::GetFlag(FLAGS_allow_any_revision);
  e.variants = absl::GetFlag(FLAGS_variants);
  if (e.variants.empty()) e.variants = {absl::GetFlag(FLAGS_precision)};
  e.device = absl::GetFlag(FLAGS_device);
  e.int8_skip = absl::GetFlag(FLAGS_int8_skip);
  e.int8_smoothing = absl::GetFlag(FLAGS_int8_smoothing) != "off";
  e.cpu_isa = absl::GetFlag(FLAGS_cpu_isa);
  e.threads = absl::GetFlag(FLAGS_threads);
  e.max_queue = absl::GetFlag(FLAGS_max_queue);
  e.max_concurrency = absl::GetFlag(FLAGS_max_concurrency);
  e.image_cache_bytes = absl::GetFlag(FLAGS_image_cache_bytes);
  e.max_queued_bytes = absl::GetFlag(FLAGS_max_queued_bytes);
  e.image_cache_ttl_s = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_image_cache_ttl));
  e.max_deadline_s = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_max_deadline));
  e.queue_timeout_s = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_queue_timeout));
  e.max_image_pixels = absl::GetFlag(FLAGS_max_image_pixels);
  e.flatten_transparency = absl::GetFlag(FLAGS_flatten_transparency);
  e.test_model_token_delay_ms = absl::GetFlag(FLAGS_test_model_token_delay_ms);
  e.test_model_load_delay_ms = absl::GetFlag(FLAGS_test_model_load_delay_ms);
  e.test_model_stall_ms = absl::GetFlag(FLAGS_test_model_stall_ms);
  return e;  // Engine::Create validates model, precision and device
}

absl::StatusOr<ServerOptions> ServerFromFlags() {
  ServerOptions o;
  o.listen = absl::GetFlag(FLAGS_listen);
  o.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  o.http_listen = absl::GetFlag(FLAGS_http_listen);
  o.api_key = absl::GetFlag(FLAGS_api_key);
  o.tls = {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
           absl::GetFlag(FLAGS_tls_client_ca)};
  if (o.tls.cert.empty() != o.tls.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!o.tls.client_ca.empty() && o.tls.cert.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  }
  o.http_read_timeout = absl::GetFlag(FLAGS_http_read_timeout);
  if (o.http_read_timeout < absl::Seconds(1)) {
    return absl::InvalidArgumentError("--http-read-timeout=" +
                                      absl::FormatDuration(o.http_read_timeout) +
                                      ": expected at least 1s");
  }
  o.stall_timeout = absl::GetFlag(FLAGS_stall_timeout);
  if (o.stall_timeout < absl::Seconds(1)) {
    return absl::InvalidArgumentError("--stall-timeout=" + absl::FormatDuration(o.stall_timeout) +
                                      ": expected at least 1s");
  }
  o.http_max_connections = absl::GetFlag(FLAGS_http_max_connections);
  if (o.http_max_connections <= 0) {
    return absl::InvalidArgumentError("--http-max-connections=" +
                                      std::to_string(o.http_max_connections) + ": expected >= 1");
  }
  const int64_t max_message = absl::GetFlag(FLAGS_max_message_bytes);
  if (max_message <= 0 || max_message > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError("--max-message-bytes=" + std::to_string(max_message) +
                                      ": expected 1..2147483647");
  }
  o.max_message_bytes = static_cast<int>(max_message);
  // A body carries the image base64-encoded (4/3 of its bytes) plus the JSON around it.
  constexpr size_t kJsonOverheadBytes = 64 << 10;
  o.http_body_bytes = size_t(o.max_message_bytes) / 3 * 4 + kJsonOverheadBytes;
  o.http_memory_bytes = absl::GetFlag(FLAGS_http_memory_bytes);
  if (o.http_memory_bytes < int64_t(o.http_body_bytes)) {
    return absl::InvalidArgumentError(
        "--http-memory-bytes=" + std::to_string(o.http_memory_bytes) + " is below one request body (" +
        std::to_string(o.http_body_bytes) + " bytes for --max-message-bytes): raise it");
  }
  o.grpc_memory_bytes = absl::GetFlag(FLAGS_grpc_memory_bytes);
  if (o.grpc_memory_bytes <= 0) {
    return absl::InvalidArgumentError("--grpc-memory-bytes=" + std::to_string(o.grpc_memory_bytes) +
                                      ": expected a positive byte count");
  }
  o.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  if (o.max_concurrent_streams <= 0) {
    return absl::InvalidArgumentError("--max-concurrent-streams=" +
                                      std::to_string(o.max_concurrent_streams) + ": expected >= 1");
  }
  o.grpc_max_connections = absl::GetFlag(FLAGS_grpc_max_connections);
  if (o.grpc_max_connections <= 0) {
    return absl::InvalidArgumentError("--grpc-max-connections=" +
                                      std::to_string(o.grpc_max_connections) + ": expected >= 1");
  }
  o.drain_grace = absl::GetFlag(FLAGS_drain_grace);
  o.keepalive_time = absl::GetFlag(FLAGS_keepalive_time);
  o.keepalive_timeout = absl::GetFlag(FLAGS_keepalive_timeout);
  o.keepalive_permit_without_calls = absl::GetFlag(FLAGS_keepalive_permit_without_calls);
  o.keepalive_min_ping_interval = absl::GetFlag(FLAGS_keepalive_min_ping_interval);
  o.max_connection_idle = absl::GetFlag(FLAGS_max_connection_idle);
  o.max_connection_age = absl::GetFlag(FLAGS_max_connection_age);
  o.max_connection_age_grace = absl::GetFlag(FLAGS_max_connection_age_grace);
  o.reflection = absl::GetFlag(FLAGS_reflection);
  const std::string smoothing = absl::GetFlag(FLAGS_int8_smoothing);
  if (smoothing != "on" && smoothing != "off") {
    return absl::InvalidArgumentError("--int8-smoothing=" + smoothing + ": expected on or off");
  }
  const std::string level = absl::GetFlag(FLAGS_log_level);
  if (!ParseLogLevel(level, &o.log_level)) {
    return absl::InvalidArgumentError("--log-level=" + level + ": expected debug, info, warn or error");
  }
  return o;
}

}  // namespace

absl::StatusOr<Options> ParseOptions(int argc, char** argv) {
  // --help lists the flags defined in this file (absl's default looks for main.cc).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "server/options");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "moondream-server: gRPC inference server for Moondream2.\n"
      "Every flag may also be set as MOONDREAM_<FLAG_UPPER>; the command line wins.");
  if (absl::Status s = ApplyEnvironment(); !s.ok()) return s;
  std::vector<std::string> storage;
  std::vector<char*> args = NormalizeFlagNames(argc, argv, &storage);
  const std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (positional.size() > 1) {
    return absl::InvalidArgumentError(std::string("unexpected argument: ") + positional[1]);
  }
  Options options;
  absl::StatusOr<ServerOptions> server = ServerFromFlags();
  if (!server.ok()) return server.status();
  options.server = *std::move(server);
  options.engine = EngineFromFlags();
  return options;
}

void LogOptions(const Options& options) {
  const ServerOptions& s = options.server;
  const EngineOptions& e = options.engine;
  Log(LogLevel::kInfo, "config",
      {{"listen", s.listen}, {"metrics_listen", s.metrics_listen},
       {"http_listen", s.http_listen}, {"api_key", s.api_key.empty() ? "unset" : "set"},
       {"tls", s.tls.enabled() ? (s.tls.client_ca.empty() ? "tls" : "mutual") : "off"},
       {"http_read_timeout", absl::FormatDuration(s.http_read_timeout)},
       {"http_max_connections", s.http_max_connections},
       {"stall_timeout", absl::FormatDuration(s.stall_timeout)},
       {"http_memory_bytes", s.http_memory_bytes},
       {"flatten_transparency", e.flatten_transparency}, {"model", e.model},
       {"model_dir", e.model_dir}, {"variants", absl::StrJoin(e.variants, ",")},
       {"device", e.device}, {"int8_skip", absl::StrJoin(e.int8_skip, ",")},
       {"int8_smoothing", e.int8_smoothing},
       {"cpu_isa", e.cpu_isa},
       {"threads", e.threads}, {"max_queue", e.max_queue},
       {"max_concurrency", e.max_concurrency}, {"max_message_bytes", s.max_message_bytes},
       {"max_queued_bytes", e.max_queued_bytes}, {"grpc_memory_bytes", s.grpc_memory_bytes},
       {"max_concurrent_streams", s.max_concurrent_streams},
       {"grpc_max_connections", s.grpc_max_connections},
       {"max_image_pixels", e.max_image_pixels}, {"image_cache_bytes", e.image_cache_bytes},
       {"image_cache_ttl_s", e.image_cache_ttl_s}, {"max_deadline_s", e.max_deadline_s},
       {"queue_timeout_s", e.queue_timeout_s},
       {"drain_grace", absl::FormatDuration(s.drain_grace)},
       {"keepalive_time", absl::FormatDuration(s.keepalive_time)},
       {"keepalive_timeout", absl::FormatDuration(s.keepalive_timeout)},
       {"keepalive_permit_without_calls", s.keepalive_permit_without_calls},
       {"keepalive_min_ping_interval", absl::FormatDuration(s.keepalive_min_ping_interval)},
       {"max_connection_idle", absl::FormatDuration(s.max_connection_idle)},
       {"max_connection_age", absl::FormatDuration(s.max_connection_age)},
       {"max_connection_age_grace", absl::FormatDuration(s.max_connection_age_grace)},
       {"reflection", s.reflection},
       {"test_model_token_delay_ms", e.test_model_token_delay_ms},
       {"test_model_load_delay_ms", e.test_model_load_delay_ms},
       {"test_model_stall_ms", e.test_model_stall_ms}});
}

}  // namespace moondream::server
