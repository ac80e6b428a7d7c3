// bench_model: loads Moondream2 at one precision and times each stage of one caption.
//   bench_model --model-dir DIR --precision fp32|bf16|int8 --image FILE
//               [--max-tokens 16] [--threads N]
// Prints one JSON object: load seconds, RSS after load, image decode, vision (tower +
// projection), image prefill (730 positions), prompt prefill, decode (ms per token),
// peak RSS. The caption runs greedily (it stops at EOS, which random-weight synthetic
// checkpoints often predict at once); decode is then timed separately over --max-tokens
// greedy decoder steps that ignore EOS (the same Prefill + Logits + argmax as GenerateText).
#include <sys/resource.h>
#include <unistd.h>

#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include "engine/process_memory.h"
#include "engine/model/moondream.h"
#include "engine/model/sampling.h"
#include "engine/model/torch_compat.h"

namespace moondream {
namespace {

double RssMb() { return static_cast<double>(ResidentBytes()) / (1 << 20); }

double PeakRssMb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // KiB on Linux
}

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// ms per greedy decoder step over `steps` steps after the caption prompt, EOS ignored.
double DecodeMsPerToken(const Moondream& model, const MoondreamImage& image, int steps) {
  InferenceModeGuard guard;
  const Language& lm = model.language();
  const std::vector<int32_t>& prompt = lm.config.tokenizer.templates.at("caption_normal");
  KvCache cache = KvCache::CopyOf(image.prefix(), image.prefix().length() + prompt.size() + steps);
  int64_t pos = image.prefix().length();
  const at::Tensor ids = at::tensor(std::vector<int64_t>(prompt.begin(), prompt.end()), at::kLong);
  at::Tensor h = lm.text.Prefill(lm.text.Embed(ids), pos, cache);
  pos += ids.size(0);
  int32_t token = Argmax(lm.text.Logits(h[h.size(0) - 1]));
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < steps; ++i, ++pos) {
    h = lm.text.Prefill(lm.text.Embed(at::full({1}, token, at::kLong)), pos, cache);
    token = Argmax(lm.text.Logits(h[0]));
  }
  return MsSince(start) / steps;
}

int Bench(const std::map<std::string, std::string>& args) {
  const int threads = std::stoi(args.count("threads") ? args.at("threads") : "0");
  if (threads > 0) at::set_num_threads(threads);
  MoondreamOptions options;
  options.model_dir = args.at("model-dir");
  options.precision = args.count("precision") ? args.at("precision") : "fp32";
  auto model = Moondream::Load(options);
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 1;
  }
  const double rss_loaded = RssMb();
  std::ifstream in(args.at("image"), std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();

  Timings encode;
  RunContext ctx;
  ctx.timings = &encode;
  auto embeds = (*model)->EncodeEmbeds(bytes.str(), ctx, nullptr);
  if (!embeds.ok()) {
    std::cerr << embeds.status() << "\n";
    return 1;
  }
  const Clock::time_point prefill_start = Clock::now();
  auto image = (*model)->EncodeFromEmbeds(*embeds, nullptr);
  const double image_prefill_ms = MsSince(prefill_start);
  if (!image.ok()) {
    std::cerr << image.status() << "\n";
    return 1;
  }
  Request request;
  request.task = Task::kCaption;
  request.settings.max_tokens = std::stoi(args.count("max-tokens") ? args.at("max-tokens") : "16");
  auto result = (*model)->Run(request, **image, RunContext{});
  if (!result.ok()) {
    std::cerr << result.status() << "\n";
    return 1;
  }
  const int tokens = std::stoi(args.count("max-tokens") ? args.at("max-tokens") : "16");
  const double decode_ms = DecodeMsPerToken(**model, **image, tokens);
  std::printf(
      "{\"precision\": \"%s\", \"threads\": %d, \"load_s\": %.2f, \"rss_after_load_mb\": %.0f, "
      "\"image_decode_ms\": %.1f, \"vision_ms\": %.1f, \"image_prefill_ms\": %.1f, "
      "\"prompt_prefill_ms\": %.1f, \"decode_steps\": %d, \"decode_ms_per_token\": %.1f, "
      "\"caption_tokens\": %zu, \"peak_rss_mb\": %.0f}\n",
      options.precision.c_str(), at::get_num_threads(), (*model)->info().load_seconds, rss_loaded,
      encode.image_decode_ms, encode.vision_encode_ms, image_prefill_ms,
      result->timings.prefill_ms, tokens,
      decode_ms,
      result->token_ids.size(), PeakRssMb());
  return 0;
}

}  // namespace
}  // namespace moondream

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string key = argv[i];
    if (key.rfind("--", 0) != 0) break;
    args[key.substr(2)] = argv[i + 1];
  }
  if (!args.count("model-dir") || !args.count("image")) {
    std::fprintf(stderr,
                 "usage: bench_model --model-dir DIR --image FILE [--precision fp32|bf16|int8] "
                 "[--max-tokens N] [--threads N]\n");
    return 2;
  }
  return moondream::Bench(args);
}
