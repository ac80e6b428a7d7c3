#include "server/grpc_server.h"

#include <dlfcn.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <algorithm>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "grpc/health/v1/health.pb.h"
#include "moondream/v1/moondream.grpc.pb.h"
#include "server/tls.h"

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
  // An idle connection gets GOAWAY, so clients that went quiet free their slot under
  // --grpc-max-connections (they reconnect on their next call).
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, Milliseconds(o.max_connection_idle));
  if (o.max_connection_age != absl::InfiniteDuration()) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, Milliseconds(o.max_connection_age));
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                                Milliseconds(o.max_connection_age_grace));
  }
}

// gRPC's own file watcher re-reads the certificate files this often: a rotated Secret
// (or replaced files) is served without a restart or signal.
constexpr unsigned kTlsRefreshSeconds = 1;

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  // The watcher reports bad files only in its log: check them first, for a clear error.
  if (absl::Status valid = LoadTlsContext(tls).status(); !valid.ok()) return valid;
  using grpc::experimental::FileWatcherCertificateProvider;
  auto provider = tls.client_ca.empty()
                      ? std::make_shared<FileWatcherCertificateProvider>(tls.key, tls.cert,
                                                                         kTlsRefreshSeconds)
                      : std::make_shared<FileWatcherCertificateProvider>(
                            tls.key, tls.cert, tls.client_ca, kTlsRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!tls.client_ca.empty()) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
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
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = Credentials(options.tls);
  if (!credentials.ok()) return credentials.status();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen, *credentials, &port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  // Memory budget (docs/memory.md): the transport's buffers are bounded by the quota, the
  // calls per connection by the stream limit.
  grpc::ResourceQuota quota("moondream-server");
  quota.Resize(static_cast<size_t>(options.grpc_memory_bytes));
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  // ... and the connections by this limit (gRPC 1.51 has no option for it).
  auto connections = std::make_shared<ConnectionLimit>(options.grpc_max_connections);
  ConnectionLimit::Install(connections, &builder);
  AddKeepalive(options, &builder);
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError("cannot listen on " + options.listen +
                                  " (address in use or invalid?)");
  }
  SetServing(server.get(), false);
  return StartedServer{std::move(server), WithPort(options.listen, port), std::move(connections)};
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
