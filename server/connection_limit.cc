#include "server/connection_limit.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include <grpc/support/sync.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/support/channel_arguments.h>

#include "engine/log.h"

// gRPC's socket mutator types. Its public headers name grpc_socket_mutator but install
// neither its layout nor these functions (src/core/lib/iomgr/socket_mutator.h, exported by
// libgrpc with C++ linkage). This is the one place that relies on them; the layout has
// been the same since mutate_fd_2 came in (gRPC 1.38) and tests/server/limits_test.cc
// proves the limit holds with the gRPC the server is built against.
typedef enum {
  GRPC_FD_CLIENT_CONNECTION_USAGE,
  GRPC_FD_SERVER_LISTENER_USAGE,
  GRPC_FD_SERVER_CONNECTION_USAGE,
} grpc_fd_usage;

struct grpc_mutate_socket_info {
  int fd;
  grpc_fd_usage usage;
};

struct grpc_socket_mutator_vtable {
  bool (*mutate_fd)(int fd, grpc_socket_mutator* mutator);
  int (*compare)(grpc_socket_mutator* a, grpc_socket_mutator* b);
  void (*destroy)(grpc_socket_mutator* mutator);
  bool (*mutate_fd_2)(const grpc_mutate_socket_info* info, grpc_socket_mutator* mutator);
};

struct grpc_socket_mutator {
  const grpc_socket_mutator_vtable* vtable;
  gpr_refcount refcount;
};

void grpc_socket_mutator_init(grpc_socket_mutator* mutator, const grpc_socket_mutator_vtable* vtable);

namespace moondream::server {
namespace {

// A refused connection is logged at most this often, with the count since the last line.
constexpr std::chrono::seconds kRefusedLogInterval{10};

// The mutator gRPC calls: `base` first, so gRPC's pointer is ours.
struct LimitMutator {
  grpc_socket_mutator base;
  std::shared_ptr<ConnectionLimit> limit;
};

bool MutateFd(int, grpc_socket_mutator*) { return true; }  // listeners and client sockets

bool MutateFd2(const grpc_mutate_socket_info* info, grpc_socket_mutator* mutator) {
  if (info->usage == GRPC_FD_SERVER_CONNECTION_USAGE) {
    reinterpret_cast<LimitMutator*>(mutator)->limit->Admit(info->fd);
  }
  return true;  // a false return would stop gRPC's listener, not just this connection
}

int Compare(grpc_socket_mutator* a, grpc_socket_mutator* b) { return (a > b) - (a < b); }

void Destroy(grpc_socket_mutator* mutator) { delete reinterpret_cast<LimitMutator*>(mutator); }

constexpr grpc_socket_mutator_vtable kVtable{MutateFd, Compare, Destroy, MutateFd2};

// Hands a new mutator to the builder's channel arguments, which own its first reference.
class LimitOption : public grpc::ServerBuilderOption {
 public:
  explicit LimitOption(std::shared_ptr<ConnectionLimit> limit) : limit_(std::move(limit)) {}
  void UpdateArguments(grpc::ChannelArguments* args) override {
    auto* mutator = new LimitMutator{{}, limit_};
    grpc_socket_mutator_init(&mutator->base, &kVtable);
    args->SetSocketMutator(&mutator->base);
  }
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*) override {}

 private:
  std::shared_ptr<ConnectionLimit> limit_;
};

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void ConnectionLimit::Install(std::shared_ptr<ConnectionLimit> limit, grpc::ServerBuilder* builder) {
  builder->SetOption(std::make_unique<LimitOption>(std::move(limit)));
}

void ConnectionLimit::ForgetClosedLocked() {
  // gRPC closed a remembered socket when its fd is gone or names another file now.
  open_.erase(std::remove_if(open_.begin(), open_.end(),
                             [](const Socket& s) {
                               struct stat st;
                               return fstat(s.fd, &st) != 0 || st.st_dev != s.dev ||
                                      st.st_ino != s.ino;
                             }),
              open_.end());
}

void ConnectionLimit::Admit(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return;  // gRPC's own accept path reports a dead socket
  std::lock_guard<std::mutex> lock(mu_);
  ForgetClosedLocked();
  if (static_cast<int>(open_.size()) < max_) {
    open_.push_back({fd, st.st_dev, st.st_ino});
    return;
  }
  shutdown(fd, SHUT_RDWR);
  ++refused_;
  const int64_t now = NowNs();
  if (now - last_log_ns_ >= std::chrono::nanoseconds(kRefusedLogInterval).count()) {
    Log(LogLevel::kWarn, "grpc_connections_refused",
        {{"count", static_cast<long long>(refused_ - refused_logged_)},
         {"limit", max_},
         {"flag", "--grpc-max-connections"}});
    last_log_ns_ = now;
    refused_logged_ = refused_;
  }
}

int ConnectionLimit::open() {
  std::lock_guard<std::mutex> lock(mu_);
  ForgetClosedLocked();
  return static_cast<int>(open_.size());
}

int64_t ConnectionLimit::refused() const {
  std::lock_guard<std::mutex> lock(mu_);
  return refused_;
}

}  // namespace moondream::server
