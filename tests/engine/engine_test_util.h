// Helpers for engine tests: run requests on an Engine and wait for the outcome.
#pragma once

#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/api.h"
#include "engine/engine.h"

namespace moondream::testing {

// Bytes of a fixture file (images/<name>).
std::string FixtureImage(const std::string& name);

// A submitted request: its streamed pieces and its final outcome.
class Pending {
 public:
  // Pieces streamed so far (thread-safe copy).
  std::vector<std::string> pieces() const;
  // Blocks until on_done ran.
  absl::StatusOr<Result> Wait();
  // True if on_done ran within `ms`.
  bool DoneWithin(int ms);

  absl::Status submit_status;  // what Submit returned
  std::shared_ptr<CancelFlag> cancel;

 private:
  friend std::shared_ptr<Pending> Submit(Engine&, Request, std::function<void(Pending&)>);
  mutable std::mutex mu_;
  std::vector<std::string> pieces_;
  std::promise<absl::StatusOr<Result>> promise_;
  std::shared_future<absl::StatusOr<Result>> future_ = promise_.get_future().share();
};

// Submits `request`; `on_piece` (optional) runs on the worker after each streamed piece.
std::shared_ptr<Pending> Submit(Engine& engine, Request request,
                                std::function<void(Pending&)> on_piece = nullptr);

// Submit + Wait; a Submit error is returned as is.
absl::StatusOr<Result> RunSync(Engine& engine, Request request);

Request CaptionRequest(const std::string& image_bytes,
                       CaptionLength length = CaptionLength::kNormal);

std::unique_ptr<Engine> MakeTestEngine(int token_delay_ms = 0, int max_queue = 8,
                                       int max_concurrency = 1);

// Whole-string UTF-8 validity (no overlongs, surrogates or truncated sequences).
bool IsValidUtf8(const std::string& text);

}  // namespace moondream::testing
