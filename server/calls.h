// Per-call state shared by the transports: the loaded models and the record of one call
// (metrics + the per-request log line); and the two gRPC reactors that finish calls from
// engine threads.
#pragma once

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "engine/api.h"
#include "engine/engine.h"
#include "moondream/v1/moondream.pb.h"
#include "server/metrics.h"

namespace moondream::server {

// The loaded models, fixed once the engine is up: resolves metric labels.
struct ModelCatalog {
  struct Labels {
    std::string precision, device;
  };
  std::string default_model;
  std::map<std::string, Labels> models;
};

// The engine once its models are loaded, with their catalog.
struct Backend {
  explicit Backend(Engine* engine);
  Engine* engine;
  ModelCatalog catalog;
};

class CallRecord;

// What the transports share: the metrics, the API key, and the engine once it is loaded
// (published atomically, so calls before it answer "loading").
class ServingState {
 public:
  // `api_key`: when not empty, every call needs "Authorization: Bearer <key>".
  ServingState(Metrics* metrics, std::string api_key);
  ~ServingState();

  void AttachEngine(Engine* engine);  // once; `engine` must outlive the transports
  void SetDraining() { draining_ = true; }
  bool draining() const { return draining_; }
  const Backend* backend() const { return backend_.load(); }  // null while loading
  Metrics* metrics() const { return metrics_; }

  // The backend a call runs on, or why not: UNAUTHENTICATED when `authorization` (the
  // header or metadata value) does not carry the key, UNAVAILABLE while loading.
  absl::StatusOr<const Backend*> Admit(std::string_view authorization) const;
  CallRecord Record(const char* transport, const char* method, std::string model) const;

 private:
  Metrics* const metrics_;
  const std::string api_key_;
  std::unique_ptr<Backend> storage_;
  std::atomic<const Backend*> backend_{nullptr};
  std::atomic<bool> draining_{false};
};

// What one call reports when it ends: a log line at info and the request metrics.
class CallRecord {
 public:
  // `catalog` may be null while models load. transport: "grpc" or "http".
  CallRecord(Metrics* metrics, const ModelCatalog* catalog, const char* transport,
             const char* method, std::string requested_model);
  void Report(const absl::Status& status, const Result* result) const;

 private:
  std::string_view ModelLabel(const Result* result) const;

  Metrics* metrics_;
  const ModelCatalog* catalog_;
  const char* transport_;
  const char* method_;
  std::string requested_model_;
  Clock::time_point start_ = Clock::now();
};

// A unary call finished by whichever thread completes it; deletes itself in OnDone.
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(CallRecord record, std::shared_ptr<CancelFlag> cancel, Clock::time_point deadline);
  // Reports and finishes the call; `this` may be gone when it returns.
  void Complete(const absl::Status& status, const Result* result);
  void OnCancel() override;
  void OnDone() override;

 private:
  CallRecord record_;
  std::shared_ptr<CancelFlag> cancel_;
  Clock::time_point deadline_;
};

// A server-streaming call: text pieces are queued (and coalesced) behind the one
// write in flight; the final chunk and the status follow the last piece.
class StreamCall final : public grpc::ServerWriteReactor<v1::TextChunk> {
 public:
  StreamCall(CallRecord record, std::shared_ptr<CancelFlag> cancel, Clock::time_point deadline);
  void Write(std::string_view text);
  // Reports the call; on success queues the final chunk. Finishes once writes drain.
  void Complete(const absl::Status& status, const Result* result);
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // Starts the next write, or Finish once nothing is pending; call without mu_ held.
  void Pump();

  CallRecord record_;
  std::shared_ptr<CancelFlag> cancel_;
  Clock::time_point deadline_;
  std::mutex mu_;
  std::deque<v1::TextChunk> pending_;  // guarded by mu_
  v1::TextChunk in_flight_;            // owned by the write in progress
  bool writing_ = false;               // guarded by mu_
  bool finished_ = false;              // guarded by mu_
  bool broken_ = false;                // a write failed; guarded by mu_
  std::optional<grpc::Status> status_;  // set by Complete; guarded by mu_
};

}  // namespace moondream::server
