#include "engine/scheduler.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/log.h"

namespace moondream {
namespace {

constexpr auto kReapInterval = std::chrono::milliseconds(20);

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

absl::Status QueueTimeoutError(double queue_ms) {
  return absl::UnavailableError(absl::StrCat("overloaded: the request waited ",
                                             static_cast<int64_t>(queue_ms),
                                             " ms in the queue, more than --queue-timeout"));
}

absl::Status QueuedError(const absl::Status& alive, double queue_ms) {
  if (absl::IsCancelled(alive)) return absl::CancelledError("request cancelled while queued");
  return absl::DeadlineExceededError(
      absl::StrCat("deadline exceeded after ", static_cast<int64_t>(queue_ms), " ms in the queue"));
}

}  // namespace

Scheduler::Scheduler(const SchedulerOptions& options, ImageCache* cache)
    : options_(options), cache_(cache), decode_budget_(options.max_decode_pixels) {
  const int workers = std::max(1, options_.max_concurrency);
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  reaper_ = std::thread([this] { ReaperLoop(); });
}

Scheduler::~Scheduler() {
  Drain(Clock::duration::zero());
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  reaper_cv_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  reaper_.join();
}

absl::Status Scheduler::Enqueue(Request request, Callbacks callbacks, const Model* model) {
  auto job = std::make_unique<Job>();
  job->request = std::move(request);
  job->callbacks = std::move(callbacks);
  job->model = model;
  job->bytes = job->request.image().size();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) return absl::UnavailableError("engine is draining: not accepting new requests");
    const size_t capacity = static_cast<size_t>(std::max(0, options_.max_queue)) + workers_.size();
    if (queue_.size() + running_.size() >= capacity) {
      return absl::ResourceExhaustedError(absl::StrCat("request queue is full (", queue_.size(),
                                                       " queued, --max-queue=", options_.max_queue,
                                                       ")"));
    }
    if (options_.max_queued_bytes > 0 &&
        job->bytes > options_.max_queued_bytes - std::min(queued_bytes_, options_.max_queued_bytes)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "request image bytes over budget: ", job->bytes, " bytes with ", queued_bytes_,
          " already queued or running exceed --max-queued-bytes=", options_.max_queued_bytes));
    }
    queued_bytes_ += job->bytes;
    job->enqueued = Clock::now();
    queue_.push_back(std::move(job));
  }
  work_cv_.notify_one();
  return absl::OkStatus();
}

void Scheduler::Drain(Clock::duration grace) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  const Clock::time_point now = Clock::now();
  const Clock::time_point until =
      grace >= Clock::time_point::max() - now ? Clock::time_point::max() : now + grace;
  if (idle_cv_.wait_until(lock, until, [this] { return IdleLocked(); })) return;
  Log(LogLevel::kWarn, "drain_grace_expired",
      {{"queued", static_cast<int>(queue_.size())},
       {"in_flight", static_cast<int>(running_.size())}});
  CancelAllLocked();
  idle_cv_.wait(lock, [this] { return IdleLocked(); });
}

void Scheduler::CancelAllLocked() {
  for (auto& job : queue_) {
    job->drained = true;
    job->request.cancel->store(true);
  }
  for (Job* job : running_) {
    job->drained = true;
    job->request.cancel->store(true);
  }
}

Scheduler::Stats Scheduler::GetStats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats stats;
  stats.queued = static_cast<int>(queue_.size());
  stats.in_flight = static_cast<int>(running_.size());
  stats.queued_bytes = queued_bytes_;
  const Clock::time_point now = Clock::now();
  for (const Job* job : running_) {
    stats.worst_overrun = std::max(stats.worst_overrun, now - job->request.deadline);
  }
  return stats;
}

void Scheduler::WorkerLoop() {
  while (true) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      job = std::move(queue_.front());
      queue_.pop_front();
      running_.push_back(job.get());
    }
    absl::StatusOr<Result> result = Complete(*job);
    // The job leaves running_ and the byte budget before on_done sends the response, so a
    // client that reads the in-flight gauge after its reply never counts its own request,
    // and its next request is admitted against a budget without this one (the bytes are
    // freed right after the reply; gRPC's own copy is term T of docs/memory.md). Drain
    // still waits for the delivery through delivering_.
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_.erase(std::find(running_.begin(), running_.end(), job.get()));
      queued_bytes_ -= job->bytes;
      ++delivering_;
    }
    job->callbacks.on_done(std::move(result));
    job.reset();
    {
      std::lock_guard<std::mutex> lock(mu_);
      --delivering_;
    }
    idle_cv_.notify_all();
  }
}

std::vector<std::unique_ptr<Scheduler::Job>> Scheduler::TakeDeadLocked() {
  std::vector<std::unique_ptr<Job>> dead;
  const Clock::time_point now = Clock::now();
  for (auto it = queue_.begin(); it != queue_.end();) {
    if ((*it)->request.cancel->load() || (*it)->request.deadline <= now ||
        now - (*it)->enqueued >= options_.queue_timeout) {
      dead.push_back(std::move(*it));
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  return dead;
}

void Scheduler::ReaperLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    reaper_cv_.wait_for(lock, kReapInterval);
    std::vector<std::unique_ptr<Job>> dead = TakeDeadLocked();
    if (dead.empty()) continue;
    reaping_ += dead.size();
    for (const auto& job : dead) queued_bytes_ -= job->bytes;  // before the replies, as above
    lock.unlock();
    for (auto& job : dead) job->callbacks.on_done(Complete(*job));  // fails its liveness check
    const size_t reaped = dead.size();
    dead.clear();
    lock.lock();
    reaping_ -= reaped;
    idle_cv_.notify_all();
  }
}

absl::StatusOr<Result> Scheduler::Complete(Job& job) {
  Timings timings;
  timings.queue_ms = Ms(Clock::now() - job.enqueued);
  absl::StatusOr<Result> result = Execute(job, &timings);
  if (result.ok()) {
    result->timings = timings;  // the one channel every stage wrote (engine/model.h)
    result->timings.total_ms = Ms(Clock::now() - job.enqueued);
    result->model = job.request.model;
  } else if (absl::IsCancelled(result.status())) {
    std::lock_guard<std::mutex> lock(mu_);
    if (job.drained) {
      result = absl::UnavailableError(
          "engine is shutting down: request cancelled after the "
          "drain grace period");
    }
  }
  Log(LogLevel::kDebug, "request_done",
      {{"model", job.request.model},
       {"task", TaskName(job.request.task)},
       {"status", absl::StatusCodeToString(result.status().code())},
       {"total_ms", Ms(Clock::now() - job.enqueued)}});
  return result;
}

absl::StatusOr<Result> Scheduler::Execute(const Job& job, Timings* timings) {
  RunContext ctx;
  ctx.deadline = job.request.deadline;
  ctx.cancel = job.request.cancel.get();
  ctx.on_text = job.callbacks.on_text;
  ctx.timings = timings;
  ctx.flatten_transparency = job.request.transparency == Transparency::kFlattenOntoWhite;
  if (options_.max_decode_pixels > 0) ctx.decode_budget = &decode_budget_;
  if (absl::Status alive = ctx.CheckAlive(); !alive.ok()) {
    return QueuedError(alive, timings->queue_ms);
  }
  if (Clock::now() - job.enqueued >= options_.queue_timeout) {
    return QueueTimeoutError(timings->queue_ms);
  }
  try {
    return ExecuteGuarded(job, ctx);
  } catch (const std::exception& e) {
    Log(LogLevel::kError, "engine_exception", {{"model", job.request.model}, {"what", e.what()}});
    return absl::InternalError(absl::StrCat("engine error: ", e.what()));
  }
}

absl::StatusOr<Result> Scheduler::ExecuteGuarded(const Job& job, const RunContext& ctx) {
  absl::StatusOr<std::shared_ptr<const EncodedImage>> image = ResolveImage(job, ctx);
  if (!image.ok()) return image.status();
  if (job.request.task != Task::kEncodeImage) {
    return job.model->Run(job.request, **image, ctx);
  }
  Result result;
  result.image_cached_bytes = (*image)->bytes();
  absl::StatusOr<std::string> handle = cache_->Insert(job.request.model, *std::move(image));
  if (!handle.ok()) return handle.status();
  result.image_handle = *std::move(handle);
  return result;
}

absl::StatusOr<std::shared_ptr<const EncodedImage>> Scheduler::ResolveImage(const Job& job,
                                                                            const RunContext& ctx) {
  if (!job.request.image_handle.empty()) {
    return cache_->Lookup(job.request.model, job.request.image_handle);
  }
  return job.model->Encode(job.request.image(), ctx);
}

}  // namespace moondream
