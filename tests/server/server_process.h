// Test harness: runs the real moondream-server binary on free ports, parses the
// "listening" line for the ports, waits for "serving", and kills it on destruction.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "moondream/v1/moondream.grpc.pb.h"

namespace moondream::testing {

class ServerProcess {
 public:
  // Starts `moondream-server --model test --listen 127.0.0.1:0 --metrics-listen
  // 127.0.0.1:0 <extra_args>` with `env` ("NAME=value") added to its environment and
  // waits (up to 60 s) until it logs `ready_event` (serving) or exits.
  explicit ServerProcess(const std::vector<std::string>& extra_args = {},
                         const std::vector<std::string>& env = {},
                         const std::string& ready_event = "event=serving");
  ~ServerProcess();

  bool serving() const { return serving_; }  // ready_event seen (and listening)
  const std::string& address() const { return address_; }          // 127.0.0.1:PORT
  const std::string& metrics_address() const { return metrics_; }  // 127.0.0.1:MPORT
  const std::string& http_address() const { return http_; }  // with --http-listen only
  std::shared_ptr<grpc::Channel> Channel() const;
  std::unique_ptr<v1::Moondream::Stub> Stub() const;

  void Signal(int signal) const;
  // Waits for the process to exit; its exit code, or -1 on timeout / signal death.
  int WaitExit(std::chrono::seconds timeout);
  // Waits until a stderr line contains `needle`; false on timeout.
  bool WaitForLog(const std::string& needle, std::chrono::seconds timeout);
  std::string Logs() const;

 private:
  void ReadStderr(int fd);

  pid_t pid_ = -1;
  bool exited_ = false;
  bool serving_ = false;
  std::string address_, metrics_, http_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;  // guarded by mu_
  bool eof_ = false;                // guarded by mu_
  std::thread reader_;
};

// The value of `key=` in a logfmt line ("" when absent).
std::string LogField(const std::string& line, const std::string& key);
// A channel to `address` on a connection of its own (gRPC otherwise shares one connection
// between channels to the same target).
std::shared_ptr<grpc::Channel> OwnChannel(
    const std::string& address,
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials());
// A TCP connection to 127.0.0.1:PORT (IPv4 host:port); its fd, or -1.
int ConnectTo(const std::string& address);
// GET http://address/path (HTTP/1.0); the body, or "" on failure.
std::string HttpGet(const std::string& address, const std::string& path);
// The value of the first sample of `name` whose labels include every `k="v"` in
// `labels` (e.g. {"code=\"OK\""}) in a Prometheus text scrape; -1 when absent.
double MetricValue(const std::string& scrape, const std::string& name,
                   const std::vector<std::string>& labels = {});
// Scrapes until MetricValue(...) == value or `timeout` passes; true on success.
bool WaitForMetric(const ServerProcess& server, const std::string& name,
                   const std::vector<std::string>& labels, double value,
                   std::chrono::milliseconds timeout);
// A fixture file's bytes, relative to MOONDREAM_FIXTURES_DIR.
std::string ReadFixture(const std::string& relative_path);
// Runs a shell command with `input` on stdin; returns exit code and stdout+stderr.
int RunCommand(const std::string& command, const std::string& input, std::string* output);

}  // namespace moondream::testing
