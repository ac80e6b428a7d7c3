#include "server/tls.h"

#include "absl/status/status.h"

namespace moondream::server {
namespace {

namespace ssl = boost::asio::ssl;

absl::Status FileError(const char* flag, const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(std::string(flag) + "=" + path + ": " + what);
}

}  // namespace

absl::StatusOr<std::shared_ptr<ssl::context>> LoadTlsContext(const TlsFiles& files) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                       ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  boost::system::error_code ec;
  context->use_certificate_chain_file(files.cert, ec);
  if (ec) return FileError("--tls-cert", files.cert, "not a readable PEM certificate chain (" + ec.message() + ")");
  // OpenSSL also checks that the key is the certificate's.
  context->use_private_key_file(files.key, ssl::context::pem, ec);
  if (ec) {
    return FileError("--tls-key", files.key,
                     "not the private key of --tls-cert, or not a readable PEM key (" +
                         ec.message() + ")");
  }
  if (!files.client_ca.empty()) {
    context->load_verify_file(files.client_ca, ec);
    if (ec) return FileError("--tls-client-ca", files.client_ca, "not a readable PEM CA bundle (" + ec.message() + ")");
    context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  }
  return context;
}

}  // namespace moondream::server
