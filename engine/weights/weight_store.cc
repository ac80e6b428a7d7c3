#include "engine/weights/weight_store.h"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/log.h"
#include "engine/process_memory.h"

namespace moondream {
namespace {


std::string StripModel(const std::string& name) { return std::string(absl::StripPrefix(name, "model.")); }

const char* ComponentOf(const std::string& path) {
  if (absl::StartsWith(path, "vision.proj_mlp.")) return "projection";
  if (absl::StartsWith(path, "vision.")) return "vision";
  if (absl::StartsWith(path, "text.")) return "text";
  if (absl::StartsWith(path, "region.")) return "region";
  return "other";
}

at::ScalarType SourceDtype(DType dtype) {
  switch (dtype) {
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    case DType::kF32: return at::kFloat;
  }
  return at::kHalf;
}

}  // namespace

at::Tensor SourceView(const TensorView& view) {
  const auto dtype = SourceDtype(view.dtype);
  void* data = const_cast<uint8_t*>(view.data);
  if (reinterpret_cast<uintptr_t>(data) % DTypeSize(view.dtype) != 0) {
    at::Tensor copy = at::empty(view.shape, at::TensorOptions().dtype(dtype));
    std::memcpy(copy.data_ptr(), view.data, view.nbytes);
    return copy;
  }
  return at::from_blob(data, view.shape, at::TensorOptions().dtype(dtype));
}

absl::StatusOr<Precision> ParsePrecision(std::string_view text) {
  const std::string t = absl::AsciiStrToLower(std::string(text));
  if (t == "fp32" || t == "float32") return Precision::kFP32;
  if (t == "bf16" || t == "bfloat16") return Precision::kBF16;
  if (t == "fp16" || t == "float16") return Precision::kFP16;
  if (t == "int8") return Precision::kINT8;
  return absl::InvalidArgumentError(absl::StrCat("unknown precision '", std::string(text), "' (fp32, bf16, fp16, int8)"));
}

const char* PrecisionName(Precision precision) {
  switch (precision) {
    case Precision::kFP32: return "fp32";
    case Precision::kBF16: return "bf16";
    case Precision::kFP16: return "fp16";
    case Precision::kINT8: return "int8";
  }
  return "?";
}

at::ScalarType ComputeDtype(Precision precision) {
  switch (precision) {
    case Precision::kBF16: return at::kBFloat16;
    case Precision::kFP16: return at::kHalf;
    default: return at::kFloat;
  }
}

absl::StatusOr<std::unique_ptr<WeightStore>> WeightStore::Open(const std::string& safetensors_path,
                                                               WeightStoreOptions options) {
  std::unique_ptr<WeightStore> store(new WeightStore());
  try {
    store->device_ = at::Device(options.device);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat("weights: unknown device '", options.device, "'"));
  }
  if (store->device_.is_cuda() && !at::hasCUDA()) {
    return absl::FailedPreconditionError(absl::StrCat("weights: device ", options.device,
                                                      " requested but this build/machine has no CUDA"));
  }
  if (options.precision == Precision::kFP16 && !store->device_.is_cuda()) {
    return absl::InvalidArgumentError("weights: fp16 compute needs a cuda device (use fp32, bf16 or int8 on cpu)");
  }
  auto file = SafetensorsFile::Open(safetensors_path);
  if (!file.ok()) return file.status();
  store->file_ = std::move(*file);
  store->options_ = std::move(options);
  store->state_ = std::make_unique<State>();
  store->state_->done.assign(store->file_->tensors().size(), false);
  if (store->options_.precision == Precision::kINT8 && store->options_.int8_smoothing) {
    SmoothingOptions smoothing;
    smoothing.text_heads = store->options_.text_heads;
    smoothing.min_scale_ratio = store->options_.int8_smoothing_min_scale_ratio;
    store->state_->smoothing = std::make_unique<SmoothingPlan>(store->file_.get(), smoothing);
  }
  return store;
}

WeightStore::~WeightStore() { ReleaseFreeHeap(); }

size_t WeightStore::total() const { return file_->tensors().size(); }

WeightStore::Scope WeightStore::Root() const { return Scope(this, "model"); }

absl::StatusOr<const TensorView*> WeightStore::Take(const std::string& name,
                                                    const std::vector<int64_t>& shape) const {
  const TensorView* view = file_->Find(name);
  if (view == nullptr) {
    return absl::NotFoundError(absl::StrCat("weights ", file_->path(), ": missing tensor ", name,
                                            " (expected shape ", ShapeString(shape), ")"));
  }
  if (view->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat("weights ", file_->path(), ": tensor ", name, " has shape ",
                                                   ShapeString(view->shape), ", expected ", ShapeString(shape)));
  }
  const size_t index = static_cast<size_t>(view - file_->tensors().data());
  if (state_->done[index]) {
    return absl::FailedPreconditionError(absl::StrCat("weights: tensor ", name, " was already converted"));
  }
  state_->done[index] = true;
  file_->Prefetch(*view);
  return view;
}

void WeightStore::Done(const TensorView& view) const {
  file_->Release(view);
  State& s = *state_;
  ++s.converted;
  const size_t n = total();
  if (s.converted * 10 >= s.next_progress * n) {
    Log(LogLevel::kInfo, "weights_progress", {{"loaded", s.converted}, {"total", n}});
    while (s.converted * 10 >= s.next_progress * n && s.next_progress <= 10) ++s.next_progress;
  }
}

at::Tensor WeightStore::Convert(const TensorView& view) const {
  return SourceView(view).to(device_, ComputeDtype(options_.precision), /*non_blocking=*/false, /*copy=*/true);
}

absl::StatusOr<const TensorScaling*> WeightStore::Scaling(const std::string& name) const {
  if (!state_->smoothing) return nullptr;
  return state_->smoothing->For(name);
}

bool WeightStore::QuantizeName(const std::string& name) const {
  if (options_.precision != Precision::kINT8) return false;
  for (const std::string& glob : options_.int8_skip) {
    if (::fnmatch(glob.c_str(), name.c_str(), 0) == 0) return false;
  }
  return true;
}

absl::StatusOr<quant::Int8Matrix> WeightStore::QuantizeRows(const TensorView& view, const std::string& name,
                                                            quant::QuantStats* stats) const {
  // One parallel pass straight over the mmap'd rows (QuantizePerChannel converts small row
  // chunks to fp32 in a reused buffer); Done() releases the source pages right after.
  auto m = quant::QuantizePerChannel(SourceView(view), name, stats);
  if (!m.ok()) return m.status();
  if (device_.is_cuda()) return quant::Int8Matrix{m->q.to(device_), m->scale.to(device_)};
  return m;
}

void WeightStore::Account(const std::string& name, uint64_t parameters, uint64_t bytes, bool quantized) const {
  LoadReport& r = state_->report;
  const std::string component = ComponentOf(name);
  auto it = std::find_if(r.components.begin(), r.components.end(),
                         [&](const ComponentWeights& c) { return c.component == component; });
  if (it == r.components.end()) {
    r.components.push_back({component, PrecisionName(options_.precision == Precision::kINT8
                                                         ? Precision::kFP32 : options_.precision), 0, 0});
    it = r.components.end() - 1;
  }
  if (quantized) it->precision = "int8";
  it->parameters += parameters;
  it->bytes += bytes;
  r.parameters += parameters;
}

WeightStore::Scope WeightStore::Scope::Sub(std::string_view name) const {
  return Scope(store_, absl::StrCat(path_, ".", std::string(name)));
}

absl::StatusOr<at::Tensor> WeightStore::Scope::Tensor(std::string_view name, std::vector<int64_t> shape) const {
  const std::string full = absl::StrCat(path_, ".", std::string(name));
  auto view = store_->Take(full, shape);
  if (!view.ok()) return view.status();
  auto scaling = store_->Scaling(full);
  if (!scaling.ok()) return scaling.status();
  try {
    at::Tensor t = store_->Convert(**view);
    if (*scaling != nullptr) t = ApplyScaling(t, **scaling);
    store_->Done(**view);
    store_->Account(StripModel(full), t.numel(), t.nbytes(), false);
    return t;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("weights: converting ", full, ": ", e.what_without_backtrace()));
  }
}

absl::StatusOr<quant::Linear> WeightStore::Scope::Linear(std::string_view name, int64_t out, int64_t in) const {
  const std::string full = absl::StrCat(path_, ".", std::string(name)), label = StripModel(full);
  auto w = store_->Take(full + ".weight", {out, in});
  if (!w.ok()) return w.status();
  auto b = store_->Take(full + ".bias", {out});
  if (!b.ok()) return b.status();
  auto w_scaling = store_->Scaling(full + ".weight");
  if (!w_scaling.ok()) return w_scaling.status();
  auto b_scaling = store_->Scaling(full + ".bias");
  if (!b_scaling.ok()) return b_scaling.status();
  try {
    LayerQuantReport layer{label, {}, store_->QuantizeName(label), static_cast<uint64_t>(out * in), {}};
    if (store_->state_->smoothing) {
      if (const SmoothingStats* st = store_->state_->smoothing->StatsFor(label)) layer.smoothing = *st;
    }
    quant::Linear linear;
    at::Tensor bias = store_->Convert(**b);
    if (*b_scaling != nullptr) bias = ApplyScaling(bias, **b_scaling);
    if (layer.quantized) {
      absl::StatusOr<quant::Int8Matrix> m;
      if (*w_scaling != nullptr) {
        m = QuantizeScaled(SourceView(**w), **w_scaling, label, &layer.stats);
        if (m.ok() && store_->device_.is_cuda()) m = quant::Int8Matrix{m->q.to(store_->device_), m->scale.to(store_->device_)};
      } else {
        m = store_->QuantizeRows(**w, label, &layer.stats);
      }
      if (!m.ok()) return m.status();
      store_->Done(**w);  // drop the source pages before Linear::Int8 packs (its own transient)
      linear = quant::Linear::Int8(std::move(*m), bias.to(at::kFloat), store_->options_.kernels);
    } else {
      at::Tensor weight = store_->Convert(**w);
      if (*w_scaling != nullptr) weight = ApplyScaling(weight, **w_scaling);
      linear = quant::Linear::Dense(weight, bias, store_->options_.kernels);
      store_->Done(**w);
    }
    store_->Done(**b);
    // Hand the freed transients (a padded shape's plain INT8 copy, conversion buffers of the
    // OpenMP threads' arenas) back at once: glibc keeps them, and 150 layers' worth of free
    // heap raised the INT8 load peak from 1.97 to 2.62 GiB. Costs nothing measurable per layer.
    ReleaseFreeHeap();
    store_->Account(label, out * in + out, linear.bytes(), layer.quantized);
    store_->state_->report.layers.push_back(layer);
    return linear;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("weights: converting ", full, ": ", e.what_without_backtrace()));
  }
}

absl::StatusOr<quant::Embedding> WeightStore::Scope::Embedding(std::string_view name, int64_t rows,
                                                               int64_t dim) const {
  const std::string full = absl::StrCat(path_, ".", std::string(name)), label = StripModel(full);
  auto view = store_->Take(full, {rows, dim});
  if (!view.ok()) return view.status();
  try {
    LayerQuantReport layer{label, {}, store_->QuantizeName(label), static_cast<uint64_t>(rows * dim), {}};
    quant::Embedding table;
    if (layer.quantized) {
      auto m = store_->QuantizeRows(**view, label, &layer.stats);
      if (!m.ok()) return m.status();
      table = quant::Embedding::Int8(std::move(*m));
    } else {
      table = quant::Embedding::Dense(store_->Convert(**view));
    }
    store_->Done(**view);
    store_->Account(label, rows * dim, table.bytes(), layer.quantized);
    store_->state_->report.layers.push_back(layer);
    return table;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("weights: converting ", full, ": ", e.what_without_backtrace()));
  }
}

}  // namespace moondream
