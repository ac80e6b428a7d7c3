// TLS certificates from files (--tls-cert, --tls-key, --tls-client-ca), for both
// transports: gRPC watches the files itself (grpc_server.cc); the HTTP listener builds an
// OpenSSL context here, again on SIGHUP.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>

#include "absl/status/statusor.h"

namespace moondream::server {

struct TlsFiles {
  std::string cert;       // PEM certificate chain; empty = TLS off
  std::string key;        // PEM private key
  std::string client_ca;  // PEM CA bundle; set = clients must present a certificate it signed
  bool enabled() const { return !cert.empty(); }
};

// Reads and checks the files (the key must be the certificate's) into a server context:
// TLS 1.2 or newer, client certificates required and verified when client_ca is set.
// INVALID_ARGUMENT naming the flag and file otherwise.
absl::StatusOr<std::shared_ptr<boost::asio::ssl::context>> LoadTlsContext(const TlsFiles& files);

}  // namespace moondream::server
