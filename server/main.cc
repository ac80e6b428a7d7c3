// moondream-server: listens early (gRPC health NOT_SERVING, /readyz 503), loads the
// models, serves gRPC and HTTP; on SIGTERM/SIGINT goes NOT_SERVING, drains the engine and
// exits 0. A signal while the
// models load ends the process at once with 0 (nothing is in flight; a load can take
// minutes and would otherwise run into the orchestrator's SIGKILL).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <thread>

#include "engine/engine.h"
#include "engine/log.h"
#include "engine/process_memory.h"
#include "server/grpc_server.h"
#include "server/http_server.h"
#include "server/http_service.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/service.h"

namespace moondream::server {
namespace {

// Bytes freed since the low point that make the heap trimmer release the arenas' memory.
constexpr uint64_t kTrimGrowthBytes = 32ull << 20;

// Time calls get after the drain to send their last messages before being cancelled.
constexpr auto kShutdownTimeout = std::chrono::seconds(5);

// SIGTERM/SIGINT (and SIGHUP: reload the TLS files) go through a handler into a pipe: a
// thread that a library starts before main() leaves them unblocked, so blocking them for
// sigwait() cannot stop the kernel from killing the process through that thread (which is
// what a signal during the load did).
int g_signal_pipe[2] = {-1, -1};

extern "C" void OnTerminationSignal(int signal) {
  const char byte = static_cast<char>(signal);
  const ssize_t written = write(g_signal_pipe[1], &byte, 1);  // async-signal-safe
  (void)written;
}

bool InstallSignalHandlers() {
  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0) return false;
  struct sigaction action = {};
  action.sa_handler = OnTerminationSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  return sigaction(SIGTERM, &action, nullptr) == 0 && sigaction(SIGINT, &action, nullptr) == 0 &&
         sigaction(SIGHUP, &action, nullptr) == 0;
}

// The next termination signal, waiting up to timeout_ms (-1: forever); 0 if none came.
// A SIGHUP on the way runs on_hangup.
int NextSignal(int timeout_ms, const std::function<void()>& on_hangup) {
  for (;;) {
    pollfd fd{g_signal_pipe[0], POLLIN, 0};
    char byte = 0;
    if (poll(&fd, 1, timeout_ms) <= 0 || read(g_signal_pipe[0], &byte, 1) != 1) return 0;
    if (byte != SIGHUP) return byte;
    on_hangup();
  }
}

int WaitForSignal(const std::function<void()>& on_hangup) {
  int signal = 0;
  while ((signal = NextSignal(-1, on_hangup)) == 0) {
  }
  return signal;
}

// Runs load() on another thread; a termination signal before it returns ends the process
// with 0.
template <typename F>
auto LoadOrExitOnSignal(F load, const std::function<void()>& on_hangup) -> decltype(load()) {
  std::atomic<bool> done{false};
  decltype(load()) result;
  std::thread loader([&] {
    result = load();
    done = true;
  });
  while (!done) {
    if (const int signal = NextSignal(50, on_hangup); signal != 0) {
      Log(LogLevel::kInfo, "stopped", {{"signal", signal}, {"during", "model_load"}});
      std::_Exit(0);
    }
  }
  loader.join();
  return result;
}

int Fail(const char* event, const absl::Status& status) {
  Log(LogLevel::kError, event, {{"error", status.ToString()}});
  return 1;
}

// The HTTP listeners: --http-listen (every route) and --metrics-listen (operational
// routes only); either may be off.
struct HttpListeners {
  std::unique_ptr<http::HttpServer> api, ops;

  void Shutdown() {
    const auto deadline = std::chrono::steady_clock::now() + kShutdownTimeout;
    if (api) api->Shutdown(deadline);
    if (ops) ops->Shutdown(deadline);
  }
};

absl::StatusOr<std::unique_ptr<http::HttpServer>> StartHttp(const std::string& listen,
                                                            const ServerOptions& options,
                                                            const TlsFiles& tls,
                                                            http::Handler handler) {
  if (listen.empty()) return nullptr;
  http::HttpServerOptions http_options;
  http_options.listen = listen;
  http_options.max_body_bytes = options.http_body_bytes;
  http_options.max_body_bytes_in_flight = static_cast<uint64_t>(options.http_memory_bytes);
  http_options.error_body = HttpService::ErrorBody;
  const auto timeout = std::chrono::seconds(absl::ToInt64Seconds(options.http_read_timeout));
  http_options.read_timeout = timeout;
  http_options.write_timeout = timeout;
  http_options.max_connections = options.http_max_connections;
  http_options.tls = tls;
  return http::HttpServer::Start(http_options, std::move(handler));
}

absl::StatusOr<HttpListeners> StartHttpListeners(const ServerOptions& options,
                                                 HttpService* service) {
  HttpListeners listeners;
  absl::StatusOr<std::unique_ptr<http::HttpServer>> api =
      StartHttp(options.http_listen, options, options.tls, service->ApiHandler());
  if (!api.ok()) return api.status();
  absl::StatusOr<std::unique_ptr<http::HttpServer>> ops =
      StartHttp(options.metrics_listen, options, TlsFiles{}, service->OpsHandler());
  if (!ops.ok()) return ops.status();
  listeners.api = *std::move(api);
  listeners.ops = *std::move(ops);
  return listeners;
}

// SIGHUP: the HTTP listener re-reads its certificate files (gRPC watches them itself).
void ReloadTls(const HttpListeners& http) {
  if (!http.api) return;
  const absl::Status reloaded = http.api->ReloadTls();
  if (reloaded.ok()) {
    Log(LogLevel::kInfo, "tls_reloaded");
  } else {
    Log(LogLevel::kError, "tls_reload_failed", {{"error", reloaded.ToString()}});
  }
}

std::string BoundAddress(const std::string& listen, const std::unique_ptr<http::HttpServer>& server) {
  return server ? WithPort(listen, server->port()) : "";
}

// Not ready first (gRPC health, /readyz), then the engine finishes its work, then the
// transports close.
void Drain(grpc::Server* server, ServingState* state, HttpListeners* http, Engine* engine,
           const ServerOptions& options, int signal) {
  Log(LogLevel::kInfo, "draining",
      {{"signal", signal}, {"grace", absl::FormatDuration(options.drain_grace)}});
  state->SetDraining();
  SetServing(server, false);
  engine->Drain(absl::ToChronoNanoseconds(options.drain_grace));
  http->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + kShutdownTimeout);
  server->Wait();
}

int Run(int argc, char** argv) {
  if (!InstallSignalHandlers()) return Fail("signal_setup_failed", absl::InternalError("pipe/sigaction"));
  absl::StatusOr<Options> options = ParseOptions(argc, argv);
  if (!options.ok()) return Fail("bad_configuration", options.status());
  SetLogLevel(options->server.log_level);
  LogOptions(*options);

  // Freed request buffers go back to the OS within half a second (docs/memory.md).
  const HeapTrimmer trimmer(std::chrono::milliseconds(500), kTrimGrowthBytes);
  Metrics metrics;
  ServingState state(&metrics, options->server.api_key);
  MoondreamService service(&state);
  HttpService http_service(
      &state, std::chrono::seconds(absl::ToInt64Seconds(options->server.stall_timeout)));
  absl::StatusOr<StartedServer> grpc = StartGrpcServer(options->server, &service);
  if (!grpc.ok()) return Fail("listen_failed", grpc.status());
  metrics.AttachConnections(grpc->connections);
  absl::StatusOr<HttpListeners> http = StartHttpListeners(options->server, &http_service);
  if (!http.ok()) {
    grpc->server->Shutdown();
    return Fail("listen_failed", http.status());
  }
  const std::function<void()> on_hangup = [&http] { ReloadTls(*http); };
  Log(LogLevel::kInfo, "listening",
      {{"address", grpc->address},
       {"metrics", BoundAddress(options->server.metrics_listen, http->ops)},
       {"http", BoundAddress(options->server.http_listen, http->api)}});

  absl::StatusOr<std::unique_ptr<Engine>> engine =
      LoadOrExitOnSignal([&] { return Engine::Create(options->engine); }, on_hangup);
  if (!engine.ok()) {
    grpc->server->Shutdown();
    return Fail("model_load_failed", engine.status());
  }
  state.AttachEngine(engine->get());
  metrics.AttachEngine(engine->get());
  SetServing(grpc->server.get(), true);
  Log(LogLevel::kInfo, "serving", {{"address", grpc->address}});

  Drain(grpc->server.get(), &state, &*http, engine->get(), options->server,
        WaitForSignal(on_hangup));
  metrics.AttachEngine(nullptr);  // the HTTP listeners are closed; detach before the engine goes
  Log(LogLevel::kInfo, "stopped");
  return 0;
}

}  // namespace
}  // namespace moondream::server

int main(int argc, char** argv) { return moondream::server::Run(argc, argv); }
