#include "server/http_service.h"

#include <chrono>
#include <string_view>

#include "absl/status/status.h"
#include "server/openai.h"

namespace moondream::server {
namespace {

constexpr char kJson[] = "application/json";
constexpr char kText[] = "text/plain; charset=utf-8";
constexpr char kPrometheus[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kModelsPath = "/v1/models";

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void SendError(http::Responder& responder, const absl::Status& status) {
  openai::ErrorResponse error = openai::ToErrorResponse(status);
  responder.Send(error.http_status, kJson, std::move(error.body));
}

void SendHttpError(http::Responder& responder, int http_status, std::string_view message) {
  openai::ErrorResponse error = openai::HttpError(http_status, message);
  responder.Send(error.http_status, kJson, std::move(error.body));
}

// One chat completion in flight: answers unary or as server-sent events, and reports
// the call when it ends. Engine callbacks run on one engine thread, one after another.
class ChatCall {
 public:
  ChatCall(CallRecord record, std::shared_ptr<http::Responder> responder,
           openai::Completion completion, bool stream, bool include_usage)
      : record_(std::move(record)),
        responder_(std::move(responder)),
        completion_(std::move(completion)),
        stream_(stream),
        include_usage_(include_usage) {}

  void OnText(std::string_view text) {
    StartStream();
    responder_->Write(openai::ContentEvent(completion_, text));
  }

  void OnDone(const absl::StatusOr<Result>& result) {
    record_.Report(result.status(), result.ok() ? &*result : nullptr);
    if (!result.ok()) return Fail(result.status());
    if (!stream_) {
      return responder_->Send(200, kJson, openai::CompletionJson(completion_, *result));
    }
    StartStream();
    responder_->Write(openai::FinishEvent(completion_, result->finish_reason));
    if (include_usage_) responder_->Write(openai::UsageEvent(completion_, result->usage));
    responder_->Write(std::string(openai::kDoneEvent));
    responder_->End();
  }

  // Before the first byte of an answer the error gets its own HTTP status; after it, an
  // error event ends the stream.
  void Fail(const absl::Status& status) {
    if (!started_) return SendError(*responder_, status);
    responder_->Write(openai::ErrorEvent(status));
    responder_->End();
  }

 private:
  // The 200 header and the role chunk go out with the first text (or the end), so that
  // errors before any output keep their status code.
  void StartStream() {
    if (started_) return;
    started_ = true;
    responder_->BeginStream("text/event-stream");
    responder_->Write(openai::RoleEvent(completion_));
  }

  CallRecord record_;
  std::shared_ptr<http::Responder> responder_;
  openai::Completion completion_;
  const bool stream_;
  const bool include_usage_;
  bool started_ = false;
};

}  // namespace

HttpService::HttpService(const ServingState* state, std::chrono::seconds stall_timeout)
    : state_(state), stall_timeout_(stall_timeout), created_(UnixNow()) {}

http::Handler HttpService::ApiHandler() {
  return [this](const http::HttpRequest& request, std::shared_ptr<http::Responder> responder) {
    if (!ServeOps(request, *responder)) ServeApi(request, std::move(responder));
  };
}

http::Handler HttpService::OpsHandler() {
  return [this](const http::HttpRequest& request, std::shared_ptr<http::Responder> responder) {
    if (!ServeOps(request, *responder)) {
      responder->Send(404, kText, "this port serves /metrics, /healthz and /readyz\n");
    }
  };
}

std::pair<std::string, std::string> HttpService::ErrorBody(int status, const std::string& message) {
  return {kJson, openai::HttpError(status, message).body};
}

bool HttpService::ServeOps(const http::HttpRequest& request, http::Responder& responder) const {
  const std::string& path = request.path;
  if (path != "/metrics" && path != "/healthz" && path != "/readyz") return false;
  if (request.method != "GET") {
    responder.Send(405, kText, "use GET\n");
  } else if (path == "/metrics") {
    responder.Send(200, kPrometheus, state_->metrics()->Render());
  } else if (path == "/healthz") {
    Liveness(responder);
  } else if (state_->draining()) {
    responder.Send(503, kText, "draining\n");
  } else if (state_->backend() == nullptr) {
    responder.Send(503, kText, "loading\n");
  } else {
    responder.Send(200, kText, "ready\n");
  }
  return true;
}

void HttpService::Liveness(http::Responder& responder) const {
  const Backend* backend = state_->backend();
  const double overrun = backend ? backend->engine->Stats().worst_overrun_seconds : 0;
  if (overrun >= static_cast<double>(stall_timeout_.count())) {
    return responder.Send(503, kText,
                          "stuck: a worker is still running a request " +
                              std::to_string(static_cast<int>(overrun)) +
                              " s after its deadline (--stall-timeout)\n");
  }
  responder.Send(200, kText, "ok\n");
}

void HttpService::ServeApi(const http::HttpRequest& request,
                           std::shared_ptr<http::Responder> responder) {
  const std::string& path = request.path;
  if (path == "/v1/chat/completions") {
    if (request.method != "POST") return SendHttpError(*responder, 405, "use POST");
    return ChatCompletions(request, std::move(responder));
  }
  if (path == kModelsPath || path.rfind(std::string(kModelsPath) + "/", 0) == 0) {
    if (request.method != "GET") return SendHttpError(*responder, 405, "use GET");
    const std::string name = path.size() > kModelsPath.size() ? path.substr(kModelsPath.size() + 1) : "";
    return Models(request, name, *responder);
  }
  SendHttpError(*responder, 404,
                "no such route; this server offers POST /v1/chat/completions and GET /v1/models");
}

void HttpService::Models(const http::HttpRequest& request, const std::string& name,
                         http::Responder& responder) {
  const bool list = name.empty();
  const CallRecord record = state_->Record("http", list ? "ListModels" : "GetModel", name);
  absl::StatusOr<const Backend*> backend = state_->Admit(request.authorization);
  if (!backend.ok()) {
    record.Report(backend.status(), nullptr);
    return SendError(responder, backend.status());
  }
  const Engine* engine = (*backend)->engine;
  if (list) {
    record.Report(absl::OkStatus(), nullptr);
    return responder.Send(200, kJson, openai::ModelListJson(engine->ListModels(), created_));
  }
  absl::StatusOr<ModelInfo> info = engine->GetModel(name);
  record.Report(info.status(), nullptr);
  if (!info.ok()) return SendError(responder, info.status());
  responder.Send(200, kJson, openai::ModelJson(*info, created_));
}

void HttpService::ChatCompletions(const http::HttpRequest& request,
                                  std::shared_ptr<http::Responder> responder) {
  absl::StatusOr<openai::ChatRequest> chat = openai::ParseChatCompletion(request.body);
  const bool stream = chat.ok() && chat->stream;
  const char* method = stream ? "StreamChatCompletions" : "ChatCompletions";
  CallRecord record = state_->Record("http", method, chat.ok() ? chat->request.model : "");
  absl::StatusOr<const Backend*> backend = state_->Admit(request.authorization);
  const absl::Status admitted = !backend.ok() ? backend.status() : chat.status();
  if (!admitted.ok()) {
    record.Report(admitted, nullptr);
    return SendError(*responder, admitted);
  }
  Request& engine_request = chat->request;
  const ModelCatalog& catalog = (*backend)->catalog;
  auto call = std::make_shared<ChatCall>(
      std::move(record), responder,
      openai::NewCompletion(engine_request.model.empty() ? catalog.default_model
                                                         : engine_request.model),
      stream, chat->include_usage);
  // A client that hangs up cancels the request, as a cancelled gRPC call does.
  responder->OnDisconnect([cancel = engine_request.cancel] { cancel->store(true); });
  Callbacks callbacks;
  if (stream) callbacks.on_text = [call](std::string_view text) { call->OnText(text); };
  callbacks.on_done = [call](absl::StatusOr<Result> result) { call->OnDone(result); };
  const absl::Status submitted =
      (*backend)->engine->Submit(std::move(engine_request), std::move(callbacks));
  if (!submitted.ok()) call->OnDone(submitted);
}

}  // namespace moondream::server
