#include "server/service.h"

#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "server/convert.h"

namespace moondream::server {
namespace {

// The client's deadline (system clock, infinite = max) on the engine's steady clock.
Clock::time_point EngineDeadline(const grpc::CallbackServerContext& ctx) {
  using std::chrono::system_clock;
  const system_clock::time_point deadline = ctx.deadline();
  const auto remaining = deadline - system_clock::now();
  constexpr auto kForever = std::chrono::hours(24 * 365);
  if (deadline == system_clock::time_point::max() || remaining > kForever) {
    return Clock::time_point::max();
  }
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(remaining);
}

}  // namespace

MoondreamService::MoondreamService(const ServingState* state) : state_(state) {}
MoondreamService::~MoondreamService() = default;

absl::StatusOr<const Backend*> MoondreamService::Admit(
    const grpc::CallbackServerContext& ctx) const {
  const auto& metadata = ctx.client_metadata();
  const auto it = metadata.find("authorization");
  return state_->Admit(it == metadata.end()
                           ? std::string_view()
                           : std::string_view(it->second.data(), it->second.size()));
}

template <typename Response>
grpc::ServerUnaryReactor* MoondreamService::RunUnary(grpc::CallbackServerContext* ctx,
                                                     const char* method, Request request,
                                                     Response* response) {
  request.deadline = EngineDeadline(*ctx);
  auto* call = new UnaryCall(state_->Record("grpc", method, request.model), request.cancel, request.deadline);
  const absl::StatusOr<const Backend*> backend = Admit(*ctx);
  if (!backend.ok()) {
    call->Complete(backend.status(), nullptr);
    return call;
  }
  Callbacks callbacks;
  callbacks.on_done = [call, response](absl::StatusOr<Result> result) {
    if (result.ok()) FillResponse(*result, response);
    call->Complete(result.status(), result.ok() ? &*result : nullptr);
  };
  const absl::Status submitted = (*backend)->engine->Submit(std::move(request), std::move(callbacks));
  if (!submitted.ok()) call->Complete(submitted, nullptr);
  return call;
}

grpc::ServerWriteReactor<v1::TextChunk>* MoondreamService::RunStream(
    grpc::CallbackServerContext* ctx, const char* method, Request request) {
  request.deadline = EngineDeadline(*ctx);
  auto* call = new StreamCall(state_->Record("grpc", method, request.model), request.cancel, request.deadline);
  const absl::StatusOr<const Backend*> backend = Admit(*ctx);
  if (!backend.ok()) {
    call->Complete(backend.status(), nullptr);
    return call;
  }
  Callbacks callbacks;
  callbacks.on_text = [call](std::string_view text) { call->Write(text); };
  callbacks.on_done = [call](absl::StatusOr<Result> result) {
    call->Complete(result.status(), result.ok() ? &*result : nullptr);
  };
  const absl::Status submitted = (*backend)->engine->Submit(std::move(request), std::move(callbacks));
  if (!submitted.ok()) call->Complete(submitted, nullptr);
  return call;
}

grpc::ServerUnaryReactor* MoondreamService::Caption(grpc::CallbackServerContext* ctx,
                                                    const v1::CaptionRequest* request,
                                                    v1::CaptionResponse* response) {
  return RunUnary(ctx, "Caption", ToRequest(*request), response);
}

grpc::ServerWriteReactor<v1::TextChunk>* MoondreamService::StreamCaption(
    grpc::CallbackServerContext* ctx, const v1::CaptionRequest* request) {
  return RunStream(ctx, "StreamCaption", ToRequest(*request));
}

grpc::ServerUnaryReactor* MoondreamService::Query(grpc::CallbackServerContext* ctx,
                                                  const v1::QueryRequest* request,
                                                  v1::QueryResponse* response) {
  return RunUnary(ctx, "Query", ToRequest(*request), response);
}

grpc::ServerWriteReactor<v1::TextChunk>* MoondreamService::StreamQuery(
    grpc::CallbackServerContext* ctx, const v1::QueryRequest* request) {
  return RunStream(ctx, "StreamQuery", ToRequest(*request));
}

grpc::ServerUnaryReactor* MoondreamService::Detect(grpc::CallbackServerContext* ctx,
                                                   const v1::DetectRequest* request,
                                                   v1::DetectResponse* response) {
  return RunUnary(ctx, "Detect", ToRequest(*request), response);
}

grpc::ServerUnaryReactor* MoondreamService::Point(grpc::CallbackServerContext* ctx,
                                                  const v1::PointRequest* request,
                                                  v1::PointResponse* response) {
  return RunUnary(ctx, "Point", ToRequest(*request), response);
}

grpc::ServerUnaryReactor* MoondreamService::EncodeImage(grpc::CallbackServerContext* ctx,
                                                        const v1::EncodeImageRequest* request,
                                                        v1::EncodeImageResponse* response) {
  return RunUnary(ctx, "EncodeImage", ToRequest(*request), response);
}

grpc::ServerUnaryReactor* MoondreamService::ListModels(grpc::CallbackServerContext* ctx,
                                                       const v1::ListModelsRequest* request,
                                                       v1::ListModelsResponse* response) {
  auto* call = new UnaryCall(state_->Record("grpc", "ListModels", ""), std::make_shared<CancelFlag>(false),
                             Clock::time_point::max());
  const absl::StatusOr<const Backend*> backend = Admit(*ctx);
  if (!backend.ok()) {
    call->Complete(backend.status(), nullptr);
    return call;
  }
  for (const ModelInfo& info : (*backend)->engine->ListModels()) {
    FillModelInfo(info, response->add_models());
  }
  call->Complete(absl::OkStatus(), nullptr);
  return call;
}

grpc::ServerUnaryReactor* MoondreamService::GetModel(grpc::CallbackServerContext* ctx,
                                                     const v1::GetModelRequest* request,
                                                     v1::ModelInfo* response) {
  auto* call = new UnaryCall(state_->Record("grpc", "GetModel", request->name()),
                             std::make_shared<CancelFlag>(false), Clock::time_point::max());
  const absl::StatusOr<const Backend*> backend = Admit(*ctx);
  if (!backend.ok()) {
    call->Complete(backend.status(), nullptr);
    return call;
  }
  absl::StatusOr<ModelInfo> info = (*backend)->engine->GetModel(request->name());
  if (info.ok()) FillModelInfo(*info, response);
  call->Complete(info.status(), nullptr);
  return call;
}

}  // namespace moondream::server
