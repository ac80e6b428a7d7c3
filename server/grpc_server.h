// The gRPC server: the Moondream service, grpc.health.v1 (Check + Watch) and
// reflection (v1alpha) that resolves every service, health included.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "server/connection_limit.h"
#include "server/options.h"

namespace moondream::server {

struct StartedServer {
  std::unique_ptr<grpc::Server> server;
  std::string address;  // the listen address with the real port
  std::shared_ptr<ConnectionLimit> connections;  // --grpc-max-connections
};

// Listens on options.listen with health NOT_SERVING for every service.
absl::StatusOr<StartedServer> StartGrpcServer(const ServerOptions& options, grpc::Service* service);

// Flips health for "" (the whole server) and moondream.v1.Moondream.
void SetServing(grpc::Server* server, bool serving);

// "0.0.0.0:0" with port 8080 -> "0.0.0.0:8080" (also for [v6]:port addresses).
std::string WithPort(const std::string& address, int port);

}  // namespace moondream::server
