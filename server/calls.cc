#include "server/calls.h"

#include <chrono>
#include <utility>

#include "engine/log.h"
#include "server/auth.h"
#include "server/convert.h"
#include "server/status.h"

namespace moondream::server {
namespace {

constexpr std::string_view kUnknownModel = "unknown";
// gRPC's deadline alarm and the engine's clock may disagree by this much, more on a starved
// host (20 ms mislabelled deadlines as CANCELLED under a load of 10 on 2 cores).
constexpr auto kDeadlineSlack = std::chrono::milliseconds(250);

// gRPC also cancels a call when its deadline passes; that case is left to the engine's
// own deadline check, so it is reported as DEADLINE_EXCEEDED rather than CANCELLED.
void OnClientCancel(CancelFlag* cancel, Clock::time_point deadline) {
  if (deadline != Clock::time_point::max() && Clock::now() + kDeadlineSlack >= deadline) return;
  cancel->store(true);
}

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace

Backend::Backend(Engine* engine) : engine(engine) {
  for (const ModelInfo& info : engine->ListModels()) {
    catalog.models[info.name] = {info.precision, info.device};
    if (info.is_default) catalog.default_model = info.name;
  }
}

ServingState::ServingState(Metrics* metrics, std::string api_key)
    : metrics_(metrics), api_key_(std::move(api_key)) {}
ServingState::~ServingState() = default;

void ServingState::AttachEngine(Engine* engine) {
  storage_ = std::make_unique<Backend>(engine);
  backend_.store(storage_.get());
}

absl::StatusOr<const Backend*> ServingState::Admit(std::string_view authorization) const {
  if (!api_key_.empty() && !BearerMatches(authorization, api_key_)) {
    return absl::UnauthenticatedError(
        "missing or wrong API key: send \"Authorization: Bearer <key>\" (--api-key)");
  }
  const Backend* backend = backend_.load();
  if (backend == nullptr) {
    return absl::UnavailableError("the server is loading its models; retry shortly");
  }
  return backend;
}

CallRecord ServingState::Record(const char* transport, const char* method,
                                std::string model) const {
  const Backend* backend = backend_.load();
  return CallRecord(metrics_, backend ? &backend->catalog : nullptr, transport, method,
                    std::move(model));
}

CallRecord::CallRecord(Metrics* metrics, const ModelCatalog* catalog, const char* transport,
                       const char* method, std::string requested_model)
    : metrics_(metrics),
      catalog_(catalog),
      transport_(transport),
      method_(method),
      requested_model_(std::move(requested_model)) {}

// Label values are bounded: a model that is not loaded is reported as "unknown".
std::string_view CallRecord::ModelLabel(const Result* result) const {
  if (result != nullptr && !result->model.empty()) return result->model;
  if (catalog_ == nullptr) return kUnknownModel;
  if (requested_model_.empty()) return catalog_->default_model;
  return catalog_->models.count(requested_model_) ? std::string_view(requested_model_)
                                                  : kUnknownModel;
}

void CallRecord::Report(const absl::Status& status, const Result* result) const {
  const double total_ms = MillisecondsSince(start_);
  const std::string code = absl::StatusCodeToString(status.code());  // gRPC's code names
  const std::string_view model = ModelLabel(result);
  RequestOutcome outcome{transport_, method_, model, "", "", code, total_ms / 1000.0, result};
  if (catalog_ != nullptr) {
    auto it = catalog_->models.find(std::string(model));
    if (it != catalog_->models.end()) {
      outcome.precision = it->second.precision;
      outcome.device = it->second.device;
    }
  }
  metrics_->ObserveRequest(outcome);
  if (!status.ok()) {
    Log(LogLevel::kInfo, "request",
        {{"transport", transport_}, {"method", method_}, {"model", model}, {"code", code},
         {"total_ms", total_ms}, {"message", std::string(status.message())}});
    return;
  }
  if (result == nullptr) {  // ListModels, GetModel
    Log(LogLevel::kInfo, "request",
        {{"transport", transport_}, {"method", method_}, {"model", model}, {"code", code},
         {"total_ms", total_ms}});
    return;
  }
  const Timings& t = result->timings;
  Log(LogLevel::kInfo, "request",
      {{"transport", transport_}, {"method", method_}, {"model", model}, {"code", code},
       {"total_ms", total_ms}, {"queue_ms", t.queue_ms}, {"image_decode_ms", t.image_decode_ms},
       {"vision_encode_ms", t.vision_encode_ms}, {"image_prefill_ms", t.image_prefill_ms},
       {"prefill_ms", t.prefill_ms},
       {"decode_ms", t.decode_ms}, {"ttft_ms", t.time_to_first_token_ms},
       {"prompt_tokens", result->usage.prompt_tokens},
       {"generated_tokens", result->usage.generated_tokens}});
}

UnaryCall::UnaryCall(CallRecord record, std::shared_ptr<CancelFlag> cancel,
                     Clock::time_point deadline)
    : record_(std::move(record)), cancel_(std::move(cancel)), deadline_(deadline) {}

void UnaryCall::Complete(const absl::Status& status, const Result* result) {
  record_.Report(status, result);
  Finish(ToGrpcStatus(status));
}

void UnaryCall::OnCancel() { OnClientCancel(cancel_.get(), deadline_); }
void UnaryCall::OnDone() { delete this; }

StreamCall::StreamCall(CallRecord record, std::shared_ptr<CancelFlag> cancel,
                       Clock::time_point deadline)
    : record_(std::move(record)), cancel_(std::move(cancel)), deadline_(deadline) {}

void StreamCall::Write(std::string_view text) {
  if (text.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_) return;
    if (!pending_.empty() && !pending_.back().final()) {
      pending_.back().mutable_text()->append(text.data(), text.size());  // coalesce
    } else {
      pending_.emplace_back().set_text(std::string(text));
    }
  }
  Pump();
}

void StreamCall::Complete(const absl::Status& status, const Result* result) {
  record_.Report(status, result);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (result != nullptr && !broken_) pending_.push_back(FinalChunk(*result));
    status_ = ToGrpcStatus(status);
  }
  Pump();
}

void StreamCall::Pump() {
  std::optional<grpc::Status> finish;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (writing_ || finished_) return;
    if (!pending_.empty()) {
      in_flight_ = std::move(pending_.front());
      pending_.pop_front();
      writing_ = true;
    } else if (status_.has_value()) {
      finished_ = true;
      finish = status_;
    } else {
      return;
    }
  }
  if (finish.has_value()) {
    Finish(*finish);  // `this` may be deleted from here on
  } else {
    StartWrite(&in_flight_);
  }
}

void StreamCall::OnWriteDone(bool ok) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {  // the stream is broken (client gone): drop the rest
      broken_ = true;
      pending_.clear();
    }
  }
  if (!ok) cancel_->store(true);
  Pump();
}

void StreamCall::OnCancel() { OnClientCancel(cancel_.get(), deadline_); }
void StreamCall::OnDone() { delete this; }

}  // namespace moondream::server
