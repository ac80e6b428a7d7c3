// Command-line configuration: absl flags, each also settable through the environment
// variable MOONDREAM_<FLAG_UPPER> (e.g. MOONDREAM_MAX_QUEUE=8); a flag on the command
// line wins. Flag names accept dashes or underscores (--max-queue, --max_queue).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/log.h"
#include "server/tls.h"

namespace moondream::server {

struct ServerOptions {
  std::string listen;          // host:port of the gRPC server; port 0 picks one
  std::string metrics_listen;  // host:port of /metrics, /healthz, /readyz; empty disables it
  std::string http_listen;     // host:port of the OpenAI-compatible API (and the above)
  std::string api_key;         // required as "Bearer <key>" on /v1 and gRPC when not empty
  TlsFiles tls;  // gRPC and --http-listen (not --metrics-listen); off when tls.cert is empty
  absl::Duration http_read_timeout;  // whole request; each write; keep-alive idle
  int http_max_connections = 0;      // per HTTP listener
  absl::Duration stall_timeout;      // liveness: a worker this far past a deadline is stuck
  size_t http_body_bytes = 0;        // one body: a base64 image of max_message_bytes + JSON
  int64_t http_memory_bytes = 0;     // bodies of all HTTP requests being received at once
  int max_message_bytes = 0;   // largest request message accepted
  int64_t grpc_memory_bytes = 0;   // grpc::ResourceQuota of the server
  int max_concurrent_streams = 0;  // GRPC_ARG_MAX_CONCURRENT_STREAMS (per connection)
  int grpc_max_connections = 0;    // open gRPC connections; more are closed at accept
  absl::Duration drain_grace;  // SIGTERM: time in-flight requests get to finish
  absl::Duration keepalive_time;
  absl::Duration keepalive_timeout;
  bool keepalive_permit_without_calls = false;
  absl::Duration keepalive_min_ping_interval;  // faster client pings get GOAWAY
  absl::Duration max_connection_idle;          // GOAWAY after this long without calls
  absl::Duration max_connection_age;           // infinite = never
  absl::Duration max_connection_age_grace;
  LogLevel log_level = LogLevel::kInfo;
  bool reflection = true;      // serve grpc.reflection (grpcurl list/describe)
};

struct Options {
  ServerOptions server;
  EngineOptions engine;
};

// Applies the environment, parses argv (exits on unknown flags or --help) and validates.
absl::StatusOr<Options> ParseOptions(int argc, char** argv);

// The effective configuration as one structured log line (event=config).
void LogOptions(const Options& options);

}  // namespace moondream::server
