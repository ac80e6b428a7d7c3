// The HTTP/1.1 transport (Boost.Beast on Asio): listeners, connections, timeouts and
// limits, and nothing else. It knows no routes, JSON or engine; one Handler answers every
// request through a Responder (docs/http.md, docs/architecture.md).
//
// Why Beast: event-driven, so a slow or idle client holds a socket and a few KiB, never a
// thread; every read has a deadline for the whole request (headers and body), not per
// recv, so a client trickling bytes is cut off; while a request runs the connection is
// watched, so a client that hangs up cancels its work; and it is header-only in Debian's
// libboost-dev, with no threads of its own (civetweb's small thread stacks cannot start in
// this process: the static TLS of LibTorch + OpenBLAS does not fit them).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "server/tls.h"

namespace moondream::server::http {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // the target without its query string
  std::string authorization;  // the Authorization header ("" when absent)
  std::string body;
};

// Answers one request, from any thread: either Send once, or BeginStream, Write* and End.
// Calls after the client has gone are ignored.
class Responder {
 public:
  virtual ~Responder() = default;
  virtual void Send(int status, const std::string& content_type, std::string body) = 0;
  // Sends the 200 header with chunked transfer encoding; Write sends one chunk each.
  virtual void BeginStream(const std::string& content_type) = 0;
  virtual void Write(std::string data) = 0;
  virtual void End() = 0;
  // Runs once (on a transport thread) if the client disconnects before the answer is
  // complete; at once if it already has. Set it before submitting work.
  virtual void OnDisconnect(std::function<void()> callback) = 0;
};

using Handler = std::function<void(const HttpRequest&, std::shared_ptr<Responder>)>;

struct HttpServerOptions {
  std::string listen;                    // host:port; port 0 picks one; "[::]:8080" for IPv6
  size_t max_body_bytes = 32u << 20;     // larger bodies get 413
  // Bodies of all connections together (received, not yet parsed): beyond, 429 before the
  // body is read. Bodies must come with a Content-Length (411 otherwise).
  uint64_t max_body_bytes_in_flight = 64u << 20;
  size_t max_header_bytes = 16u << 10;   // larger header blocks get 431
  // A whole request (headers and body) must arrive within this, counted from its first
  // byte or, on a kept-alive connection, from the end of the previous answer.
  std::chrono::seconds read_timeout{30};
  std::chrono::seconds write_timeout{30};  // per write: a client that stops reading is dropped
  int max_connections = 256;               // beyond: 503 and close
  int threads = 2;
  TlsFiles tls;  // HTTPS when tls.cert is set (and mutual TLS with tls.client_ca)
  // The body of a refusal by the transport itself (400 unparsable, 411, 413, 429, 431): returns
  // {content type, body}. Default: the message as text/plain.
  std::function<std::pair<std::string, std::string>(int status, const std::string& message)>
      error_body;
};

class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           Handler handler);
  ~HttpServer();  // Shutdown(now)

  int port() const;
  // Re-reads the TLS files for new connections (SIGHUP); on error the old ones stay.
  absl::Status ReloadTls();
  // Stops accepting and closes idle connections; answers in progress get until
  // `deadline` to complete, then every connection is closed and the threads joined.
  void Shutdown(std::chrono::steady_clock::time_point deadline);

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moondream::server::http
