// Internal interface between the engine core (scheduler, image cache) and one loaded
// model variant (Moondream2 in some precision, or the weight-free test model).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/api.h"

namespace moondream {

class PixelBudget;  // engine/image/pixel_budget.h

// An image after decode + vision encode (+ for Moondream, the prefix KV cache).
// Immutable and shared: one encoding serves many requests (EncodeImage handles);
// each request keeps what it mutates in its own state (for Moondream, a KV segment that
// extends the shared, read-only prefix).
class EncodedImage {
 public:
  virtual ~EncodedImage() = default;
  virtual uint64_t bytes() const = 0;  // memory held, for the cache budget
  int width = 0, height = 0;           // original image size in pixels
};

// Per-request state the model reads and writes; passed explicitly, never hidden.
struct RunContext {
  Clock::time_point deadline = Clock::time_point::max();
  const CancelFlag* cancel = nullptr;
  std::function<void(std::string_view)> on_text;  // streaming; may be empty
  Timings* timings = nullptr;                      // every stage adds its time here (AddTime)
  bool flatten_transparency = false;               // image decode: alpha onto white
  // Pixels being decoded, shared by every worker (DecodeImage's budget); may be null.
  PixelBudget* decode_budget = nullptr;

  // OK, CANCELLED or DEADLINE_EXCEEDED. Models call it between steps so that a
  // request stops within one token step.
  absl::Status CheckAlive() const;
  // Adds `ms` to the stage `stage` of *timings; nothing when timings is null.
  void AddTime(double Timings::*stage, double ms) const {
    if (timings != nullptr) timings->*stage += ms;
  }
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelInfo& info() const = 0;

  // Decodes (INVALID_ARGUMENT on bad bytes) and encodes an image.
  virtual absl::StatusOr<std::shared_ptr<const EncodedImage>> Encode(
      std::string_view image_bytes, const RunContext& ctx) const = 0;

  // Runs Caption/Query/Detect/Point on an encoded image. Fills the Result's text,
  // token_ids, boxes/points, usage and finish_reason.
  // Timings: one channel. Encode and Run add their stages to ctx.timings (Encode: image
  // decode, vision, image prefill; Run: prefill, decode, TTFT); the scheduler copies it
  // into Result.timings once, with queue_ms and total_ms. Models never write Result.timings.
  virtual absl::StatusOr<Result> Run(const Request& request, const EncodedImage& image,
                                     const RunContext& ctx) const = 0;

  // Checks, at submit and before any work, that the request can run on this model (for
  // Moondream: its prompt tokens + an explicit max_tokens fit the text context).
  // INVALID_ARGUMENT otherwise. Cheap (tokenizes the prompt at most).
  virtual absl::Status Admit(const Request& request) const { return absl::OkStatus(); }

  // Bytes of per-request state (KV caches) of this model's requests running now.
  virtual uint64_t request_state_bytes() const { return 0; }
};

}  // namespace moondream
