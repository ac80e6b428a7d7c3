// moondream-server: listens early (health NOT_SERVING), loads the models, serves;
// on SIGTERM/SIGINT goes NOT_SERVING, drains the engine and exits 0.
#include <signal.h>

#include <chrono>
#include <memory>

#include "engine/engine.h"
#include "engine/log.h"
#include "server/grpc_server.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/service.h"

namespace moondream::server {
namespace {

// Time calls get after the drain to send their last messages before being cancelled.
constexpr auto kShutdownTimeout = std::chrono::seconds(5);

// Blocks SIGTERM and SIGINT in this thread and every thread started after it, so
// that only WaitForSignal() sees them.
sigset_t BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

int WaitForSignal(const sigset_t& set) {
  int signal = 0;
  while (sigwait(&set, &signal) != 0) {
  }
  return signal;
}

int Fail(const char* event, const absl::Status& status) {
  Log(LogLevel::kError, event, {{"error", status.ToString()}});
  return 1;
}

void Drain(grpc::Server* server, Engine* engine, const ServerOptions& options, int signal) {
  Log(LogLevel::kInfo, "draining",
      {{"signal", signal}, {"grace", absl::FormatDuration(options.drain_grace)}});
  SetServing(server, false);
  engine->Drain(absl::ToChronoNanoseconds(options.drain_grace));
  server->Shutdown(std::chrono::system_clock::now() + kShutdownTimeout);
  server->Wait();
}

int Run(int argc, char** argv) {
  const sigset_t signals = BlockTerminationSignals();
  absl::StatusOr<Options> options = ParseOptions(argc, argv);
  if (!options.ok()) return Fail("bad_configuration", options.status());
  SetLogLevel(options->server.log_level);
  LogOptions(*options);

  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create(options->server.metrics_listen);
  if (!metrics.ok()) return Fail("metrics_failed", metrics.status());
  MoondreamService service(metrics->get());
  absl::StatusOr<StartedServer> grpc = StartGrpcServer(options->server, &service);
  if (!grpc.ok()) return Fail("listen_failed", grpc.status());
  const int metrics_port = (*metrics)->port();
  Log(LogLevel::kInfo, "listening",
      {{"address", grpc->address},
       {"metrics", metrics_port ? WithPort(options->server.metrics_listen, metrics_port) : ""}});

  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options->engine);
  if (!engine.ok()) {
    grpc->server->Shutdown();
    return Fail("model_load_failed", engine.status());
  }
  service.AttachEngine(engine->get());
  (*metrics)->AttachEngine(engine->get());
  SetServing(grpc->server.get(), true);
  Log(LogLevel::kInfo, "serving", {{"address", grpc->address}});

  Drain(grpc->server.get(), engine->get(), options->server, WaitForSignal(signals));
  metrics->reset();  // stop scrapes before the engine goes away
  Log(LogLevel::kInfo, "stopped");
  return 0;
}

}  // namespace
}  // namespace moondream::server

int main(int argc, char** argv) { return moondream::server::Run(argc, argv); }
