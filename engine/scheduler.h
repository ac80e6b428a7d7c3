// Bounded FIFO of requests served by `max_concurrency` worker threads (batch 1 each).
// A reaper thread finishes queued requests that are cancelled or past their deadline
// without waiting for a worker, so they answer promptly and free their queue slot.
//
// The workers are the engine's exception boundary: a std::exception (c10::Error
// included) thrown by a model becomes INTERNAL for that request only.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/api.h"
#include "engine/image/pixel_budget.h"
#include "engine/image_cache.h"
#include "engine/model.h"

namespace moondream {

struct SchedulerOptions {
  int max_queue = 64;       // requests waiting beyond those running
  int max_concurrency = 1;  // worker threads
  // A request still queued after this long fails with UNAVAILABLE (retryable: the server
  // is overloaded), whatever its own deadline.
  Clock::duration queue_timeout = std::chrono::minutes(2);
  // Image bytes (Request::image()) of the queued and running requests together; a
  // request that would go past it answers RESOURCE_EXHAUSTED at once. 0 = no cap.
  uint64_t max_queued_bytes = 128ull << 20;
  // Pixels decoded at once by all workers together (RunContext::decode_budget): the pixel
  // limit, so that one image at the limit decodes alone. 0 = no bound.
  uint64_t max_decode_pixels = 0;
};

class Scheduler {
 public:
  // `cache` must outlive the scheduler.
  Scheduler(const SchedulerOptions& options, ImageCache* cache);
  ~Scheduler();  // Drain(0), then joins the workers; every accepted request gets on_done.

  // `request.model` must already name `model`. RESOURCE_EXHAUSTED when full (by count,
  // --max-queue, or by image bytes, --max-queued-bytes), UNAVAILABLE once draining; otherwise callbacks.on_done runs exactly once.
  absl::Status Enqueue(Request request, Callbacks callbacks, const Model* model);

  // Stops accepting, waits up to `grace` for queued and running requests, then cancels
  // the rest (they finish with UNAVAILABLE) and waits for them. Idempotent.
  void Drain(Clock::duration grace);

  struct Stats {
    int queued = 0;
    int in_flight = 0;
    uint64_t queued_bytes = 0;  // image bytes of the queued and running requests
    // How long the running request furthest past its deadline has been past it (0: none).
    // Models stop within one step of a deadline, so a large value means a stuck worker.
    Clock::duration worst_overrun{0};
  };
  Stats GetStats() const;

 private:
  struct Job {
    Request request;
    Callbacks callbacks;
    const Model* model = nullptr;
    Clock::time_point enqueued;
    uint64_t bytes = 0;    // counted in queued_bytes_ until the job is answered
    bool drained = false;  // cancelled by Drain (guarded by mu_)
  };

  void WorkerLoop();
  void ReaperLoop();
  std::vector<std::unique_ptr<Job>> TakeDeadLocked();
  // The job's result: its status, timings and model name filled in.
  absl::StatusOr<Result> Complete(Job& job);
  absl::StatusOr<Result> Execute(const Job& job, Timings* timings);
  absl::StatusOr<Result> ExecuteGuarded(const Job& job, const RunContext& ctx);
  absl::StatusOr<std::shared_ptr<const EncodedImage>> ResolveImage(const Job& job,
                                                                   const RunContext& ctx);
  void CancelAllLocked();
  bool IdleLocked() const {
    return queue_.empty() && running_.empty() && reaping_ == 0 && delivering_ == 0;
  }

  const SchedulerOptions options_;
  ImageCache* const cache_;
  PixelBudget decode_budget_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // queue_ non-empty or stopping_
  std::condition_variable idle_cv_;  // a request finished
  std::deque<std::unique_ptr<Job>> queue_;
  std::vector<Job*> running_;          // executing in the engine (the in-flight gauge)
  size_t delivering_ = 0;              // left running_, on_done not yet returned
  size_t reaping_ = 0;                 // taken from queue_ by the reaper, not yet finished
  uint64_t queued_bytes_ = 0;          // sum of Job::bytes of every accepted, unanswered job
  std::condition_variable reaper_cv_;  // stopping_
  bool draining_ = false;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  std::thread reaper_;
};

}  // namespace moondream
