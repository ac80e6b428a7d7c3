// bench_stages: the INT8 speed targets, side by side in one process.
//
//   bench_stages [--model-dir DIR] --image FILE [--precisions fp32,bf16,int8] [--threads N]
//                [--repeats 3] [--decode-steps 16] [--stages vision,prefill,decode]
//                [--json FILE]
//
// For each precision (loaded one at a time, freed before the next): load seconds (after
// reading model.safetensors once so the page cache is warm) and RSS after load; vision encode
// ms per crop (EncodeEmbeds' vision_encode_ms / the image's crop count); the 730-position
// image prefill (EncodeFromEmbeds); decode ms per token at the 730+ context (greedy decoder
// steps that ignore EOS). Each stage runs --repeats times: median and min. In the same run:
// the machine's read bandwidth (bench/common) and the INT8 bytes one decode token reads
// (text decoder linears + lm_head, packed weights + scales + row sums + bias; not the token
// embedding; KV cache reads reported separately), the decode roofline and the fraction of it
// INT8 reaches. Prints a summary table with INT8/FP32 and INT8/BF16 speed-ups and PASS/FAIL
// against the targets (docs/engine.md) on stdout; progress on stderr; --json FILE gets it all.
// The exit status is 0 whether targets pass or fail (1 = a stage failed, 2 = bad flags).
// --model-dir empty = the Hugging Face cache (ResolveModelDir), like the server.
#include <malloc.h>
#include <sched.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bench/common/bench_common.h"
#include "engine/image/image.h"
#include "engine/model/language.h"
#include "engine/model/moondream.h"
#include "engine/model/sampling.h"
#include "engine/model/torch_compat.h"
#include "engine/model/vision.h"
#include "engine/process_memory.h"
#include "engine/weights/config.h"
#include "engine/weights/model_dir.h"
#include "kernels/kernels.h"
#include "quantization/linear.h"

namespace moondream {
namespace {

// Environment that changes the timings: recorded in the output and the JSON.
constexpr const char* kEnvNames[] = {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS",
                                     "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE"};

namespace mb = bench;

// ---- targets (the issue; docs/engine.md) ----
constexpr double kComputeVsFp32 = 4.0;   // vision per crop and image prefill, INT8 vs FP32
constexpr double kComputeVsBf16 = 1.5;   // the same, INT8 vs BF16
constexpr double kDecodeRoofline = 0.65; // INT8 decode, fraction of the read-bandwidth roofline
constexpr double kDecodeVsBf16 = 1.6;    // INT8 decode vs BF16
constexpr double kLoadSeconds = 15.0;    // INT8 load + quantize, warm page cache

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}
double RssMb() { return static_cast<double>(ResidentBytes()) / (1 << 20); }

void Progress(const std::string& line) {
  std::cerr << "bench_stages: " << line << "  [loadavg " << mb::LoadAvg() << "]" << std::endl;
}

// Samples of one stage: median (mean of the middle two for an even count) and min.
struct Stat {
  std::vector<double> samples;
  bool empty() const { return samples.empty(); }
  double median() const {
    std::vector<double> s = samples;
    std::sort(s.begin(), s.end());
    const size_t n = s.size();
    return n == 0 ? NAN : n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  }
  double min() const { return samples.empty() ? NAN : *std::min_element(samples.begin(), samples.end()); }
};

// ---- the KV cache: the one place that uses the KvCache API directly ----
// A request's cache for the decode loop, as RunTask builds it: the image's 730-position
// prefix shared read-only, plus its own storage up to `capacity` positions in all.
KvCache RequestCache(const MoondreamImage& image, int64_t capacity) {
  return KvCache::Extend(image.prefix(), capacity);
}

// Decode ms per token: the caption prompt is prefilled after the image prefix (untimed), then
// `steps` greedy decoder steps are timed, EOS ignored (random-weight synthetic checkpoints
// predict EOS at once, so Run's own decode timing would cover no tokens). The same
// Embed + Prefill + Logits + argmax as GenerateText. Adds each step's ms to `steps_ms`.
double DecodeMsPerToken(const Moondream& model, const MoondreamImage& image, int steps,
                        int64_t* first_pos, std::vector<double>* steps_ms, double* cpu_ms) {
  InferenceModeGuard guard;
  const Language& lm = model.language();
  const std::vector<int32_t>& prompt = lm.config.tokenizer.templates.at("caption_normal");
  KvCache cache = RequestCache(image, image.prefix().length() + prompt.size() + steps);
  int64_t pos = image.prefix().length();
  const at::Tensor ids = at::tensor(std::vector<int64_t>(prompt.begin(), prompt.end()), at::kLong);
  at::Tensor h = lm.text.Prefill(lm.text.Embed(ids), pos, cache);
  pos += ids.size(0);
  *first_pos = pos;
  int32_t token = Argmax(lm.text.Logits(h[h.size(0) - 1]));
  const double cpu = mb::CpuSeconds();
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < steps; ++i, ++pos) {
    const Clock::time_point step = Clock::now();
    h = lm.text.Prefill(lm.text.Embed(at::full({1}, token, at::kLong)), pos, cache);
    token = Argmax(lm.text.Logits(h[0]));
    steps_ms->push_back(MsSince(step));
  }
  *cpu_ms = (mb::CpuSeconds() - cpu) * 1000 / steps;
  return MsSince(start) / steps;
}

// ---- INT8 bytes one decode step reads ----
// Resident bytes of an INT8 Linear of this shape (packed weights + scales + row sums + fp32
// bias), measured on a layer built the way WeightStore builds them, in this process (so the
// layout matches the kernel path the model uses).
uint64_t Int8LinearBytes(int64_t out, int64_t in) {
  quant::Int8Matrix m{at::zeros({out, in}, at::kChar), at::ones({out}, at::kFloat)};
  return quant::Linear::Int8(std::move(m), at::zeros({out}, at::kFloat)).bytes();
}

struct DecodeBytes {
  uint64_t text_linears = 0;  // n_layers x (qkv + proj + fc1 + fc2)
  uint64_t lm_head = 0;
  uint64_t weights() const { return text_linears + lm_head; }
  uint64_t kv_per_token = 0;  // KV cache read per step at the mean decode context
  double kv_context = 0;      // mean positions attended per decode step
  std::string kv_dtype;
};

DecodeBytes Int8DecodeBytes(const TextConfig& c, int prompt_len, int steps) {
  DecodeBytes b;
  const int64_t d = c.dim, ff = c.ff_dim();
  b.text_linears = c.n_layers * (Int8LinearBytes(3 * d, d) + Int8LinearBytes(d, d) +
                                 Int8LinearBytes(ff, d) + Int8LinearBytes(d, ff));
  b.lm_head = Int8LinearBytes(c.vocab_size, d);
  const at::ScalarType kv = KvCacheDtype(Precision::kINT8);
  // Step i (0-based) writes position 730 + prompt + i and attends to that many + 1 positions.
  b.kv_context = c.prefix_attn + prompt_len + (steps + 1) / 2.0;
  // K and V rows of every layer and head; an int8 cache adds one fp32 scale per row.
  const double row_bytes = c.head_dim() * at::elementSize(kv) + (kv == at::kChar ? 4.0 : 0.0);
  b.kv_per_token = static_cast<uint64_t>(2.0 * c.n_layers * c.n_heads * row_bytes * b.kv_context);
  b.kv_dtype = at::toString(kv);
  return b;
}

// ---- results ----
struct PrecisionResult {
  std::string precision;
  double warm_s = 0, load_s = 0, rss_before_load_mb = 0, rss_after_load_mb = 0, peak_rss_mb = 0;
  uint64_t parameters = 0;
  std::string loadavg_start, loadavg_end;
  Stat vision_ms, vision_cpu_ms, vision_ms_per_crop, vision_cpu_ms_per_crop, prefill_ms, prefill_cpu_ms, decode_ms_per_token,
      decode_cpu_ms_per_token, decode_step_ms;
  int64_t decode_first_pos = 0;
  bool random_embeds = false;
};

// Reads the file once so the load below starts from a warm page cache; returns seconds.
double WarmPageCache(const std::string& path, uint64_t* bytes) {
  const Clock::time_point start = Clock::now();
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buf(8 << 20);
  *bytes = 0;
  while (in.read(buf.data(), buf.size()) || in.gcount() > 0) *bytes += in.gcount();
  return MsSince(start) / 1000;
}

double PeakRssMb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // kB
  return 0;
}
void ResetPeak() { std::ofstream("/proc/self/clear_refs") << "5"; }

struct Options {
  std::string model_dir, image, json;
  std::vector<std::string> precisions{"fp32", "bf16", "int8"};
  std::set<std::string> stages{"vision", "prefill", "decode"};
  int threads = 0, repeats = 3, decode_steps = 16;
};

bool Run(const Options& o, const std::string& model_dir, const std::string& image_bytes,
         const PrecisionResult& proto, PrecisionResult& r) {
  r = proto;
  ResetPeak();
  r.rss_before_load_mb = RssMb();
  r.loadavg_start = mb::LoadAvg();
  uint64_t file_bytes = 0;
  r.warm_s = WarmPageCache(model_dir + "/model.safetensors", &file_bytes);
  Progress("[" + r.precision + "] page cache warmed (" + std::to_string(file_bytes >> 20) + " MiB in " +
           std::to_string(r.warm_s) + " s); loading");
  MoondreamOptions options;
  options.model_dir = model_dir;
  options.precision = r.precision;
  const Clock::time_point load_start = Clock::now();
  auto model = Moondream::Load(options);
  r.load_s = MsSince(load_start) / 1000;
  if (!model.ok()) {
    std::cerr << "bench_stages: load " << r.precision << ": " << model.status() << "\n";
    return false;
  }
  r.rss_after_load_mb = RssMb();
  r.parameters = (*model)->info().parameter_count;
  Progress("[" + r.precision + "] loaded in " + std::to_string(r.load_s) + " s, rss " +
           std::to_string(static_cast<int>(r.rss_after_load_mb)) + " MB");
  const Moondream& m = **model;

  at::Tensor embeds;
  if (o.stages.count("vision")) {
    for (int i = 0; i < o.repeats; ++i) {
      Timings t;
      RunContext ctx;
      ctx.timings = &t;
      const double cpu = mb::CpuSeconds();
      auto e = m.EncodeEmbeds(image_bytes, ctx, nullptr);
      if (!e.ok()) {
        std::cerr << "bench_stages: vision " << r.precision << ": " << e.status() << "\n";
        return false;
      }
      embeds = *e;
      r.vision_ms.samples.push_back(t.vision_encode_ms);
      r.vision_cpu_ms.samples.push_back((mb::CpuSeconds() - cpu) * 1000);
      Progress("[" + r.precision + "] vision " + std::to_string(i + 1) + "/" +
               std::to_string(o.repeats) + ": " + std::to_string(t.vision_encode_ms) + " ms");
    }
  } else if (o.stages.count("prefill") || o.stages.count("decode")) {
    // Prefill/decode timings do not depend on the embedding values: skip the vision tower.
    const MoondreamConfig& c = m.language().config;
    at::manual_seed(0);
    embeds = (at::randn({c.vision.n_patches(), c.text.dim}) * 0.02).to(m.compute_dtype());
    r.random_embeds = true;
  }

  std::shared_ptr<const MoondreamImage> image;
  auto prefill = [&]() -> bool {
    auto img = m.EncodeFromEmbeds(embeds, nullptr);
    if (!img.ok()) {
      std::cerr << "bench_stages: prefill " << r.precision << ": " << img.status() << "\n";
      return false;
    }
    image = *img;
    return true;
  };
  if (o.stages.count("prefill")) {
    for (int i = 0; i < o.repeats; ++i) {
      image.reset();  // the previous prefix is freed before the next is built
      const double cpu = mb::CpuSeconds();
      const Clock::time_point start = Clock::now();
      if (!prefill()) return false;
      r.prefill_ms.samples.push_back(MsSince(start));
      r.prefill_cpu_ms.samples.push_back((mb::CpuSeconds() - cpu) * 1000);
      Progress("[" + r.precision + "] image prefill " + std::to_string(i + 1) + "/" +
               std::to_string(o.repeats) + ": " + std::to_string(r.prefill_ms.samples.back()) + " ms");
    }
  } else if (o.stages.count("decode")) {
    if (!prefill()) return false;
  }

  if (o.stages.count("decode")) {
    for (int i = 0; i < o.repeats; ++i) {
      double ms = 0, cpu_ms = 0;
      auto status = RunGuarded([&]() -> absl::Status {
        ms = DecodeMsPerToken(m, *image, o.decode_steps, &r.decode_first_pos, &r.decode_step_ms.samples, &cpu_ms);
        return absl::OkStatus();
      });
      if (!status.ok()) {
        std::cerr << "bench_stages: decode " << r.precision << ": " << status << "\n";
        return false;
      }
      r.decode_ms_per_token.samples.push_back(ms);
      r.decode_cpu_ms_per_token.samples.push_back(cpu_ms);
      Progress("[" + r.precision + "] decode " + std::to_string(i + 1) + "/" + std::to_string(o.repeats) +
               ": " + std::to_string(ms) + " ms/token over " + std::to_string(o.decode_steps) + " steps");
    }
  }
  r.peak_rss_mb = PeakRssMb();
  r.loadavg_end = mb::LoadAvg();
  return true;
}

// ---- output ----
std::string Fmt(const char* fmt, double v) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

std::string JsonNum(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string JsonStr(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string JsonStat(const Stat& s) {
  std::string out = "{\"median\": " + JsonNum(s.median()) + ", \"min\": " + JsonNum(s.min()) + ", \"samples\": [";
  for (size_t i = 0; i < s.samples.size(); ++i) out += (i ? ", " : "") + JsonNum(s.samples[i]);
  return out + "]}";
}

struct Ratio {
  double median = NAN, min = NAN;  // base / int8 (speed-up), median/median and min/min
};
Ratio SpeedUp(const Stat& base, const Stat& int8) {
  if (base.empty() || int8.empty()) return {};
  return {base.median() / int8.median(), base.min() / int8.min()};
}

struct Target {
  std::string name, metric, op;
  double value = NAN, threshold = 0;
  std::string status() const {
    if (!std::isfinite(value)) return "SKIP";
    return (op == ">=" ? value >= threshold : value <= threshold) ? "PASS" : "FAIL";
  }
};

int Main(const Options& o, const std::string& command) {
  if (o.threads > 0) at::set_num_threads(o.threads);
  const int threads = at::get_num_threads();
  auto dir = ResolveModelDir(o.model_dir);
  if (!dir.ok()) {
    std::cerr << "bench_stages: " << dir.status() << "\n";
    return 1;
  }
  auto config = LoadConfig(*dir + "/config.json");
  if (!config.ok()) {
    std::cerr << "bench_stages: " << config.status() << "\n";
    return 1;
  }
  std::ifstream in(o.image, std::ios::binary);
  if (!in) {
    std::cerr << "bench_stages: cannot read " << o.image << "\n";
    return 1;
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  const std::string image_bytes = bytes.str();
  // The crop count, exactly as EncodeEmbeds computes it.
  auto rgb = DecodeImage(image_bytes, MoondreamOptions{}.max_image_pixels);
  if (!rgb.ok()) {
    std::cerr << "bench_stages: " << rgb.status() << "\n";
    return 1;
  }
  auto crops = OverlapCrops(*rgb, CropConfigFor(config->vision));
  if (!crops.ok()) {
    std::cerr << "bench_stages: " << crops.status() << "\n";
    return 1;
  }
  const int n_crops = crops->count;

  std::map<std::string, std::string> env;
  for (const char* name : kEnvNames) env[name] = std::getenv(name) ? std::getenv(name) : "";
  if (env["GOMP_SPINCOUNT"].empty() && env["OMP_WAIT_POLICY"].empty())
    std::cerr << "bench_stages: note: GOMP_SPINCOUNT is unset (scripts/serve runs with 100000)\n";
  const std::string kernel = kernels::DefaultKernels().name;
  const std::string loadavg_start = mb::LoadAvg();
  Progress("threads " + std::to_string(threads) + ", image " + std::to_string(rgb->width) + "x" +
           std::to_string(rgb->height) + " = " + std::to_string(n_crops) + " crops; measuring read bandwidth");
  const double bw_start = mb::ReadBandwidth();
  Progress("read bandwidth " + std::to_string(bw_start) + " GB/s");
  const int prompt_len =
      static_cast<int>(config->tokenizer.templates.count("caption_normal")
                           ? config->tokenizer.templates.at("caption_normal").size() : 0);
  const DecodeBytes db = Int8DecodeBytes(config->text, prompt_len, o.decode_steps);

  std::vector<PrecisionResult> results;
  for (const std::string& p : o.precisions) {
    PrecisionResult r;
    r.precision = p;
    PrecisionResult out;
    if (!Run(o, *dir, image_bytes, r, out)) return 1;
    for (double ms : out.vision_ms.samples) out.vision_ms_per_crop.samples.push_back(ms / n_crops);
    for (double ms : out.vision_cpu_ms.samples) out.vision_cpu_ms_per_crop.samples.push_back(ms / n_crops);
    results.push_back(out);
    malloc_trim(0);  // the model is gone: hand its heap back before the next load
    Progress("[" + p + "] freed, rss " + std::to_string(static_cast<int>(RssMb())) + " MB");
  }
  Progress("measuring read bandwidth again");
  const double bw_end = mb::ReadBandwidth();
  // The higher of the two: the roofline fraction is then the conservative one.
  const double bw = std::max(bw_start, bw_end);
  const std::string loadavg_end = mb::LoadAvg();

  auto find = [&](const std::string& p) -> const PrecisionResult* {
    for (const auto& r : results)
      if (r.precision == p) return &r;
    return nullptr;
  };
  const PrecisionResult* f32 = find("fp32");
  const PrecisionResult* b16 = find("bf16");
  const PrecisionResult* i8 = find("int8");
  const Stat none;
  auto stat = [&](const PrecisionResult* r, Stat PrecisionResult::*field) -> const Stat& {
    return r ? r->*field : none;
  };

  struct Row {
    std::string key, label;
    Stat PrecisionResult::*field;
  };
  const Row rows[] = {
      {"vision_ms_per_crop", "vision encode ms/crop", &PrecisionResult::vision_ms_per_crop},
      {"image_prefill_ms", "image prefill ms (730 positions)", &PrecisionResult::prefill_ms},
      {"decode_ms_per_token", "decode ms/token", &PrecisionResult::decode_ms_per_token},
  };
  // Process CPU time (all threads): on a shared machine the least load-sensitive figure.
  const Row cpu_rows[] = {
      {"vision_cpu_ms_per_crop", "vision encode CPU ms/crop", &PrecisionResult::vision_cpu_ms_per_crop},
      {"image_prefill_cpu_ms", "image prefill CPU ms", &PrecisionResult::prefill_cpu_ms},
      {"decode_cpu_ms_per_token", "decode CPU ms/token", &PrecisionResult::decode_cpu_ms_per_token},
  };
  std::vector<Row> all_rows(std::begin(rows), std::end(rows));
  all_rows.insert(all_rows.end(), std::begin(cpu_rows), std::end(cpu_rows));
  std::map<std::string, std::pair<Ratio, Ratio>> ratios;  // key -> (vs fp32, vs bf16)
  for (const Row& row : all_rows)
    ratios[row.key] = {SpeedUp(stat(f32, row.field), stat(i8, row.field)),
                       SpeedUp(stat(b16, row.field), stat(i8, row.field))};

  // Decode roofline: read bandwidth / INT8 weight bytes per token.
  const double roofline_tps = bw * 1e9 / db.weights();
  const Stat& dec = stat(i8, &PrecisionResult::decode_ms_per_token);
  const double frac_median = dec.empty() ? NAN : (1000 / dec.median()) / roofline_tps;
  const double frac_min = dec.empty() ? NAN : (1000 / dec.min()) / roofline_tps;

  std::vector<Target> targets = {
      {"vision encode per crop: INT8 >= 4x FP32", "ratios.vision_ms_per_crop.int8_vs_fp32.median", ">=",
       ratios["vision_ms_per_crop"].first.median, kComputeVsFp32},
      {"vision encode per crop: INT8 >= 1.5x BF16", "ratios.vision_ms_per_crop.int8_vs_bf16.median", ">=",
       ratios["vision_ms_per_crop"].second.median, kComputeVsBf16},
      {"image prefill: INT8 >= 4x FP32", "ratios.image_prefill_ms.int8_vs_fp32.median", ">=",
       ratios["image_prefill_ms"].first.median, kComputeVsFp32},
      {"image prefill: INT8 >= 1.5x BF16", "ratios.image_prefill_ms.int8_vs_bf16.median", ">=",
       ratios["image_prefill_ms"].second.median, kComputeVsBf16},
      {"decode: INT8 >= 65% of read roofline", "decode_roofline.fraction_median", ">=", frac_median,
       kDecodeRoofline},
      {"decode: INT8 >= 1.6x BF16", "ratios.decode_ms_per_token.int8_vs_bf16.median", ">=",
       ratios["decode_ms_per_token"].second.median, kDecodeVsBf16},
      {"load + quantize: INT8 <= 15 s (warm page cache)", "results.int8.load_s", "<=",
       i8 ? i8->load_s : NAN, kLoadSeconds},
  };

  // ---- stdout: the summary ----
  std::printf("bench_stages  model %s  image %s (%dx%d, %d crops)\n", dir->c_str(), o.image.c_str(),
              rgb->width, rgb->height, n_crops);
  std::printf("threads %d  repeats %d  decode steps %d  INT8 kernel %s ", threads, o.repeats,
              o.decode_steps, kernel.c_str());
  for (const char* name : kEnvNames) std::printf(" %s=%s", name, env[name].c_str());
  std::printf("\n");
  std::printf("read bandwidth %.1f GB/s (start %.1f, end %.1f; the higher is the roofline)\n", bw, bw_start, bw_end);
  std::printf("loadavg start %s | end %s\n\n", loadavg_start.c_str(), loadavg_end.c_str());
  std::printf("ms: median / min over %d repeats of wall time; CPU rows: process CPU time, all threads (the\n"
              "least load-sensitive figure on a shared machine); speed-up = other / int8 (median / min)\n\n",
              o.repeats);
  std::printf("| stage | fp32 | bf16 | int8 | int8 vs fp32 | int8 vs bf16 |\n|---|---|---|---|---|---|\n");
  auto cell = [&](const Stat& s) {
    const char* f = s.min() < 10 ? "%.2f" : "%.1f";
    return s.empty() ? std::string("-") : Fmt(f, s.median()) + " / " + Fmt(f, s.min());
  };
  auto rcell = [&](const Ratio& r) {
    return std::isfinite(r.median) ? Fmt("%.2f", r.median) + "x / " + Fmt("%.2f", r.min) + "x" : std::string("-");
  };
  for (const Row& row : rows) {
    std::printf("| %s | %s | %s | %s | %s | %s |\n", row.label.c_str(), cell(stat(f32, row.field)).c_str(),
                cell(stat(b16, row.field)).c_str(), cell(stat(i8, row.field)).c_str(),
                rcell(ratios[row.key].first).c_str(), rcell(ratios[row.key].second).c_str());
  }
  for (const Row& row : cpu_rows) {
    std::printf("| %s | %s | %s | %s | %s | %s |\n", row.label.c_str(), cell(stat(f32, row.field)).c_str(),
                cell(stat(b16, row.field)).c_str(), cell(stat(i8, row.field)).c_str(),
                rcell(ratios[row.key].first).c_str(), rcell(ratios[row.key].second).c_str());
  }
  auto scalar = [&](const PrecisionResult* r, double PrecisionResult::*field, const char* fmt) {
    return r ? Fmt(fmt, r->*field) : std::string("-");
  };
  std::printf("| load s (warm page cache) | %s | %s | %s | | |\n", scalar(f32, &PrecisionResult::load_s, "%.2f").c_str(),
              scalar(b16, &PrecisionResult::load_s, "%.2f").c_str(), scalar(i8, &PrecisionResult::load_s, "%.2f").c_str());
  std::printf("| RSS after load MB | %s | %s | %s | | |\n",
              scalar(f32, &PrecisionResult::rss_after_load_mb, "%.0f").c_str(),
              scalar(b16, &PrecisionResult::rss_after_load_mb, "%.0f").c_str(),
              scalar(i8, &PrecisionResult::rss_after_load_mb, "%.0f").c_str());
  std::printf("\nINT8 decode reads per token: %.1f MB of weights (text linears %.1f + lm_head %.1f; token "
              "embedding excluded) + %.1f MB of %s KV cache at %.1f positions (not in the roofline)\n",
              db.weights() / 1e6, db.text_linears / 1e6, db.lm_head / 1e6, db.kv_per_token / 1e6,
              db.kv_dtype.c_str(), db.kv_context);
  std::printf("roofline %.2f tokens/s (%.2f ms/token) at %.1f GB/s; INT8 achieved %s tokens/s = %s of roofline "
              "(median), %s (min)\n\n",
              roofline_tps, 1000 / roofline_tps, bw, Fmt("%.2f", 1000 / dec.median()).c_str(),
              Fmt("%.1f%%", 100 * frac_median).c_str(), Fmt("%.1f%%", 100 * frac_min).c_str());
  std::printf("| target | measured | status |\n|---|---|---|\n");
  for (const Target& t : targets) {
    std::string v = !std::isfinite(t.value)             ? "-"
                    : t.metric.find("fraction") != std::string::npos ? Fmt("%.1f%%", 100 * t.value)
                    : t.metric.find("load_s") != std::string::npos   ? Fmt("%.2f s", t.value)
                                                                      : Fmt("%.2fx", t.value);
    std::printf("| %s | %s | %s |\n", t.name.c_str(), v.c_str(), t.status().c_str());
  }
  std::fflush(stdout);

  // ---- --json ----
  if (!o.json.empty()) {
    std::ostringstream j;
    j << "{\n  \"command\": " << JsonStr(command) << ",\n  \"model_dir\": " << JsonStr(*dir)
      << ",\n  \"image\": " << JsonStr(o.image) << ",\n  \"image_width\": " << rgb->width
      << ", \"image_height\": " << rgb->height << ", \"crops\": " << n_crops << ",\n  \"threads\": " << threads
      << ", \"repeats\": " << o.repeats << ", \"decode_steps\": " << o.decode_steps << ",\n  \"precisions\": [";
    for (size_t i = 0; i < o.precisions.size(); ++i) j << (i ? ", " : "") << JsonStr(o.precisions[i]);
    j << "],\n  \"stages\": [";
    {
      size_t i = 0;
      for (const char* s : {"vision", "prefill", "decode"})
        if (o.stages.count(s)) j << (i++ ? ", " : "") << JsonStr(s);
    }
    j << "],\n  \"machine\": {\"int8_kernel\": " << JsonStr(kernel) << ", \"read_bandwidth_gbs\": " << JsonNum(bw)
      << ", \"read_bandwidth_start_gbs\": " << JsonNum(bw_start) << ", \"read_bandwidth_end_gbs\": "
      << JsonNum(bw_end) << ", \"loadavg_start\": " << JsonStr(loadavg_start) << ", \"loadavg_end\": "
      << JsonStr(loadavg_end) << ", \"env\": {";
    {
      size_t i = 0;
      for (const auto& [k, v] : env) j << (i++ ? ", " : "") << JsonStr(k) << ": " << JsonStr(v);
    }
    j << "}},\n  \"int8_decode_bytes\": {\"text_linears\": " << db.text_linears << ", \"lm_head\": " << db.lm_head
      << ", \"weights_per_token\": " << db.weights() << ", \"kv_cache_per_token\": " << db.kv_per_token
      << ", \"kv_cache_dtype\": " << JsonStr(db.kv_dtype) << ", \"kv_context\": " << JsonNum(db.kv_context)
      << "},\n  \"results\": {";
    for (size_t i = 0; i < results.size(); ++i) {
      const PrecisionResult& r = results[i];
      j << (i ? "," : "") << "\n    " << JsonStr(r.precision) << ": {\"warm_page_cache_s\": " << JsonNum(r.warm_s)
        << ", \"load_s\": " << JsonNum(r.load_s) << ", \"parameters\": " << r.parameters
        << ", \"rss_before_load_mb\": " << JsonNum(r.rss_before_load_mb) << ", \"rss_after_load_mb\": "
        << JsonNum(r.rss_after_load_mb) << ", \"peak_rss_mb\": " << JsonNum(r.peak_rss_mb)
        << ", \"loadavg_start\": " << JsonStr(r.loadavg_start) << ", \"loadavg_end\": " << JsonStr(r.loadavg_end)
        << ", \"random_embeds\": " << (r.random_embeds ? "true" : "false");
      auto put = [&](const char* key, const Stat& s) {
        if (!s.empty()) j << ",\n      " << JsonStr(key) << ": " << JsonStat(s);
      };
      put("vision_ms", r.vision_ms);
      put("vision_cpu_ms", r.vision_cpu_ms);
      put("vision_ms_per_crop", r.vision_ms_per_crop);
      put("vision_cpu_ms_per_crop", r.vision_cpu_ms_per_crop);
      put("image_prefill_ms", r.prefill_ms);
      put("image_prefill_cpu_ms", r.prefill_cpu_ms);
      put("decode_ms_per_token", r.decode_ms_per_token);
      put("decode_cpu_ms_per_token", r.decode_cpu_ms_per_token);
      put("decode_step_ms", r.decode_step_ms);
      if (!r.decode_ms_per_token.empty())
        j << ",\n      \"decode_positions\": [" << r.decode_first_pos << ", " << r.decode_first_pos + o.decode_steps - 1
          << "]";
      j << "}";
    }
    j << "\n  },\n  \"ratios\": {";
    {
      size_t i = 0;
      for (const Row& row : all_rows) {
        const auto& [vs32, vs16] = ratios[row.key];
        j << (i++ ? "," : "") << "\n    " << JsonStr(row.key) << ": {\"int8_vs_fp32\": {\"median\": "
          << JsonNum(vs32.median) << ", \"min\": " << JsonNum(vs32.min) << "}, \"int8_vs_bf16\": {\"median\": "
          << JsonNum(vs16.median) << ", \"min\": " << JsonNum(vs16.min) << "}}";
      }
    }
    j << "\n  },\n  \"decode_roofline\": {\"read_bandwidth_gbs\": " << JsonNum(bw)
      << ", \"weight_bytes_per_token\": " << db.weights() << ", \"tokens_per_s\": " << JsonNum(roofline_tps)
      << ", \"int8_tokens_per_s_median\": " << JsonNum(dec.empty() ? NAN : 1000 / dec.median())
      << ", \"fraction_median\": " << JsonNum(frac_median) << ", \"fraction_min\": " << JsonNum(frac_min)
      << "},\n  \"targets\": [";
    for (size_t i = 0; i < targets.size(); ++i) {
      const Target& t = targets[i];
      j << (i ? "," : "") << "\n    {\"name\": " << JsonStr(t.name) << ", \"metric\": " << JsonStr(t.metric)
        << ", \"op\": " << JsonStr(t.op) << ", \"threshold\": " << JsonNum(t.threshold)
        << ", \"value\": " << JsonNum(t.value) << ", \"status\": " << JsonStr(t.status()) << "}";
    }
    j << "\n  ]\n}\n";
    std::ofstream out(o.json);
    out << j.str();
    if (!out) {
      std::cerr << "bench_stages: cannot write " << o.json << "\n";
      return 1;
    }
    Progress("wrote " + o.json);
  }
  return 0;
}

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

int PrintUsage(const std::string& why) {
  if (!why.empty()) std::cerr << "bench_stages: " << why << "\n";
  std::cerr << "usage: bench_stages [--model-dir DIR] --image FILE [--precisions fp32,bf16,int8] [--threads N]\n"
               "                    [--repeats 3] [--decode-steps 16] [--stages vision,prefill,decode]\n"
               "                    [--json FILE]\n";
  return 2;
}

int CpuCount() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  return static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
}

}  // namespace
}  // namespace moondream

int main(int argc, char** argv) {
  using namespace moondream;
  Options o;
  o.threads = CpuCount();
  std::string command;
  for (const char* name : kEnvNames)
    if (const char* v = std::getenv(name)) command += std::string(name) + "=" + v + " ";
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  try {
    for (int i = 1; i < argc; ++i) {
      std::string key = argv[i], value;
      if (key.rfind("--", 0) != 0) return PrintUsage("unexpected argument " + key);
      key = key.substr(2);
      if (const size_t eq = key.find('='); eq != std::string::npos) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
      } else if (key == "help") {
        return PrintUsage("");
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return PrintUsage("--" + key + " needs a value");
      }
      if (key == "model-dir") o.model_dir = value;
      else if (key == "image") o.image = value;
      else if (key == "json") o.json = value;
      else if (key == "precisions") o.precisions = Split(value);
      else if (key == "threads") o.threads = std::stoi(value);
      else if (key == "repeats") o.repeats = std::stoi(value);
      else if (key == "decode-steps") o.decode_steps = std::stoi(value);
      else if (key == "stages") {
        o.stages.clear();
        for (const std::string& s : Split(value)) {
          if (s != "vision" && s != "prefill" && s != "decode") return PrintUsage("unknown stage " + s);
          o.stages.insert(s);
        }
      } else {
        return PrintUsage("unknown flag --" + key);
      }
    }
  } catch (const std::exception&) {
    return PrintUsage("bad number");
  }
  if (o.image.empty()) return PrintUsage("--image is required");
  if (o.repeats < 1 || o.decode_steps < 1 || o.threads < 1) return PrintUsage("--repeats, --decode-steps, --threads must be >= 1");
  if (o.precisions.empty()) return PrintUsage("--precisions is empty");
  for (const std::string& p : o.precisions)
    if (p != "fp32" && p != "bf16" && p != "int8") return PrintUsage("unknown precision " + p + " (fp32, bf16, int8)");
  return Main(o, command);
}
