// libFuzzer target: the HTTP/1.1 transport (server/http_server.cc, Boost.Beast) fed raw
// bytes over a loopback connection. One server runs in-process with small limits (1 KiB of
// headers, 4 KiB of body) and a trivial handler that keeps the Responder contract: "/"
// answers a summary, /stream answers in chunks, /throw throws, anything else is a 404 with
// a disconnect callback set. Each input is one connection: the bytes are sent, the write
// side shut, and the answer read to the end. The server must neither crash nor hold the
// connection open (5 s: a hang), and whatever it answers starts as an HTTP/1.1 response.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>

#include "server/http_server.h"

namespace {

namespace http = moondream::server::http;

std::unique_ptr<http::HttpServer>& Server() {
  static std::unique_ptr<http::HttpServer> server;
  return server;
}

void Fail(const char* what) {
  std::fprintf(stderr, "http_request_fuzz: %s\n", what);
  std::abort();
}

void Handle(const http::HttpRequest& request, std::shared_ptr<http::Responder> responder) {
  if (request.path == "/throw") throw std::runtime_error("handler threw");
  if (request.path == "/stream") {
    responder->OnDisconnect([] {});
    responder->BeginStream("text/event-stream");
    responder->Write("data: " + request.method + "\n\n");
    responder->Write(request.body);
    responder->Write("");
    responder->End();
    return;
  }
  if (request.path != "/") responder->OnDisconnect([] {});
  responder->Send(request.path == "/" ? 200 : 404, "text/plain",
                  request.method + " " + request.path + " " + std::to_string(request.body.size()) +
                      " " + std::to_string(request.authorization.size()) + "\n");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  http::HttpServerOptions options;
  options.listen = "127.0.0.1:0";
  options.max_body_bytes = 4096;
  options.max_header_bytes = 1024;
  options.read_timeout = std::chrono::seconds(3);
  options.write_timeout = std::chrono::seconds(3);
  options.threads = 2;
  absl::StatusOr<std::unique_ptr<http::HttpServer>> server =
      http::HttpServer::Start(options, Handle);
  if (!server.ok()) {
    std::fprintf(stderr, "http_request_fuzz: %s\n", server.status().ToString().c_str());
    std::exit(2);
  }
  Server() = *std::move(server);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) Fail("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(Server()->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Fail("connect() failed");
  // The server may answer (and close) before it has read everything: a reset or EPIPE
  // while sending is fine.
  // (EINTR: libFuzzer's -timeout alarm interrupts blocking calls once a second.)
  for (size_t sent = 0; sent < size;) {
    const ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    sent += size_t(n);
  }
  shutdown(fd, SHUT_WR);
  std::string answer;
  char buffer[16384];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) Fail("the server held the connection open for 5 s after the input");
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, int(left.count())) < 0) {
      if (errno == EINTR) continue;
      Fail("poll() failed");
    }
    if (p.revents == 0) continue;
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // closed, or reset after a refusal
    answer.append(buffer, size_t(n));
  }
  close(fd);
  if (!answer.empty() && answer.rfind("HTTP/1.", 0) != 0) Fail("the answer is not HTTP");
  return 0;
}
