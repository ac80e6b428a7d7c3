// WeightStore: converts the mmap'd checkpoint tensors to the compute precision on demand.
//
// Model code walks the tensor tree with Scopes:
//   auto root = store->Root();                         // "model"
//   auto blk = root.Sub("text").Sub("blocks").Sub("0"); // "model.text.blocks.0"
//   absl::StatusOr<quant::Linear> qkv = blk.Sub("attn").Linear("qkv", 3 * dim, dim);
//   absl::StatusOr<quant::Embedding> wte = root.Sub("text").Embedding("wte", vocab, dim);
// Scopes are cheap values; the store must outlive them. Not thread-safe (load on one thread).
// Every tensor is converted exactly once (a second request is an error) and its mmap pages
// are released afterwards, so peak RSS stays near the final model size.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/api.h"
#include "engine/weights/safetensors.h"
#include "engine/weights/smoothing.h"
#include "quantization/linear.h"

namespace moondream {

enum class Precision { kFP32, kBF16, kFP16, kINT8 };

// "fp32", "bf16", "fp16", "int8" (case-insensitive; also "float32", "bfloat16", "float16").
absl::StatusOr<Precision> ParsePrecision(std::string_view text);
const char* PrecisionName(Precision precision);
// Dtype of activations and of every non-quantized tensor: fp32 for kFP32 and kINT8.
at::ScalarType ComputeDtype(Precision precision);

struct WeightStoreOptions {
  Precision precision = Precision::kFP32;
  std::string device = "cpu";  // "cpu" or "cuda[:N]"; fp16 requires cuda
  // INT8 only: linears whose path (without "model.") matches one of these fnmatch globs
  // stay in the compute dtype, e.g. "text.lm_head", "vision.blocks.*".
  std::vector<std::string> int8_skip;
  // CPU INT8 linears, and the decode GEMV of CPU bf16/fp32 ones, run on these kernels
  // (null: kernels::DefaultKernels()).
  const kernels::KernelSet* kernels = nullptr;
  // INT8 only: fold calibration-free per-channel smoothing scales into the LayerNorms and
  // linears before quantizing (engine/weights/smoothing.h; --int8-smoothing). FP32, BF16
  // and FP16 never smooth (they load bit-identically either way).
  bool int8_smoothing = true;
  int text_heads = 0;  // text attention heads (key/query balancing of the int8 KV cache)
  // SmoothingOptions::min_scale_ratio: a channel is folded only when its scale is this
  // factor from its site's median (1 = every channel; tests of the fold itself).
  double int8_smoothing_min_scale_ratio = SmoothingOptions{}.min_scale_ratio;
};

struct LayerQuantReport {
  std::string name;  // tensor path without "model." and without ".weight", e.g. "text.blocks.0.attn.qkv"
  quant::QuantStats stats;  // zero when not quantized
  bool quantized = false;
  uint64_t parameters = 0;  // weight elements (bias excluded)
  SmoothingStats smoothing;  // what INT8 smoothing did to this layer's input (applied=false: nothing)
};

struct LoadReport {
  // component = vision (vision.* except proj_mlp) | projection (vision.proj_mlp.*) | text | region
  std::vector<ComponentWeights> components;
  std::vector<LayerQuantReport> layers;  // every Linear and Embedding, in load order
  uint64_t parameters = 0;

  QuantizationSummary Summary() const;  // scheme empty when nothing was quantized
  // JSON: {"parameters", "components":[...], "summary":{...}, "layers":[...]}.
  void WriteJson(const std::string& path) const;
};

// A CPU tensor of the file's dtype over a tensor's mmap'd bytes (copied first only if they
// are misaligned for the dtype). Valid while the file stays mapped.
at::Tensor SourceView(const TensorView& view);

class WeightStore {
 public:
  static absl::StatusOr<std::unique_ptr<WeightStore>> Open(const std::string& safetensors_path,
                                                           WeightStoreOptions options);
  ~WeightStore();

  class Scope {
   public:
    Scope Sub(std::string_view name) const;  // path() + "." + name
    // A tensor named path()+"."+name with exactly `shape`, converted to the compute dtype
    // on the device (fp32 for kFP32 and kINT8, bf16, fp16).
    absl::StatusOr<at::Tensor> Tensor(std::string_view name, std::vector<int64_t> shape) const;
    // name.weight [out, in] + name.bias [out]. INT8 (unless skipped): per-channel int8
    // quantized in one parallel pass straight from the fp16 mmap, fp32 bias.
    absl::StatusOr<quant::Linear> Linear(std::string_view name, int64_t out, int64_t in) const;
    // A bare [rows, dim] table (e.g. "wte"); INT8 (unless skipped) quantizes it per row.
    absl::StatusOr<quant::Embedding> Embedding(std::string_view name, int64_t rows,
                                               int64_t dim) const;
    const std::string& path() const { return path_; }

   private:
    friend class WeightStore;
    Scope(const WeightStore* store, std::string path) : store_(store), path_(std::move(path)) {}
    const WeightStore* store_;
    std::string path_;
  };

  Scope Root() const;  // "model"
  LoadReport report() const { return state_->report; }
  const WeightStoreOptions& options() const { return options_; }
  const SafetensorsFile& file() const { return *file_; }
  size_t converted() const { return state_->converted; }  // tensors converted so far
  size_t total() const;                                      // tensors in the file

 private:
  struct State {
    std::vector<bool> done;  // per file tensor (file order): converted already
    size_t converted = 0;
    size_t next_progress = 1;  // next decile to log
    LoadReport report;
    std::unique_ptr<SmoothingPlan> smoothing;  // INT8 with int8_smoothing only
  };
  WeightStore() = default;
  // Looks up path "model.<...>" with exactly `shape`, not converted before.
  absl::StatusOr<const TensorView*> Take(const std::string& name, const std::vector<int64_t>& shape) const;
  // Releases the tensor's pages, counts it, logs progress.
  void Done(const TensorView& view) const;
  at::Tensor Convert(const TensorView& view) const;  // compute dtype, on device
  bool QuantizeName(const std::string& name) const;  // INT8 and not matched by int8_skip
  absl::StatusOr<quant::Int8Matrix> QuantizeRows(const TensorView& view, const std::string& name,
                                                 quant::QuantStats* stats) const;
  // The smoothing multipliers of tensor `name` (null: none, or smoothing off).
  absl::StatusOr<const TensorScaling*> Scaling(const std::string& name) const;
  void Account(const std::string& name, uint64_t parameters, uint64_t bytes, bool quantized) const;

  std::unique_ptr<SafetensorsFile> file_;
  WeightStoreOptions options_;
  at::Device device_ = at::kCPU;
  std::unique_ptr<State> state_;  // load bookkeeping (mutated by const Scopes)
};

}  // namespace moondream
