#include "engine/engine.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/image_cache.h"
#include "engine/log.h"
#include "engine/model.h"
#include "engine/model/moondream.h"
#include "engine/model/status_macros.h"
#include "engine/scheduler.h"
#include "engine/test_model.h"
#include "engine/weights/model_dir.h"
#include "kernels/kernels.h"

namespace moondream {
namespace {

constexpr int kMaxTokensLimit = 2048;  // the text context (spec §1.1 max_context)
// A question or object name: ~1000 tokens of English, near the 1318 positions the context
// leaves after the image; longer text is refused before it is even tokenized.
constexpr size_t kMaxTextBytes = 4096;
constexpr int kMaxObjectsLimit = 50;   // Moondream2's region loop bound (spec §6.6)
constexpr const char* kPrecisions[] = {"fp32", "bf16", "fp16", "int8"};

using Models = std::vector<std::unique_ptr<Model>>;

absl::Status ValidateOptions(const EngineOptions& o) {
  if (o.model != "test" && o.model != "moondream2") {
    return absl::InvalidArgumentError(
        absl::StrCat("model: must be \"moondream2\" or \"test\", got \"", o.model, "\""));
  }
  if (o.model == "moondream2" && o.variants.empty()) {
    return absl::InvalidArgumentError("precision: at least one variant is needed");
  }
  for (const std::string& p : o.variants) {
    if (std::find(std::begin(kPrecisions), std::end(kPrecisions), p) == std::end(kPrecisions)) {
      return absl::InvalidArgumentError(
          absl::StrCat("precision: \"", p, "\" is not one of fp32, bf16, fp16, int8"));
    }
    if (std::count(o.variants.begin(), o.variants.end(), p) > 1) {
      return absl::InvalidArgumentError(absl::StrCat("precision: \"", p, "\" listed twice"));
    }
  }
  if (o.threads < 0) return absl::InvalidArgumentError("threads: must be >= 0 (0 = all cores)");
  if (o.max_queue < 0) return absl::InvalidArgumentError("max_queue: must be >= 0");
  if (o.max_concurrency < 1) return absl::InvalidArgumentError("max_concurrency: must be >= 1");
  if (!(o.image_cache_ttl_s > 0)) {
    return absl::InvalidArgumentError("image_cache_ttl_s: must be > 0");
  }
  if (!(o.max_deadline_s > 0)) return absl::InvalidArgumentError("max_deadline: must be > 0");
  if (!(o.queue_timeout_s > 0)) return absl::InvalidArgumentError("queue_timeout: must be > 0");
  return absl::OkStatus();
}

void SetThreads(int threads) {
  const int n = threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
  at::set_num_threads(n);
  Log(LogLevel::kInfo, "compute_threads", {{"intra_op", n}});
}

// fp32 -> moondream2, any other precision p -> moondream2-p.
std::string VariantName(const std::string& precision) {
  return precision == "fp32" ? "moondream2" : "moondream2-" + precision;
}

absl::StatusOr<Models> LoadMoondreamVariants(const EngineOptions& o,
                                             const kernels::KernelSet* cpu_kernels) {
  MD_ASSIGN_OR_RETURN(const std::string dir, ResolveModelDir(o.model_dir, o.allow_any_revision));
  Models models;
  for (const std::string& precision : o.variants) {
    MoondreamOptions options;
    options.name = VariantName(precision);
    options.model_dir = dir;
    options.precision = precision;
    options.device = o.device;
    options.int8_skip = o.int8_skip;
    options.int8_smoothing = o.int8_smoothing;
    options.cpu_kernels = cpu_kernels;
    options.max_image_pixels = o.max_image_pixels;
    MD_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, LoadMoondream(options));
    models.push_back(std::move(model));
  }
  return models;
}

// Model loading is an exception boundary too: a c10::Error escaping the loader fails
// Create instead of the process.
absl::StatusOr<Models> LoadModels(const EngineOptions& o) {
  // Any model, the test model too: a wrong --cpu-isa fails the start either way.
  MD_ASSIGN_OR_RETURN(const kernels::KernelSet* cpu_kernels, ResolveCpuKernels(o.cpu_isa));
  if (o.model == "test") {
    std::this_thread::sleep_for(std::chrono::milliseconds(o.test_model_load_delay_ms));
    Models models;
    models.push_back(
        MakeTestModel({o.max_image_pixels, o.test_model_token_delay_ms, o.test_model_stall_ms}));
    return models;
  }
  try {
    return LoadMoondreamVariants(o, cpu_kernels);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("loading moondream2 failed: ", e.what()));
  }
}

// Client text quoted into an error: at most kQuoteBytes bytes (cut at a UTF-8 character
// boundary), control characters replaced, the full length said when cut. Errors reach logs
// and clients; an unbounded echo would let a client write arbitrary text into both.
constexpr size_t kQuoteBytes = 64;
std::string Quote(const std::string& text) {
  size_t end = std::min(text.size(), kQuoteBytes);
  while (end > 0 && end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) {
    --end;  // do not split a multi-byte character
  }
  std::string out = "\"";
  for (size_t i = 0; i < end; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    out += c < 0x20 || c == 0x7f ? '?' : static_cast<char>(c);
  }
  out += "\"";
  if (end < text.size()) absl::StrAppend(&out, " (cut, ", text.size(), " bytes)");
  return out;
}

absl::Status UnknownModel(const std::string& name, const std::string& loaded) {
  return absl::NotFoundError(absl::StrCat("unknown model ", Quote(name), " (loaded: ", loaded, ")"));
}

absl::Status RangeError(const char* field, const std::string& range, double value) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": must be in ", range, ", got ", value));
}

absl::Status ValidateRequest(const Request& r) {
  const bool has_bytes = !r.image().empty();
  const bool has_handle = !r.image_handle.empty();
  if (r.task == Task::kEncodeImage && !has_bytes) {
    return absl::InvalidArgumentError("image: EncodeImage needs non-empty image bytes");
  }
  if (has_bytes == has_handle) {
    return absl::InvalidArgumentError(
        absl::StrCat("image: give exactly one of image data or image handle (got ",
                     has_bytes ? "both" : "neither, or empty data", ")"));
  }
  if (r.text.size() > kMaxTextBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        r.task == Task::kQuery ? "question" : "object", ": ", r.text.size(),
        " bytes, more than the limit of ", kMaxTextBytes));
  }
  if (r.task == Task::kQuery && r.text.empty()) {
    return absl::InvalidArgumentError("question: must not be empty");
  }
  if ((r.task == Task::kDetect || r.task == Task::kPoint) && r.text.empty()) {
    return absl::InvalidArgumentError("object: must not be empty");
  }
  const GenerationSettings& s = r.settings;
  if (s.max_tokens < 0 || s.max_tokens > kMaxTokensLimit) {
    return RangeError("settings.max_tokens", absl::StrCat("[0, ", kMaxTokensLimit, "]"),
                      s.max_tokens);
  }
  if (!(s.temperature >= 0 && s.temperature <= 2)) {
    return RangeError("settings.temperature", "[0, 2]", s.temperature);
  }
  if (!(s.top_p >= 0 && s.top_p <= 1)) return RangeError("settings.top_p", "[0, 1]", s.top_p);
  if (r.max_objects < 0 || r.max_objects > kMaxObjectsLimit) {
    return RangeError("max_objects", absl::StrCat("[0, ", kMaxObjectsLimit, "]"), r.max_objects);
  }
  return absl::OkStatus();
}

Clock::duration Seconds(double seconds) {
  constexpr double kCentury = 100.0 * 365 * 24 * 3600;  // avoids overflow of huge TTLs
  return std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(std::min(seconds, kCentury)));
}

}  // namespace

struct Engine::Impl {
  Impl(const EngineOptions& o, Models m)
      : models(std::move(m)),
        cache(o.image_cache_bytes, Seconds(o.image_cache_ttl_s)),
        scheduler(SchedulerOptions{o.max_queue, o.max_concurrency, Seconds(o.queue_timeout_s),
                                   o.max_queued_bytes, o.max_image_pixels},
                  &cache),
        max_deadline(Seconds(o.max_deadline_s)),
        default_transparency(o.flatten_transparency ? Transparency::kFlattenOntoWhite
                                                    : Transparency::kDrop) {}

  const Model* Find(const std::string& name) const {
    if (name.empty()) return models.front().get();
    for (const auto& model : models) {
      if (model->info().name == name) return model.get();
    }
    return nullptr;
  }
  std::string Names() const {
    return absl::StrJoin(models, ", ", [](std::string* out, const std::unique_ptr<Model>& m) {
      out->append(m->info().name);
    });
  }
  ModelInfo Info(const Model& model) const {
    ModelInfo info = model.info();
    info.is_default = &model == models.front().get();
    return info;
  }

  const Models models;  // first = default
  ImageCache cache;
  Scheduler scheduler;  // joins its workers before the models go
  const Clock::duration max_deadline;
  const Transparency default_transparency;
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  MD_RETURN_IF_ERROR(ValidateOptions(options));
  SetThreads(options.threads);
  MD_ASSIGN_OR_RETURN(Models models, LoadModels(options));
  auto impl = std::make_unique<Impl>(options, std::move(models));
  Log(LogLevel::kInfo, "engine_ready",
      {{"models", impl->Names()},
       {"default", impl->models.front()->info().name},
       {"max_queue", options.max_queue},
       {"max_concurrency", options.max_concurrency}});
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() = default;

absl::Status Engine::Submit(Request request, Callbacks callbacks) {
  if (!callbacks.on_done) return absl::InvalidArgumentError("callbacks: on_done is required");
  const Model* model = impl_->Find(request.model);
  if (model == nullptr) return UnknownModel(request.model, impl_->Names());
  MD_RETURN_IF_ERROR(ValidateRequest(request));
  MD_RETURN_IF_ERROR(model->Admit(request));
  request.model = model->info().name;
  // The server's own bound: no request (a client without a deadline included) runs longer.
  const Clock::time_point now = Clock::now();
  if (request.deadline - now > impl_->max_deadline) request.deadline = now + impl_->max_deadline;
  if (!request.cancel) request.cancel = std::make_shared<CancelFlag>(false);
  if (request.transparency == Transparency::kServerDefault) {
    request.transparency = impl_->default_transparency;
  }
  return impl_->scheduler.Enqueue(std::move(request), std::move(callbacks), model);
}

std::vector<ModelInfo> Engine::ListModels() const {
  std::vector<ModelInfo> infos;
  for (const auto& model : impl_->models) infos.push_back(impl_->Info(*model));
  return infos;
}

absl::StatusOr<ModelInfo> Engine::GetModel(const std::string& name) const {
  const Model* model = impl_->Find(name);
  if (model == nullptr) return UnknownModel(name, impl_->Names());
  return impl_->Info(*model);
}

EngineStats Engine::Stats() const {
  const Scheduler::Stats s = impl_->scheduler.GetStats();
  const ImageCache::Stats c = impl_->cache.GetStats();
  EngineStats stats;
  stats.queued = s.queued;
  stats.in_flight = s.in_flight;
  stats.worst_overrun_seconds = std::chrono::duration<double>(s.worst_overrun).count();
  for (const auto& model : impl_->models) {
    ModelMemory m;
    m.model = model->info().name;
    m.kv_cache_bytes = model->request_state_bytes();
    const auto usage = c.by_model.find(m.model);
    if (usage != c.by_model.end()) {
      m.image_cache_bytes = usage->second.bytes;
      m.image_cache_entries = usage->second.entries;
    }
    stats.kv_cache_bytes += m.kv_cache_bytes;
    stats.models.push_back(std::move(m));
  }
  stats.image_cache_bytes = c.bytes;
  stats.image_cache_entries = c.entries;
  return stats;
}

void Engine::Drain(Clock::duration grace) { impl_->scheduler.Drain(grace); }

}  // namespace moondream
