#include "server/openai.h"

#include <chrono>
#include <cstdio>
#include <limits>
#include <random>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moondream::server::openai {
namespace {

using json = nlohmann::json;

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

constexpr absl::string_view kOneUserMessage =
    "Moondream2 answers one user message holding one image (and optionally a question); ";

// Image types a data: URI may declare; application/octet-stream is sniffed like the rest.
bool AcceptedImageType(absl::string_view mime) {
  static constexpr absl::string_view kTypes[] = {"image/jpeg", "image/jpg", "image/png",
                                                "image/webp", "image/gif",
                                                "application/octet-stream"};
  for (absl::string_view type : kTypes) {
    if (absl::EqualsIgnoreCase(mime, type)) return true;
  }
  return false;
}

// data:[<mime>][;param]*;base64,<payload> -> the decoded bytes.
absl::StatusOr<std::string> DecodeDataUri(absl::string_view url) {
  if (absl::StartsWithIgnoreCase(url, "http://") || absl::StartsWithIgnoreCase(url, "https://")) {
    return Invalid(
        "image_url: remote image URLs are not fetched (the server makes no outbound "
        "requests); send the image inline as a data:image/...;base64 URI");
  }
  if (!absl::StartsWithIgnoreCase(url, "data:")) {
    return Invalid("image_url: expected a data:image/...;base64,... URI");
  }
  const size_t comma = url.find(',');
  if (comma == absl::string_view::npos) return Invalid("image_url: data URI without a comma");
  const absl::string_view meta = url.substr(5, comma - 5);
  if (!absl::EndsWithIgnoreCase(meta, ";base64")) {
    return Invalid("image_url: the data URI must be base64 (data:image/png;base64,...)");
  }
  const absl::string_view mime = meta.substr(0, meta.find(';'));
  if (!mime.empty() && !AcceptedImageType(mime)) {
    return Invalid(absl::StrCat("image_url: unsupported image type \"",
                                mime.substr(0, 64), "\" (JPEG, PNG, WebP or GIF)"));
  }
  std::string bytes;
  if (!absl::Base64Unescape(url.substr(comma + 1), &bytes)) {
    return Invalid("image_url: the data URI is not valid base64");
  }
  if (bytes.empty()) return Invalid("image_url: the data URI holds no bytes");
  return bytes;
}

// One content part of the user message: text is appended, the image stored.
absl::Status AddPart(const json& part, std::vector<std::string>* texts, std::string* image,
                     int* images) {
  if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
    return Invalid("messages[0].content: each part needs a \"type\"");
  }
  const std::string type = part["type"].get<std::string>();
  if (type == "text") {
    if (!part.contains("text") || !part["text"].is_string()) {
      return Invalid("messages[0].content: a text part needs a string \"text\"");
    }
    texts->push_back(part["text"].get<std::string>());
    return absl::OkStatus();
  }
  if (type != "image_url") {
    return Invalid(absl::StrCat("messages[0].content: unsupported part type \"",
                                type.substr(0, 32), "\" (text or image_url)"));
  }
  if (++*images > 1) {
    return Invalid(absl::StrCat(kOneUserMessage, "this message has several images"));
  }
  const json* url = nullptr;
  if (part.contains("image_url") && part["image_url"].is_string()) {
    url = &part["image_url"];
  } else if (part.contains("image_url") && part["image_url"].is_object() &&
             part["image_url"].contains("url") && part["image_url"]["url"].is_string()) {
    url = &part["image_url"]["url"];
  } else {
    return Invalid("messages[0].content: an image_url part needs image_url.url");
  }
  absl::StatusOr<std::string> bytes = DecodeDataUri(url->get_ref<const std::string&>());
  if (!bytes.ok()) return bytes.status();
  *image = *std::move(bytes);
  return absl::OkStatus();
}

// messages -> the image and the question (empty: none) of the single user message.
absl::Status ParseMessages(const json& messages, Request* request) {
  if (!messages.is_array() || messages.empty()) {
    return Invalid("messages: expected a non-empty array");
  }
  for (const json& message : messages) {
    if (!message.is_object() || !message.contains("role") || !message["role"].is_string()) {
      return Invalid("messages: each message needs a string \"role\"");
    }
    const std::string role = message["role"].get<std::string>();
    if (role == "system" || role == "developer") {
      return Invalid(absl::StrCat(kOneUserMessage, role,
                                  " messages are not supported (Moondream2 has no system prompt)"));
    }
    if (role != "user") {
      return Invalid(absl::StrCat(kOneUserMessage, "earlier turns (role \"",
                                  role.substr(0, 32), "\") are not supported"));
    }
  }
  if (messages.size() > 1) {
    return Invalid(absl::StrCat(kOneUserMessage, "got ", messages.size(), " user messages"));
  }
  const json& message = messages[0];
  if (!message.contains("content")) return Invalid("messages[0].content: missing");
  const json& content = message["content"];
  std::vector<std::string> texts;
  int images = 0;
  if (content.is_string()) {
    texts.push_back(content.get<std::string>());
  } else if (content.is_array()) {
    for (const json& part : content) {
      if (absl::Status s = AddPart(part, &texts, &request->image_bytes, &images); !s.ok()) return s;
    }
  } else {
    return Invalid("messages[0].content: expected a string or an array of parts");
  }
  if (images == 0) {
    return Invalid(absl::StrCat(kOneUserMessage,
                                "add an image_url part with a data:image/...;base64 URI"));
  }
  request->text = std::string(absl::StripAsciiWhitespace(absl::StrJoin(texts, "\n")));
  return absl::OkStatus();
}

bool Present(const json& body, const char* name) {
  return body.contains(name) && !body[name].is_null();
}

// An optional number field: absent or null leaves *out unchanged.
template <typename T>
absl::Status ReadNumber(const json& body, const char* name, T* out) {
  if (!Present(body, name)) return absl::OkStatus();
  const json& value = body[name];
  if (!value.is_number()) return Invalid(absl::StrCat(name, ": expected a number"));
  if constexpr (std::is_integral_v<T>) {
    if (!value.is_number_integer()) return Invalid(absl::StrCat(name, ": expected an integer"));
  }
  *out = value.get<T>();
  return absl::OkStatus();
}

absl::Status ReadSettings(const json& body, GenerationSettings* settings) {
  int64_t max_tokens = 0, max_completion_tokens = 0, n = 1, seed = 0;
  double temperature = settings->temperature, top_p = settings->top_p;
  for (absl::Status s : {ReadNumber(body, "max_tokens", &max_tokens),
                         ReadNumber(body, "max_completion_tokens", &max_completion_tokens),
                         ReadNumber(body, "n", &n), ReadNumber(body, "seed", &seed),
                         ReadNumber(body, "temperature", &temperature),
                         ReadNumber(body, "top_p", &top_p)}) {
    if (!s.ok()) return s;
  }
  if (n != 1) return Invalid("n: only 1 completion per request is supported");
  // Neither given: the model's default; max_completion_tokens wins over max_tokens.
  const bool completion_given = Present(body, "max_completion_tokens");
  if (completion_given || Present(body, "max_tokens")) {
    const int64_t limit = completion_given ? max_completion_tokens : max_tokens;
    if (limit < 1) return Invalid("max_tokens: must be at least 1");
    settings->max_tokens =
        static_cast<int>(std::min<int64_t>(limit, std::numeric_limits<int>::max()));
  }
  settings->temperature = static_cast<float>(temperature);
  settings->top_p = static_cast<float>(top_p);
  settings->seed = static_cast<uint64_t>(seed);
  return absl::OkStatus();
}

absl::StatusOr<bool> ReadBool(const json& body, const char* name, bool fallback) {
  if (!Present(body, name)) return fallback;
  if (!body[name].is_boolean()) return Invalid(absl::StrCat(name, ": expected true or false"));
  return body[name].get<bool>();
}

// The extension field "caption": "short" | "normal" asks for Caption instead of Query.
absl::Status ReadTask(const json& body, Request* request) {
  if (!Present(body, "caption")) {
    request->task = request->text.empty() ? Task::kCaption : Task::kQuery;
    return absl::OkStatus();
  }
  const json& caption = body["caption"];
  if (!caption.is_string() || (caption != "short" && caption != "normal")) {
    return Invalid("caption: expected \"short\" or \"normal\"");
  }
  if (!request->text.empty()) {
    return Invalid("caption: a caption request takes an image and no text");
  }
  request->task = Task::kCaption;
  request->caption_length = caption == "short" ? CaptionLength::kShort : CaptionLength::kNormal;
  return absl::OkStatus();
}

const char* FinishReasonName(FinishReason reason) {
  return reason == FinishReason::kLength ? "length" : "stop";
}

json UsageJson(const Usage& usage) {
  const int prompt = usage.prompt_tokens + usage.image_tokens;
  return {{"prompt_tokens", prompt},
          {"completion_tokens", usage.generated_tokens},
          {"total_tokens", prompt + usage.generated_tokens}};
}

json ChunkBase(const Completion& c) {
  return {{"id", c.id}, {"object", "chat.completion.chunk"}, {"created", c.created},
          {"model", c.model}};
}

std::string Event(const json& payload) {
  return absl::StrCat("data: ", payload.dump(-1, ' ', false, json::error_handler_t::replace),
                      "\n\n");
}

json DeltaChunk(const Completion& c, json delta, json finish_reason) {
  json chunk = ChunkBase(c);
  chunk["choices"] = json::array({{{"index", 0},
                                   {"delta", std::move(delta)},
                                   {"logprobs", nullptr},
                                   {"finish_reason", std::move(finish_reason)}}});
  return chunk;
}

struct ErrorKind {
  int http_status;
  const char* type;
  const char* code;  // nullptr: JSON null
};

ErrorKind KindOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: return {400, "invalid_request_error", nullptr};
    case absl::StatusCode::kUnauthenticated: return {401, "authentication_error", "invalid_api_key"};
    case absl::StatusCode::kPermissionDenied: return {403, "permission_error", nullptr};
    case absl::StatusCode::kNotFound: return {404, "invalid_request_error", "model_not_found"};
    case absl::StatusCode::kResourceExhausted: return {429, "rate_limit_error", "server_busy"};
    case absl::StatusCode::kCancelled: return {499, "invalid_request_error", "cancelled"};
    case absl::StatusCode::kUnimplemented: return {501, "invalid_request_error", nullptr};
    case absl::StatusCode::kUnavailable: return {503, "server_error", "unavailable"};
    case absl::StatusCode::kDeadlineExceeded: return {504, "timeout", "deadline_exceeded"};
    default: return {500, "server_error", nullptr};
  }
}

json ErrorJson(std::string_view message, const char* type, const char* code) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", nullptr},
            {"code", code ? json(code) : json(nullptr)}}}};
}

json ModelObject(const ModelInfo& info, int64_t created) {
  return {{"id", info.name}, {"object", "model"}, {"created", created},
          {"owned_by", "moondream-server"}};
}

std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

absl::StatusOr<ChatRequest> ParseChatCompletion(std::string_view body) {
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return Invalid("the request body is not a JSON object");
  }
  ChatRequest out;
  Request& request = out.request;
  if (Present(parsed, "model")) {
    if (!parsed["model"].is_string()) return Invalid("model: expected a string");
    request.model = parsed["model"].get<std::string>();
  }
  if (!parsed.contains("messages")) return Invalid("messages: missing");
  if (absl::Status s = ParseMessages(parsed["messages"], &request); !s.ok()) return s;
  if (absl::Status s = ReadTask(parsed, &request); !s.ok()) return s;
  if (absl::Status s = ReadSettings(parsed, &request.settings); !s.ok()) return s;
  absl::StatusOr<bool> stream = ReadBool(parsed, "stream", false);
  if (!stream.ok()) return stream.status();
  out.stream = *stream;
  if (parsed.contains("stream_options") && parsed["stream_options"].is_object()) {
    absl::StatusOr<bool> usage = ReadBool(parsed["stream_options"], "include_usage", false);
    if (!usage.ok()) return usage.status();
    out.include_usage = *usage;
  }
  if (Present(parsed, "flatten_transparency")) {
    absl::StatusOr<bool> flatten = ReadBool(parsed, "flatten_transparency", false);
    if (!flatten.ok()) return flatten.status();
    request.transparency = *flatten ? Transparency::kFlattenOntoWhite : Transparency::kDrop;
  }
  return out;
}

Completion NewCompletion(std::string model) {
  thread_local std::mt19937_64 random(std::random_device{}());
  char id[64];
  std::snprintf(id, sizeof(id), "chatcmpl-%016llx%08llx",
                static_cast<unsigned long long>(random()),
                static_cast<unsigned long long>(random() & 0xffffffffu));
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return {id, std::chrono::duration_cast<std::chrono::seconds>(now).count(), std::move(model)};
}

std::string CompletionJson(const Completion& c, const Result& result) {
  const json body = {
      {"id", c.id},
      {"object", "chat.completion"},
      {"created", c.created},
      {"model", result.model.empty() ? c.model : result.model},
      {"choices", json::array({{{"index", 0},
                                {"message", {{"role", "assistant"}, {"content", result.text}}},
                                {"logprobs", nullptr},
                                {"finish_reason", FinishReasonName(result.finish_reason)}}})},
      {"usage", UsageJson(result.usage)}};
  return Dump(body);
}

std::string RoleEvent(const Completion& c) {
  return Event(DeltaChunk(c, {{"role", "assistant"}, {"content", ""}}, nullptr));
}

std::string ContentEvent(const Completion& c, std::string_view text) {
  return Event(DeltaChunk(c, {{"content", text}}, nullptr));
}

std::string FinishEvent(const Completion& c, FinishReason reason) {
  return Event(DeltaChunk(c, json::object(), FinishReasonName(reason)));
}

std::string UsageEvent(const Completion& c, const Usage& usage) {
  json chunk = ChunkBase(c);
  chunk["choices"] = json::array();
  chunk["usage"] = UsageJson(usage);
  return Event(chunk);
}

std::string ErrorEvent(const absl::Status& status) {
  const ErrorKind kind = KindOf(status.code());
  return Event(ErrorJson(std::string(status.message()), kind.type, kind.code));
}

std::string ModelJson(const ModelInfo& info, int64_t created) {
  return Dump(ModelObject(info, created));
}

std::string ModelListJson(const std::vector<ModelInfo>& models, int64_t created) {
  json data = json::array();
  for (const ModelInfo& info : models) data.push_back(ModelObject(info, created));
  return Dump({{"object", "list"}, {"data", std::move(data)}});
}

ErrorResponse ToErrorResponse(const absl::Status& status) {
  const ErrorKind kind = KindOf(status.code());
  return {kind.http_status, Dump(ErrorJson(std::string(status.message()), kind.type, kind.code))};
}

ErrorResponse HttpError(int http_status, std::string_view message) {
  if (http_status == 429) {
    return {429, Dump(ErrorJson(message, "rate_limit_error", "server_busy"))};
  }
  const char* type = http_status >= 500 ? "server_error" : "invalid_request_error";
  const char* code = http_status == 404 ? "not_found"
                     : http_status == 405 ? "method_not_allowed"
                     : http_status == 411 ? "length_required"
                     : http_status == 413 ? "request_too_large"
                                          : nullptr;
  return {http_status, Dump(ErrorJson(message, type, code))};
}

}  // namespace moondream::server::openai
