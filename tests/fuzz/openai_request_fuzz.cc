// libFuzzer target: the JSON body of POST /v1/chat/completions (server/openai.cc,
// ParseChatCompletion: nlohmann-json, data: URIs in base64). Never crashes; an OK result
// holds exactly one image (non-empty bytes) and a task that follows from the text, and an
// error renders as OpenAI's error JSON the way the HTTP front sends it.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "server/openai.h"

namespace {

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "openai_request_fuzz: invariant violated: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace openai = moondream::server::openai;
  using moondream::Task;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<openai::ChatRequest> parsed = openai::ParseChatCompletion(body);
  if (!parsed.ok()) {
    // Every refusal is a client error, and its message (which quotes bounded pieces of the
    // body) must serialise: the HTTP front sends exactly this.
    Check(parsed.status().code() == absl::StatusCode::kInvalidArgument,
          "a refusal is not INVALID_ARGUMENT");
    const openai::ErrorResponse error = openai::ToErrorResponse(parsed.status());
    Check(error.http_status == 400, "a refusal does not map to HTTP 400");
    Check(!error.body.empty() && error.body.front() == '{', "the error body is not JSON");
    return 0;
  }
  const moondream::Request& request = parsed->request;
  Check(!request.image_bytes.empty(), "an accepted request without image bytes");
  Check(request.image_handle.empty(), "an accepted request with an image handle");
  Check(request.task == Task::kQuery || request.task == Task::kCaption,
        "the task is neither query nor caption");
  // Query iff there is text; "caption" with text is refused, so a caption has no text.
  Check((request.task == Task::kQuery) == !request.text.empty(),
        "task query does not match non-empty text");
  Check(request.settings.max_tokens >= 0, "negative max_tokens accepted");  // 0: default
  Check(!parsed->include_usage || body.find("include_usage") != std::string_view::npos,
        "include_usage set without the field");
  return 0;
}
