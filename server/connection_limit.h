// A bound on the gRPC listener's open connections (--grpc-max-connections). gRPC 1.51 has
// no such option, and each connection can bring --max-concurrent-streams whole messages
// before any handler sees them (docs/memory.md, term T), so the server counts them itself.
//
// How: a gRPC socket mutator sees every accepted socket before gRPC makes a connection of
// it. An admitted socket is remembered by (fd, inode); one past the limit is shut down
// there, so gRPC's handshake reads EOF at once and closes it (the client sees UNAVAILABLE
// and retries), while the listener goes on. TLS and the ResourceQuota are untouched: the
// socket is gRPC's own. Open connections are counted by checking the remembered fds still
// name the same sockets, so no close event is needed.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include <grpcpp/server_builder.h>

namespace moondream::server {

class ConnectionLimit {
 public:
  explicit ConnectionLimit(int max_connections) : max_(max_connections) {}

  // Makes `builder`'s server apply this limit; the server keeps it alive.
  static void Install(std::shared_ptr<ConnectionLimit> limit, grpc::ServerBuilder* builder);

  // Called for each accepted socket: remembers it, or shuts it down when the limit is full.
  void Admit(int fd);

  int open();
  int64_t refused() const;

 private:
  struct Socket {
    int fd;
    dev_t dev;
    ino_t ino;
  };
  void ForgetClosedLocked();

  const int max_;
  mutable std::mutex mu_;
  std::vector<Socket> open_;
  int64_t refused_ = 0;
  int64_t refused_logged_ = 0;
  int64_t last_log_ns_ = 0;
};

}  // namespace moondream::server
