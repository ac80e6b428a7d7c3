// Moondream2 (HF revision 2025-01-09) as an engine Model: image decode + overlap crops
// (engine/image), vision encoder (vision.h), and the language side (language.h, tasks.h).
//
// Timings (all into ctx.timings): Encode adds image_decode_ms (decode + crops + resize),
// vision_encode_ms (vision tower + projection) and image_prefill_ms (the image's 730
// positions through the text decoder); Run adds prefill_ms (prompt), decode_ms (generation)
// and time_to_first_token_ms (from the start of Run to the first token / object).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model.h"
#include "engine/model/generate.h"
#include "engine/model/kv_cache.h"
#include "engine/model/language.h"
#include "engine/model/vision.h"
#include "engine/weights/weight_store.h"

namespace moondream {

struct MoondreamOptions {
  std::string name;        // model name reported in ModelInfo/Result; empty = "moondream2"
  std::string model_dir;   // empty = HF hub cache (ResolveModelDir)
  std::string precision = "fp32";
  std::string device = "cpu";
  std::vector<std::string> int8_skip;  // fnmatch globs of linears kept in the compute dtype
  // INT8: fold calibration-free outlier smoothing into the weights at load
  // (engine/weights/smoothing.h); off only to measure what it buys.
  bool int8_smoothing = true;
  bool allow_any_revision = false;  // see ResolveModelDir
  // CPU kernels (kernels::ResolveKernels); null = MOONDREAM_CPU_ISA's (default auto), and
  // Load fails with INVALID_ARGUMENT when that names an ISA the CPU lacks.
  const kernels::KernelSet* cpu_kernels = nullptr;
  uint64_t max_image_pixels = 50'000'000;
  std::string quant_report_json;  // written after load when non-empty
};

// An encoded image: the immutable prefix KV cache of [BOS ‖ image embeddings].
class MoondreamImage final : public EncodedImage {
 public:
  explicit MoondreamImage(KvCache prefix) : prefix_(std::move(prefix)) {}
  uint64_t bytes() const override { return prefix_.bytes(); }
  const KvCache& prefix() const { return prefix_; }

 private:
  KvCache prefix_;
};

class Moondream final : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<Moondream>> Load(const MoondreamOptions& options);

  const ModelInfo& info() const override { return info_; }
  absl::StatusOr<std::shared_ptr<const EncodedImage>> Encode(
      std::string_view image_bytes, const RunContext& ctx) const override;
  absl::StatusOr<Result> Run(const Request& request, const EncodedImage& image,
                             const RunContext& ctx) const override;
  absl::Status Admit(const Request& request) const override;
  uint64_t request_state_bytes() const override { return request_state_bytes_.load(); }

  // Taps for parity tests and the CLI.
  // Image bytes -> image embeddings [729, D] (decode, crops, vision, projection).
  absl::StatusOr<at::Tensor> EncodeEmbeds(std::string_view image_bytes, const RunContext& ctx,
                                          VisionTaps* taps) const;
  // Image embeddings -> encoded image (the prefix prefill); `hidden` gets [730, D]. With
  // `ctx`, the prefill stops between layers when the request's deadline passes or it is
  // cancelled (so does EncodeEmbeds between vision crops).
  absl::StatusOr<std::shared_ptr<const MoondreamImage>> EncodeFromEmbeds(
      const at::Tensor& image_embeds, at::Tensor* hidden, const RunContext* ctx = nullptr) const;
  absl::StatusOr<Result> Run(const Request& request, const EncodedImage& image,
                             const RunContext& ctx, GenerationTaps* taps) const;
  const Language& language() const { return *lm_; }
  at::ScalarType compute_dtype() const { return compute_dtype_; }

 private:
  Moondream(VisionEncoder vision, std::unique_ptr<Language> lm)
      : vision_(std::move(vision)), lm_(std::move(lm)) {}
  // Decode (within ctx.decode_budget) and overlap crops; the RGB image is freed on return.
  absl::StatusOr<Crops> DecodeCrops(std::string_view image_bytes, const RunContext& ctx) const;

  VisionEncoder vision_;
  std::unique_ptr<Language> lm_;
  ModelInfo info_;
  at::ScalarType compute_dtype_ = at::kFloat;
  uint64_t max_image_pixels_ = 0;
  mutable std::atomic<uint64_t> request_state_bytes_{0};
};

// The factory the engine core calls. Logs progress and the load time; fills ModelInfo.
absl::StatusOr<std::unique_ptr<Model>> LoadMoondream(const MoondreamOptions& options);

}  // namespace moondream
