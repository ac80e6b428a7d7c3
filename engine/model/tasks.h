// Moondream2 task procedures on top of the decoder (spec §6.1-§6.6): the image prefix
// prefill, prompt construction and one request's run on a cache extending the image prefix.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/api.h"
#include "engine/model.h"
#include "engine/model/generate.h"
#include "engine/model/kv_cache.h"
#include "engine/model/language.h"

namespace moondream {

inline constexpr int kDefaultMaxTokens = 512;   // spec §6.2
inline constexpr int kDefaultMaxObjects = 50;   // spec §6.6

// spec §6.1 steps 2-3: [wte[bos] ‖ image_embeds] at positions 0..prefix_attn-1 with the
// bidirectional prefix mask. image_embeds: [prefix_attn - 1, D]. Returns a cache of exactly
// prefix_attn positions; `hidden` (optional) receives the raw last-layer hidden [prefix, D].
// With `ctx`, deadline and cancellation are checked between layers (StopRequested).
absl::StatusOr<KvCache> PrefillImage(const Language& lm, const at::Tensor& image_embeds,
                                     at::Tensor* hidden, const RunContext* ctx = nullptr);

// Prompt ids for caption / query / detect / point (spec §1.4, §6.3-§6.6). The question or
// object is tokenised as given (no leading space, this revision).
absl::StatusOr<std::vector<int32_t>> BuildPrompt(const Language& lm, const Request& request);

// INVALID_ARGUMENT when the image prefix (prefix_attn positions) + the prompt + an explicit
// max_tokens (caption/query) exceed max_context: such a request could never finish as asked.
absl::Status CheckContextFits(const Language& lm, const Request& request);

// Runs the request on a cache that extends `prefix` (read-only, shared, never copied).
// Fills text/token_ids or boxes/points, usage and finish_reason; adds the prefill/decode/TTFT
// timings to ctx.timings. `live_state_bytes` (optional) holds the bytes of the request's KV
// cache while it runs (added after allocation, subtracted on return).
absl::StatusOr<Result> RunTask(const Language& lm, const Request& request,
                               const KvCache& prefix, const RunContext& ctx,
                               GenerationTaps* taps,
                               std::atomic<uint64_t>* live_state_bytes = nullptr);

}  // namespace moondream
