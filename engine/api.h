// Plain C++ structs that cross the transport/engine boundary.
//
// server/ builds a Request from a gRPC message and receives a Result back; engine/
// knows nothing of gRPC and server/ nothing of tensors. Nothing here includes ATen.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace moondream {

using Clock = std::chrono::steady_clock;

enum class Task { kCaption, kQuery, kDetect, kPoint, kEncodeImage };
const char* TaskName(Task task);  // "caption", "query", ...

enum class CaptionLength { kShort, kNormal };

enum class FinishReason { kNone, kStop, kLength };

// What happens to an image's alpha channel before the model sees it. The reference (and
// so the default) drops it, as Pillow's convert("RGB") does: transparent pixels show the
// colour stored under them, often black. kFlattenOntoWhite composites onto white first,
// as meme_search's own provider does (its issue #147).
enum class Transparency { kServerDefault, kDrop, kFlattenOntoWhite };

// Sampling settings; the defaults are greedy decoding, like the reference.
struct GenerationSettings {
  int max_tokens = 0;        // 0 = model default (512)
  float temperature = 0.0f;  // 0 = argmax
  float top_p = 1.0f;        // [0, 1]; 0 means 1 (no truncation)
  uint64_t seed = 0;
};

// Set by the transport when the client cancels; read by the engine between steps.
using CancelFlag = std::atomic<bool>;

struct Request {
  Task task = Task::kCaption;
  std::string model;         // empty = default model
  std::string image_bytes;   // encoded image file (JPEG/PNG/WebP/GIF), owned ...
  // ... or the same bytes borrowed from the transport's message, which must stay alive
  // until on_done has run (gRPC: the call's request message): no copy of up to
  // --max-message-bytes per request. The engine reads either through image().
  std::string_view image_borrowed;
  std::string image_handle;  // ... or a handle from an earlier EncodeImage
  Transparency transparency = Transparency::kServerDefault;  // applies to image_bytes
  CaptionLength caption_length = CaptionLength::kNormal;
  std::string text;  // the question (Query) or object name (Detect, Point)
  GenerationSettings settings;
  int max_objects = 0;  // Detect/Point; 0 = model default (50)
  Clock::time_point deadline = Clock::time_point::max();
  std::shared_ptr<CancelFlag> cancel = std::make_shared<CancelFlag>(false);

  std::string_view image() const {
    return image_borrowed.empty() ? std::string_view(image_bytes) : image_borrowed;
  }
};

struct Usage {
  int prompt_tokens = 0;
  int image_tokens = 0;
  int generated_tokens = 0;
};

// Milliseconds per stage; 0 for stages that did not run.
struct Timings {
  double queue_ms = 0;
  double image_decode_ms = 0;
  double vision_encode_ms = 0;   // vision tower, stitching and projection
  double image_prefill_ms = 0;   // the image's 730 positions through the text decoder (its KV prefix)
  double prefill_ms = 0;         // the prompt
  double decode_ms = 0;
  double time_to_first_token_ms = 0;
  double total_ms = 0;
};

struct Box {
  float x_min = 0, y_min = 0, x_max = 0, y_max = 0;
};

struct Point {
  float x = 0, y = 0;
};

struct Result {
  std::string model;                 // name of the model that served the request
  std::string text;                  // Caption / Query
  std::vector<int32_t> token_ids;    // generated ids, end-of-text excluded
  std::vector<Box> boxes;            // Detect
  std::vector<Point> points;         // Point
  std::string image_handle;          // EncodeImage
  uint64_t image_cached_bytes = 0;   // EncodeImage
  FinishReason finish_reason = FinishReason::kNone;
  Usage usage;
  Timings timings;
};

// Weight memory of one component at one precision.
struct ComponentWeights {
  std::string component;  // vision, projection, text, region
  std::string precision;  // fp32, bf16, fp16, int8
  uint64_t bytes = 0;
  uint64_t parameters = 0;
};

struct QuantizationSummary {
  std::string scheme;  // empty when the model is not quantized
  int quantized_layers = 0;
  int full_precision_layers = 0;
  double mean_sqnr_db = 0;
  double min_sqnr_db = 0;
  std::string worst_layer;
  double max_abs_error = 0;
  double clipped_fraction = 0;
  // INT8 smoothing (--int8-smoothing): layers whose input channels were shifted or
  // rescaled, and the worst spread (max / median channel range) of any layer's input (that
  // layer: smoothing_worst_layer), and of any head's int8 KV cache rows, before and after,
  // over every site the method looked at (smoothed or left alone); channels whose constant
  // moved into a bias (per linear input and per K / V cache channel). Per layer: the load
  // report.
  int smoothed_layers = 0;
  int shifted_channels = 0;
  double input_spread_before = 0, input_spread_after = 0;
  double kv_spread_before = 0, kv_spread_after = 0;
  std::string smoothing_worst_layer;
};

struct ModelInfo {
  std::string name;       // moondream2, moondream2-int8, test
  std::string precision;  // fp32, bf16, fp16, int8, none
  std::string device;     // cpu, cuda
  // The CPU kernel variant the model runs on (kernels::KernelSet::name: avx512vnni,
  // avxvnni, avxvnni-evex256, avx2, neon-dot, neon, scalar); empty on CUDA and for the
  // weight-free test model.
  std::string cpu_isa;
  uint64_t parameter_count = 0;
  std::vector<ComponentWeights> weights;
  double load_seconds = 0;
  QuantizationSummary quantization;
  bool is_default = false;
  std::string source;  // model directory or "builtin"
};

// Completion callbacks of one request. Both run on an engine thread (a worker, or the
// reaper that finishes expired/cancelled queued requests); they must not call Drain.
struct Callbacks {
  // Streaming text: each piece is valid UTF-8. May be empty (not streaming).
  std::function<void(std::string_view text)> on_text;
  // Called exactly once, last.
  std::function<void(absl::StatusOr<Result>)> on_done;
};

// Memory one model variant holds beyond its weights (issue 5: attribution per variant).
struct ModelMemory {
  std::string model;
  uint64_t kv_cache_bytes = 0;     // KV caches of its requests running now
  uint64_t image_cache_bytes = 0;  // its cached image encodings
  int image_cache_entries = 0;
};

// Point-in-time engine counters for metrics.
struct EngineStats {
  int queued = 0;
  int in_flight = 0;
  uint64_t image_cache_bytes = 0;
  int image_cache_entries = 0;
  uint64_t kv_cache_bytes = 0;  // KV caches of requests running now
  std::vector<ModelMemory> models;  // the same, per loaded model
  // Seconds the running request furthest past its deadline has been past it (0: none).
  // Models stop within one step (a token, a vision crop block, a prefill layer) of their
  // deadline, so a large value means a stuck worker (the liveness probe fails on it).
  double worst_overrun_seconds = 0;
};

}  // namespace moondream
