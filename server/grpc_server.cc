#include "server/grpc_server.h"

#include <dlfcn.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>

#include <algorithm>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "grpc/health/v1/health.pb.h"
#include "moondream/v1/moondream.grpc.pb.h"

namespace moondream::server {
namespace {

int Milliseconds(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return std::numeric_limits<int>::max();
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d), std::numeric_limits<int>::max()));
}

void AddKeepalive(const ServerOptions& o, grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, Milliseconds(o.keepalive_time));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Milliseconds(o.keepalive_timeout));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
                              o.keepalive_permit_without_calls ? 1 : 0);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                              Milliseconds(o.keepalive_min_ping_interval));
  if (o.max_connection_age != absl::InfiniteDuration()) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, Milliseconds(o.max_connection_age));
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                                Milliseconds(o.max_connection_age_grace));
  }
}

}  // namespace

absl::StatusOr<StartedServer> StartGrpcServer(const ServerOptions& options, grpc::Service* service) {
  // The default health service registers no descriptor; referencing the compiled-in
  // health.proto lets reflection resolve grpc.health.v1.Health.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  // libgrpc++_reflection adds its plugin to every ServerBuilder from a static initializer
  // when it is loaded: the server does not link it, and loads it only when asked for.
  if (options.reflection &&
      dlopen(MOONDREAM_GRPC_REFLECTION_LIB, RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    return absl::UnavailableError(std::string("--reflection: cannot load " MOONDREAM_GRPC_REFLECTION_LIB ": ") +
                                  dlerror());
  }
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  // Memory budget (docs/memory.md): the transport's buffers are bounded by the quota, the
  // calls per connection by the stream limit.
  grpc::ResourceQuota quota("moondream-server");
  quota.Resize(static_cast<size_t>(options.grpc_memory_bytes));
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  AddKeepalive(options, &builder);
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError("cannot listen on " + options.listen +
                                  " (address in use or invalid?)");
  }
  SetServing(server.get(), false);
  return StartedServer{std::move(server), WithPort(options.listen, port)};
}

void SetServing(grpc::Server* server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus("", serving);
  health->SetServingStatus(v1::Moondream::service_full_name(), serving);
}

std::string WithPort(const std::string& address, int port) {
  const size_t colon = address.rfind(':');
  const std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  return host + ":" + std::to_string(port);
}

}  // namespace moondream::server
