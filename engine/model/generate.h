// The two decoding loops: text (caption/query, spec §6.2) and regions (detect/point,
// spec §6.6). Both advance a DecodeState one Prefill call at a time.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "engine/api.h"
#include "engine/model.h"
#include "engine/model/kv_cache.h"
#include "engine/model/language.h"

namespace moondream {

// Intermediate values for parity tests and diagnostics; each filled when reached.
struct GenerationTaps {
  at::Tensor prompt_hidden_last;     // [D] raw hidden at the last prompt position
  at::Tensor logits0;                // fp32 [vocab], logits of the last prompt position
  at::Tensor coord_logits_x;         // first object: fp32 [coord bins]
  at::Tensor coord_logits_y;         // first object: fp32 [coord bins]
  at::Tensor size_logits;            // first object (detect): fp32 [2, size bins]
  at::Tensor encode_coordinate_x;    // first object: embedding [D] fed back for x
  at::Tensor encode_size;            // first object (detect): embedding [D] fed back
};

// A request's private decoder state: its cache (extending the shared prefix) and the next position.
struct DecodeState {
  KvCache cache;
  int64_t pos = 0;
};

// Caption/query: prefill `prompt`, then emit tokens until EOS or `max_tokens` (EOS never
// emitted). Streams valid UTF-8 pieces through ctx.on_text. Fills result text, token_ids,
// finish_reason and usage.generated_tokens; adds prefill/decode/TTFT to ctx.timings.
absl::Status GenerateText(const Language& lm, const std::vector<int32_t>& prompt,
                          const GenerationSettings& settings, int max_tokens,
                          DecodeState& state, const RunContext& ctx, Result& result,
                          GenerationTaps* taps);

// Detect (with_size) / point: prefill `prompt`, then decode objects greedily until EOS or
// `max_objects`. Fills boxes or points, finish_reason and usage.generated_tokens (decoder
// steps); adds prefill/decode/TTFT (TTFT = first object) to ctx.timings.
absl::Status GenerateRegions(const Language& lm, const std::vector<int32_t>& prompt,
                             bool with_size, int max_objects, DecodeState& state,
                             const RunContext& ctx, Result& result, GenerationTaps* taps);

}  // namespace moondream
