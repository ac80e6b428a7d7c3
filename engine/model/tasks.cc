#include "engine/model/tasks.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/model/status_macros.h"

namespace moondream {
namespace {

std::vector<int32_t> Template(const Language& lm, const std::string& key) {
  const auto& templates = lm.config.tokenizer.templates;
  const auto it = templates.find(key);
  return it == templates.end() ? std::vector<int32_t>{} : it->second;
}

// prefix ‖ tokens(text) ‖ suffix
std::vector<int32_t> Wrap(const Language& lm, const std::string& task, const std::string& text) {
  std::vector<int32_t> ids = Template(lm, task + "_prefix");
  const std::vector<int32_t> body = lm.tokenizer.Encode(text);
  const std::vector<int32_t> suffix = Template(lm, task + "_suffix");
  ids.insert(ids.end(), body.begin(), body.end());
  ids.insert(ids.end(), suffix.begin(), suffix.end());
  return ids;
}

// Positions a request can reach after the prompt (decoder steps).
int64_t StepBudget(const Request& request, int max_tokens, int max_objects) {
  switch (request.task) {
    case Task::kDetect: return 3 * static_cast<int64_t>(max_objects);
    case Task::kPoint: return 2 * static_cast<int64_t>(max_objects);
    default: return max_tokens;
  }
}

// Adds `bytes` to a live counter for its own lifetime.
class LiveBytes {
 public:
  LiveBytes(std::atomic<uint64_t>* counter, uint64_t bytes)
      : counter_(counter), bytes_(counter != nullptr ? bytes : 0) {
    if (counter_ != nullptr) *counter_ += bytes_;
  }
  ~LiveBytes() {
    if (counter_ != nullptr) *counter_ -= bytes_;
  }
  LiveBytes(const LiveBytes&) = delete;
  LiveBytes& operator=(const LiveBytes&) = delete;

 private:
  std::atomic<uint64_t>* counter_;
  uint64_t bytes_;
};

}  // namespace

absl::StatusOr<KvCache> PrefillImage(const Language& lm, const at::Tensor& image_embeds,
                                     at::Tensor* hidden, const RunContext* ctx) {
  const TextConfig& cfg = lm.config.text;
  if (image_embeds.dim() != 2 || image_embeds.size(0) != cfg.prefix_attn - 1 ||
      image_embeds.size(1) != cfg.dim) {
    return absl::InvalidArgumentError("image embeddings must be [" +
                                      std::to_string(cfg.prefix_attn - 1) + ", " +
                                      std::to_string(cfg.dim) + "]");
  }
  const at::Tensor bos = lm.text.Embed(
      at::full({1}, lm.config.tokenizer.bos_id, at::TensorOptions().dtype(at::kLong)));
  const at::Tensor seq = at::cat({bos.to(image_embeds.device()),
                                  image_embeds.to(lm.text.dtype())});  // [prefix, D]
  KvCache cache =
      KvCache::Allocate(cfg, cfg.prefix_attn, lm.kv_dtype, image_embeds.device());
  at::Tensor h = lm.text.Prefill(seq, 0, cache, ctx);
  if (hidden != nullptr) *hidden = h;
  return cache;
}

absl::StatusOr<std::vector<int32_t>> BuildPrompt(const Language& lm, const Request& request) {
  switch (request.task) {
    case Task::kCaption:
      return Template(lm, request.caption_length == CaptionLength::kShort ? "caption_short"
                                                                          : "caption_normal");
    case Task::kQuery: return Wrap(lm, "query", request.text);
    case Task::kDetect: return Wrap(lm, "detect", request.text);
    case Task::kPoint: return Wrap(lm, "point", request.text);
    default:
      return absl::InvalidArgumentError(std::string("task ") + TaskName(request.task) +
                                        " does not generate");
  }
}

absl::Status CheckContextFits(const Language& lm, const Request& request) {
  MD_ASSIGN_OR_RETURN(const std::vector<int32_t> prompt, BuildPrompt(lm, request));
  const int64_t image = lm.config.text.prefix_attn;
  const bool generates_text = request.task == Task::kCaption || request.task == Task::kQuery;
  const int64_t max_tokens = generates_text ? request.settings.max_tokens : 0;
  const int64_t max_context = lm.config.text.max_context;
  if (image + static_cast<int64_t>(prompt.size()) + max_tokens <= max_context) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "prompt of ", prompt.size(), " tokens", max_tokens > 0 ? " + settings.max_tokens " : "",
      max_tokens > 0 ? absl::StrCat(max_tokens) : "", " do not fit the ", max_context,
      "-position context after the ", image, " image positions"));
}

absl::StatusOr<Result> RunTask(const Language& lm, const Request& request,
                               const KvCache& prefix, const RunContext& ctx,
                               GenerationTaps* taps,
                               std::atomic<uint64_t>* live_state_bytes) {
  MD_ASSIGN_OR_RETURN(const std::vector<int32_t> prompt, BuildPrompt(lm, request));
  const int max_tokens =
      request.settings.max_tokens > 0 ? request.settings.max_tokens : kDefaultMaxTokens;
  const int max_objects = request.max_objects > 0 ? request.max_objects : kDefaultMaxObjects;
  const int64_t start = prefix.length();
  const int64_t max_context = lm.config.text.max_context;
  if (start + static_cast<int64_t>(prompt.size()) > max_context) {
    return absl::OutOfRangeError("prompt of " + std::to_string(prompt.size()) +
                                 " tokens does not fit the context of " +
                                 std::to_string(max_context) + " positions");
  }
  const int64_t needed = start + static_cast<int64_t>(prompt.size()) +
                         StepBudget(request, max_tokens, max_objects);
  DecodeState state{KvCache::Extend(prefix, std::min(max_context, needed)), start};
  const LiveBytes live(live_state_bytes, state.cache.bytes());

  Result result;
  result.usage.image_tokens = static_cast<int>(start);
  result.usage.prompt_tokens = static_cast<int>(prompt.size());
  absl::Status status;
  switch (request.task) {
    case Task::kDetect:
    case Task::kPoint:
      status = GenerateRegions(lm, prompt, request.task == Task::kDetect, max_objects, state,
                               ctx, result, taps);
      break;
    default:
      status = GenerateText(lm, prompt, request.settings, max_tokens, state, ctx, result, taps);
  }
  MD_RETURN_IF_ERROR(status);
  return result;
}

}  // namespace moondream
