// The only engine API the transport sees: load models, submit requests, drain.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/api.h"

namespace moondream {

class Model;

struct EngineOptions {
  // Model selection: "test" serves only the weight-free test model; "moondream2"
  // loads Moondream2 from model_dir (or the Hugging Face cache) in every precision
  // listed in `variants` (e.g. {"fp32", "int8"}); the first is the default model.
  std::string model = "moondream2";
  std::string model_dir;               // empty = search the Hugging Face cache
  std::vector<std::string> variants = {"int8"};  // fp32, bf16, fp16, int8
  std::string device = "cpu";          // cpu | cuda
  std::vector<std::string> int8_skip;  // glob patterns of layers kept in full precision
  // Load an HF-cache snapshot of another revision than 2025-01-09 (refused by default).
  bool allow_any_revision = false;
  bool int8_smoothing = true;  // INT8: fold outlier smoothing into the weights at load
  // CPU kernels: auto|avx512vnni|avxvnni|avx2|neon-dot|neon|scalar (kernels::ResolveKernels),
  // empty = MOONDREAM_CPU_ISA or auto; an ISA this CPU lacks fails Create with
  // INVALID_ARGUMENT.
  std::string cpu_isa;
  int threads = 0;                     // intra-op threads; 0 = hardware cores
  int max_queue = 64;                  // queued requests beyond those running
  int max_concurrency = 1;             // requests computed at once (worker threads)
  double max_deadline_s = 600;         // a request's deadline is at most this far away
  double queue_timeout_s = 120;        // queued longer -> UNAVAILABLE (overloaded)
  // Image bytes of the queued and running requests together (RESOURCE_EXHAUSTED beyond);
  // 0 = no cap. See docs/memory.md, "Worst-case budget".
  uint64_t max_queued_bytes = 64ull << 20;
  // EncodeImage cache budget: an INT8 moondream2 image holds its 72 MB prefix KV cache, so
  // 160 MiB keeps two; sized to fit the 3 GiB INT8 sidecar (docs/memory.md).
  uint64_t image_cache_bytes = 160ull << 20;
  double image_cache_ttl_s = 3600;
  // Decompression-bomb guard, and the pixels all workers decode at once (one image at the
  // limit decodes alone: SchedulerOptions::max_decode_pixels).
  uint64_t max_image_pixels = 50'000'000;
  // Requests with Transparency::kServerDefault: flatten alpha onto white (true) or drop
  // it like the reference (false).
  bool flatten_transparency = false;
  int test_model_token_delay_ms = 0;       // slows the test model (tests of deadlines)
  int test_model_load_delay_ms = 0;        // slows its load (tests of signals while loading)
  int test_model_stall_ms = 0;             // its Encode ignores deadlines this long (liveness)
};

class Engine {
 public:
  // Loads every model; fails with a clear status (naming the file/tensor/field)
  // on a bad model directory. Logs progress.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  ~Engine();

  // Validates and enqueues. Returns an error at once (and never calls on_done) for
  // an unknown model (NOT_FOUND), a full queue (RESOURCE_EXHAUSTED), a draining
  // engine (UNAVAILABLE) or invalid arguments (INVALID_ARGUMENT). Otherwise
  // on_done is called exactly once on a worker thread.
  absl::Status Submit(Request request, Callbacks callbacks);

  std::vector<ModelInfo> ListModels() const;
  absl::StatusOr<ModelInfo> GetModel(const std::string& name) const;  // "" = default
  EngineStats Stats() const;

  // Stops accepting work (Submit -> UNAVAILABLE), waits up to `grace` for queued
  // and running requests, then cancels what is left. Idempotent.
  void Drain(Clock::duration grace);

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moondream
