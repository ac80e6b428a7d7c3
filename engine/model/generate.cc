#include "engine/model/generate.h"

#include <string>

#include "engine/model/sampling.h"
#include "engine/model/status_macros.h"

namespace moondream {
namespace {

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Runs embeds [T, D] at state.pos and advances it; OUT_OF_RANGE when the request's context
// (its cache capacity, at most max_context) is exhausted. Returns the raw hidden [T, D].
absl::StatusOr<at::Tensor> Step(const Language& lm, const at::Tensor& embeds,
                                DecodeState& state) {
  const int64_t t = embeds.size(0);
  if (state.pos + t > state.cache.capacity()) {
    return absl::OutOfRangeError("context overflow: position " +
                                 std::to_string(state.pos + t - 1) + " exceeds the " +
                                 std::to_string(state.cache.capacity()) +
                                 "-position context of this request (max_context " +
                                 std::to_string(lm.config.text.max_context) + ")");
  }
  at::Tensor h = lm.text.Prefill(embeds, state.pos, state.cache);
  state.pos += t;
  return h;
}

at::Tensor Ids(const std::vector<int32_t>& ids) {
  return at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong);
}

// The prompt's last position: raw hidden [D] (for the region head) and logits [vocab].
struct PromptLast {
  at::Tensor hidden;
  at::Tensor logits;
};

// Prefills the prompt (both loops start here); its time, first logits included, is prefill.
absl::StatusOr<PromptLast> PrefillPrompt(const Language& lm, const std::vector<int32_t>& prompt,
                                         DecodeState& state, const RunContext& ctx,
                                         GenerationTaps* taps) {
  MD_RETURN_IF_ERROR(ctx.CheckAlive());
  const Clock::time_point start = Clock::now();
  MD_ASSIGN_OR_RETURN(at::Tensor h, Step(lm, lm.text.Embed(Ids(prompt)), state));
  PromptLast last{h[h.size(0) - 1], {}};
  last.logits = lm.text.Logits(last.hidden);
  if (taps != nullptr) {
    taps->prompt_hidden_last = last.hidden;
    taps->logits0 = last.logits;
  }
  ctx.AddTime(&Timings::prefill_ms, MsSince(start));
  return last;
}

// Streams one emitted token's text (held back while a UTF-8 character is incomplete).
void EmitText(const std::string& piece, const RunContext& ctx, Result& result) {
  if (piece.empty()) return;
  result.text += piece;
  if (ctx.on_text) ctx.on_text(piece);
}

}  // namespace

absl::Status GenerateText(const Language& lm, const std::vector<int32_t>& prompt,
                          const GenerationSettings& settings, int max_tokens,
                          DecodeState& state, const RunContext& ctx, Result& result,
                          GenerationTaps* taps) {
  const Clock::time_point start = Clock::now();
  const int32_t eos = lm.config.tokenizer.eos_id;
  MD_ASSIGN_OR_RETURN(const PromptLast last, PrefillPrompt(lm, prompt, state, ctx, taps));
  const Clock::time_point decode_start = Clock::now();
  Sampler sampler(settings);
  Utf8StreamDecoder utf8;
  int32_t token = sampler.Next(last.logits);
  while (token != eos && static_cast<int>(result.token_ids.size()) < max_tokens) {
    result.token_ids.push_back(token);
    EmitText(utf8.Push(lm.tokenizer.TokenBytes(token)), ctx, result);
    if (result.token_ids.size() == 1) ctx.AddTime(&Timings::time_to_first_token_ms, MsSince(start));
    // The reference runs one more step after the last allowed token and discards it.
    if (static_cast<int>(result.token_ids.size()) == max_tokens) break;
    MD_RETURN_IF_ERROR(ctx.CheckAlive());
    MD_ASSIGN_OR_RETURN(const at::Tensor h, Step(lm, lm.text.Embed(Ids({token})), state));
    token = sampler.Next(lm.text.Logits(h[0]));
  }
  EmitText(utf8.Finish(), ctx, result);
  result.finish_reason = token == eos ? FinishReason::kStop : FinishReason::kLength;
  result.usage.generated_tokens = static_cast<int>(result.token_ids.size());
  ctx.AddTime(&Timings::decode_ms, MsSince(decode_start));
  return absl::OkStatus();
}

namespace {

// One region step: embed [D] at the next position -> raw hidden [D].
absl::StatusOr<at::Tensor> RegionStep(const Language& lm, const at::Tensor& embed,
                                      DecodeState& state, const RunContext& ctx,
                                      Result& result) {
  MD_RETURN_IF_ERROR(ctx.CheckAlive());
  MD_ASSIGN_OR_RETURN(at::Tensor h, Step(lm, embed.unsqueeze(0), state));
  ++result.usage.generated_tokens;
  return h[0];
}

// Decodes one object starting from raw hidden h; returns the hidden after its last step.
absl::StatusOr<at::Tensor> DecodeObject(const Language& lm, at::Tensor h, bool with_size,
                                        DecodeState& state, const RunContext& ctx,
                                        Result& result, GenerationTaps* taps) {
  const bool first = result.boxes.empty() && result.points.empty();
  const at::Tensor x_logits = lm.region.DecodeCoordinate(h);
  const float x = RegionHead::BinValue(x_logits);
  const at::Tensor x_embed = lm.region.EncodeCoordinate(x);
  MD_ASSIGN_OR_RETURN(h, RegionStep(lm, x_embed, state, ctx, result));
  const at::Tensor y_logits = lm.region.DecodeCoordinate(h);
  const float y = RegionHead::BinValue(y_logits);
  MD_ASSIGN_OR_RETURN(h, RegionStep(lm, lm.region.EncodeCoordinate(y), state, ctx, result));
  if (first && taps != nullptr) {
    taps->coord_logits_x = x_logits;
    taps->coord_logits_y = y_logits;
    taps->encode_coordinate_x = x_embed;
  }
  if (!with_size) {
    result.points.push_back(Point{x, y});
    return h;
  }
  const at::Tensor size_logits = lm.region.DecodeSize(h);  // [2, bins]
  const float w = RegionHead::BinValue(size_logits[0]);
  const float hgt = RegionHead::BinValue(size_logits[1]);
  const at::Tensor size_embed = lm.region.EncodeSize(w, hgt);
  MD_ASSIGN_OR_RETURN(h, RegionStep(lm, size_embed, state, ctx, result));
  if (first && taps != nullptr) {
    taps->size_logits = size_logits;
    taps->encode_size = size_embed;
  }
  // Not clamped to [0, 1] (spec §9.21).
  result.boxes.push_back(Box{x - w / 2, y - hgt / 2, x + w / 2, y + hgt / 2});
  return h;
}

}  // namespace

absl::Status GenerateRegions(const Language& lm, const std::vector<int32_t>& prompt,
                             bool with_size, int max_objects, DecodeState& state,
                             const RunContext& ctx, Result& result, GenerationTaps* taps) {
  const Clock::time_point start = Clock::now();
  const int32_t eos = lm.config.tokenizer.eos_id;
  MD_ASSIGN_OR_RETURN(const PromptLast last, PrefillPrompt(lm, prompt, state, ctx, taps));
  const Clock::time_point decode_start = Clock::now();
  at::Tensor h = last.hidden;
  // Detect/point are greedy at every revision (spec §6.6, §8); any non-EOS token means
  // "another object" and is never fed back.
  int32_t token = Argmax(last.logits);
  int objects = 0;
  while (token != eos && objects < max_objects) {
    MD_ASSIGN_OR_RETURN(h, DecodeObject(lm, h, with_size, state, ctx, result, taps));
    if (++objects == 1) ctx.AddTime(&Timings::time_to_first_token_ms, MsSince(start));
    token = Argmax(lm.text.Logits(h));
  }
  result.finish_reason = token == eos ? FinishReason::kStop : FinishReason::kLength;
  ctx.AddTime(&Timings::decode_ms, MsSince(decode_start));
  return absl::OkStatus();
}

}  // namespace moondream
