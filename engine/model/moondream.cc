#include "engine/model/moondream.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "engine/image/image.h"
#include "engine/log.h"
#include "engine/process_memory.h"
#include "engine/model/status_macros.h"
#include "engine/model/tasks.h"
#include "engine/model/torch_compat.h"
#include "engine/weights/config.h"
#include "engine/weights/model_dir.h"
#include "kernels/cpu.h"

namespace moondream {
namespace {

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

ModelInfo MakeInfo(const MoondreamOptions& options, const std::string& model_dir,
                   Precision precision, const LoadReport& report, double seconds) {
  ModelInfo info;
  info.name = options.name.empty() ? "moondream2" : options.name;
  info.precision = PrecisionName(precision);
  info.device = options.device;
  info.parameter_count = report.parameters;
  info.weights = report.components;
  info.load_seconds = seconds;
  info.quantization = report.Summary();
  info.source = model_dir;
  return info;
}

// bf16 on an x86 CPU without AVX-512 BF16: ATen's bf16 matmuls (vision, prefill) then run
// a generic fallback. On an AVX2-only AMD Zen 3 (bench_quant, 2026-12-07) a vision layer
// took 80-110x the fp32 time and 150-160x INT8's; only the decode GEMV (the kernel layer's)
// stays fast. Said once at load, so an operator who picks bf16 there learns why it crawls.
void WarnIfBf16Emulated(Precision precision, bool cuda) {
#if defined(__x86_64__)
  if (precision != Precision::kBF16 || cuda || kernels::HostCpu().avx512bf16) return;
  Log(LogLevel::kWarn, "bf16_without_cpu_support",
      {{"detail", "this CPU lacks AVX-512 BF16: bf16 vision and prefill run a generic fallback, "
                  "~100x slower than fp32; use int8 (or fp32) on this CPU"}});
#else
  (void)precision, (void)cuda;
#endif
}

}  // namespace

absl::StatusOr<std::unique_ptr<Moondream>> Moondream::Load(const MoondreamOptions& options) {
  const Clock::time_point start = Clock::now();
  MD_ASSIGN_OR_RETURN(const Precision precision, ParsePrecision(options.precision));
  MD_ASSIGN_OR_RETURN(const std::string dir, ResolveModelDir(options.model_dir, options.allow_any_revision));
  Log(LogLevel::kInfo, "model_loading",
      {{"model_dir", dir}, {"revision", DescribeRevision(dir)},
       {"precision", PrecisionName(precision)}, {"device", options.device}});
  MD_ASSIGN_OR_RETURN(const MoondreamConfig config, LoadConfig(dir + "/config.json"));
  WeightStoreOptions store_options;
  store_options.precision = precision;
  store_options.device = options.device;
  store_options.int8_skip = options.int8_skip;
  store_options.int8_smoothing = options.int8_smoothing;
  store_options.text_heads = config.text.n_heads;
  const bool cuda = options.device.rfind("cuda", 0) == 0;
  const kernels::KernelSet* cpu_kernels = options.cpu_kernels;
  if (cpu_kernels == nullptr && !cuda) {
    MD_ASSIGN_OR_RETURN(cpu_kernels, ResolveCpuKernels(""));
  }
  const ExecutionPlan plan = ChoosePlan(precision, cuda, cpu_kernels);
  store_options.kernels = plan.kernels;
  Log(LogLevel::kInfo, "execution_plan", {{"plan", plan.Describe(precision)}});
  WarnIfBf16Emulated(precision, cuda);
  MD_ASSIGN_OR_RETURN(std::unique_ptr<WeightStore> store,
                      WeightStore::Open(dir + "/model.safetensors", store_options));
  MD_RETURN_IF_ERROR(CheckShapes(config, store->file()));
  MD_ASSIGN_OR_RETURN(VisionEncoder vision,
                      VisionEncoder::Load(store->Root().Sub("vision"), config.vision, plan));
  MD_ASSIGN_OR_RETURN(std::unique_ptr<Language> lm,
                      Language::Load(*store, config, dir + "/tokenizer.json", plan));
  std::unique_ptr<Moondream> model(new Moondream(std::move(vision), std::move(lm)));
  const LoadReport report = store->report();
  if (!options.quant_report_json.empty()) report.WriteJson(options.quant_report_json);
  if (precision == Precision::kINT8) {
    // How much activation range the smoothing moved: the worst layer's estimated
    // per-channel spread (max/median) before and after (per layer: quant_report_json).
    const QuantizationSummary q = report.Summary();
    Log(LogLevel::kInfo, "int8_smoothing",
        {{"enabled", options.int8_smoothing}, {"layers", q.smoothed_layers},
         {"max_input_spread_before", q.input_spread_before},
         {"max_input_spread_after", q.input_spread_after},
         {"worst_layer", q.smoothing_worst_layer}, {"max_kv_spread_before", q.kv_spread_before},
         {"max_kv_spread_after", q.kv_spread_after}, {"shifted_channels", q.shifted_channels}});
  }
  if (options.device == "cpu" && precision == Precision::kBF16 && quant::EnsureBf16Matmul()) {
    Log(LogLevel::kInfo, "bf16_matmul", {{"onednn", "off"}, {"reason", "onednn_bf16_primitive_unavailable"}});
  }
  const double seconds = MsSince(start) / 1000.0;
  model->info_ = MakeInfo(options, dir, precision, report, seconds);
  model->info_.cpu_isa = plan.kernels != nullptr ? plan.kernels->name : "";
  model->compute_dtype_ = ComputeDtype(precision);
  model->max_image_pixels_ = options.max_image_pixels;
  Log(LogLevel::kInfo, "model_loaded",
      {{"model", model->info_.name}, {"precision", model->info_.precision},
       {"cpu_isa", model->info_.cpu_isa},
       {"parameters", static_cast<unsigned long long>(report.parameters)},
       {"seconds", seconds}});
  return model;
}

absl::StatusOr<Crops> Moondream::DecodeCrops(std::string_view image_bytes,
                                             const RunContext& ctx) const {
  // The RGB image (and its share of ctx.decode_budget) is gone once the crops exist.
  MD_ASSIGN_OR_RETURN(const RgbImage rgb, DecodeImage(image_bytes, max_image_pixels_, ctx.flatten_transparency,
                                                  [&ctx] { return ctx.CheckAlive(); },
                                                  ctx.decode_budget));
  return OverlapCrops(rgb, CropConfigFor(vision_.config()));
}

absl::StatusOr<at::Tensor> Moondream::EncodeEmbeds(std::string_view image_bytes,
                                                   const RunContext& ctx,
                                                   VisionTaps* taps) const {
  Clock::time_point start = Clock::now();
  MD_ASSIGN_OR_RETURN(const Crops crops, DecodeCrops(image_bytes, ctx));
  ctx.AddTime(&Timings::image_decode_ms, MsSince(start));
  MD_RETURN_IF_ERROR(ctx.CheckAlive());
  start = Clock::now();
  return RunGuarded([&]() -> absl::StatusOr<at::Tensor> {
    InferenceModeGuard guard;
    at::Tensor embeds = vision_.Encode(crops, compute_dtype_, taps, &ctx);
    ReleaseFreeHeap();  // the crops' activations, before the prefix prefill allocates
    ctx.AddTime(&Timings::vision_encode_ms, MsSince(start));
    return embeds;
  });
}

absl::StatusOr<std::shared_ptr<const MoondreamImage>> Moondream::EncodeFromEmbeds(
    const at::Tensor& image_embeds, at::Tensor* hidden, const RunContext* ctx) const {
  return RunGuarded([&]() -> absl::StatusOr<std::shared_ptr<const MoondreamImage>> {
    InferenceModeGuard guard;
    MD_ASSIGN_OR_RETURN(KvCache prefix, PrefillImage(*lm_, image_embeds, hidden, ctx));
    ReleaseFreeHeap();
    return std::make_shared<const MoondreamImage>(std::move(prefix));
  });
}

absl::StatusOr<std::shared_ptr<const EncodedImage>> Moondream::Encode(
    std::string_view image_bytes, const RunContext& ctx) const {
  MD_ASSIGN_OR_RETURN(const at::Tensor embeds, EncodeEmbeds(image_bytes, ctx, nullptr));
  MD_RETURN_IF_ERROR(ctx.CheckAlive());
  const Clock::time_point start = Clock::now();
  MD_ASSIGN_OR_RETURN(std::shared_ptr<const MoondreamImage> image,
                      EncodeFromEmbeds(embeds, nullptr, &ctx));
  ctx.AddTime(&Timings::image_prefill_ms, MsSince(start));
  return image;
}

absl::Status Moondream::Admit(const Request& request) const {
  if (request.task == Task::kEncodeImage) return absl::OkStatus();
  return CheckContextFits(*lm_, request);
}

absl::StatusOr<Result> Moondream::Run(const Request& request, const EncodedImage& image,
                                      const RunContext& ctx) const {
  return Run(request, image, ctx, nullptr);
}

absl::StatusOr<Result> Moondream::Run(const Request& request, const EncodedImage& image,
                                      const RunContext& ctx, GenerationTaps* taps) const {
  const auto* encoded = dynamic_cast<const MoondreamImage*>(&image);
  if (encoded == nullptr) {
    return absl::InvalidArgumentError("image was not encoded by a Moondream2 model");
  }
  absl::StatusOr<Result> result = RunGuarded([&]() -> absl::StatusOr<Result> {
    InferenceModeGuard guard;
    return RunTask(*lm_, request, encoded->prefix(), ctx, taps, &request_state_bytes_);
  });
  if (result.ok()) result->model = info_.name;
  return result;
}

absl::StatusOr<std::unique_ptr<Model>> LoadMoondream(const MoondreamOptions& options) {
  MD_ASSIGN_OR_RETURN(std::unique_ptr<Moondream> model,
                      RunGuarded([&] { return Moondream::Load(options); }));
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace moondream
