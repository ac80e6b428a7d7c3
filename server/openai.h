// OpenAI's chat-completions and models API as JSON <-> engine structs: pure functions,
// no transport. The mapping (which messages are accepted, how Caption is asked for, what
// each status code becomes) is documented in docs/http.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/api.h"

namespace moondream::server::openai {

struct ChatRequest {
  Request request;  // task, model, image bytes, text, settings, transparency
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// Parses and validates a POST /v1/chat/completions body. INVALID_ARGUMENT names the field.
absl::StatusOr<ChatRequest> ParseChatCompletion(std::string_view body);

// The identity every chunk of one completion repeats.
struct Completion {
  std::string id;  // "chatcmpl-" + 24 random hex digits
  int64_t created = 0;
  std::string model;
};
Completion NewCompletion(std::string model);

std::string CompletionJson(const Completion& completion, const Result& result);

// Server-sent events of a streamed completion, each "data: ...\n\n".
std::string RoleEvent(const Completion& completion);  // first: delta.role = assistant
std::string ContentEvent(const Completion& completion, std::string_view text);
std::string FinishEvent(const Completion& completion, FinishReason reason);
std::string UsageEvent(const Completion& completion, const Usage& usage);
std::string ErrorEvent(const absl::Status& status);
inline constexpr std::string_view kDoneEvent = "data: [DONE]\n\n";

std::string ModelJson(const ModelInfo& info, int64_t created);
std::string ModelListJson(const std::vector<ModelInfo>& models, int64_t created);

// An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
struct ErrorResponse {
  int http_status = 500;
  std::string body;
};
ErrorResponse ToErrorResponse(const absl::Status& status);
// For refusals that have an HTTP status but no engine status (404 route, 405, 411, 413,
// 429 body budget, 431).
ErrorResponse HttpError(int http_status, std::string_view message);

}  // namespace moondream::server::openai
