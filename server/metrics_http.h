// A minimal HTTP/1.x endpoint for Prometheus scrapes: GET /metrics on one thread.
//
// prometheus-cpp's Exposer (civetweb) cannot start in this process: civetweb creates
// its threads with a fixed small stack, and glibc rejects that stack because the
// static TLS of LibTorch + OpenBLAS + glog (~100 KiB) does not fit ("Cannot create
// threads"). Scrapes are small and rare, so a sequential server is enough.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace moondream::server {

class MetricsHttpServer {
 public:
  // Listens on host:port (port 0 picks one; "[::]:9464" for IPv6) and answers
  // GET /metrics with render(); other paths get 404.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& listen, std::function<std::string()> render);
  ~MetricsHttpServer();  // stops accepting and joins the thread

  int port() const { return port_; }

 private:
  MetricsHttpServer(int fd, int port, std::function<std::string()> render);
  void Serve();
  void Handle(int fd) const;

  int fd_;
  int port_;
  std::function<std::string()> render_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace moondream::server
