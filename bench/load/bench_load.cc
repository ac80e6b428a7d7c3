// bench_load: loads Moondream2 at one precision and reports what loading costs.
//   bench_load --model-dir DIR [--precision fp32|bf16|int8] [--int8-smoothing on|off] [--threads N]
//              [--image FILE [--max-tokens N]]
// Prints one JSON object on stdout: the CPU kernels' ISA (cpu_isa), load wall seconds,
// process CPU seconds (user, sys) spent in the load, peak RSS during the load (getrusage
// ru_maxrss, from process start) and RSS once loaded. With --image it then captions that
// image once (greedy, --max-tokens, default 16) and adds the end-to-end peak RSS (process
// start -> load -> one caption) and the caption's CPU seconds, plus the peak RSS of each
// inference phase alone (VmHWM, reset through /proc/self/clear_refs after the load and after
// the image encode; that also resets ru_maxrss, so the end-to-end peak is the max of the
// three phases). Progress on stderr.
#include <sys/resource.h>
#include <unistd.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include "engine/process_memory.h"
#include "engine/model/moondream.h"

namespace moondream {
namespace {

struct Usage {
  double user_s = 0, sys_s = 0, peak_gib = 0;
};

Usage Now() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto secs = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return {secs(u.ru_utime), secs(u.ru_stime), u.ru_maxrss / (1024.0 * 1024.0)};  // KiB -> GiB
}

double RssGib() { return static_cast<double>(ResidentBytes()) / (1 << 30); }

// Peak RSS (VmHWM) since the last ResetPeak(), in GiB.
double PhasePeakGib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / (1024.0 * 1024.0);  // kB
  }
  return 0;
}

void ResetPeak() { std::ofstream("/proc/self/clear_refs") << "5"; }

// One greedy caption of `path`; returns false (after printing why) on failure.
// `phase_peaks` gets the encode and the run peak RSS.
bool Caption(const Moondream& model, const std::string& path, int max_tokens, double phase_peaks[2]) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  ResetPeak();
  auto image = model.Encode(bytes.str(), RunContext{});
  phase_peaks[0] = PhasePeakGib();
  if (!image.ok()) {
    std::cerr << "encode: " << image.status() << "\n";
    return false;
  }
  std::cerr << "bench_load: image encoded, rss " << RssGib() << " GiB\n";
  ResetPeak();
  Request request;
  request.task = Task::kCaption;
  request.settings.max_tokens = max_tokens;
  auto result = model.Run(request, **image, RunContext{});
  if (!result.ok()) {
    std::cerr << "caption: " << result.status() << "\n";
    return false;
  }
  phase_peaks[1] = PhasePeakGib();
  return true;
}

int Bench(const std::map<std::string, std::string>& args) {
  auto arg = [&](const std::string& key, const std::string& fallback) {
    return args.count(key) ? args.at(key) : fallback;
  };
  const int threads = std::stoi(arg("threads", "0"));
  if (threads > 0) at::set_num_threads(threads);
  MoondreamOptions options;
  options.model_dir = args.at("model-dir");
  options.precision = arg("precision", "fp32");
  options.int8_smoothing = arg("int8-smoothing", "on") == "on";
  std::cerr << "bench_load: loading " << options.model_dir << " as " << options.precision << "\n";
  const Usage before = Now();
  const auto start = std::chrono::steady_clock::now();
  auto model = Moondream::Load(options);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 1;
  }
  const Usage loaded = Now();
  const double rss_loaded = RssGib();
  std::printf("{\"precision\": \"%s\", \"cpu_isa\": \"%s\", \"int8_smoothing\": %s, \"threads\": %d, "
              "\"load_s\": %.2f, \"load_user_s\": %.2f, \"load_sys_s\": %.2f, "
              "\"load_peak_rss_gib\": %.3f, \"loaded_rss_gib\": %.3f",
              options.precision.c_str(), (*model)->info().cpu_isa.c_str(),
              options.int8_smoothing ? "true" : "false", at::get_num_threads(), load_s,
              loaded.user_s - before.user_s, loaded.sys_s - before.sys_s, loaded.peak_gib,
              rss_loaded);
  if (args.count("image")) {
    std::cerr << "bench_load: loaded in " << load_s << " s; captioning " << args.at("image") << "\n";
    double peaks[2] = {0, 0};
    if (!Caption(**model, args.at("image"), std::stoi(arg("max-tokens", "16")), peaks)) return 1;
    const Usage done = Now();
    std::printf(", \"caption_cpu_s\": %.2f, \"encode_peak_rss_gib\": %.3f, \"run_peak_rss_gib\": %.3f, "
                "\"end_to_end_peak_rss_gib\": %.3f, \"final_rss_gib\": %.3f",
                done.user_s + done.sys_s - loaded.user_s - loaded.sys_s, peaks[0], peaks[1],
                std::max({loaded.peak_gib, peaks[0], peaks[1]}), RssGib());
  }
  std::printf("}\n");
  return 0;
}

}  // namespace
}  // namespace moondream

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    if (key.rfind("--", 0) != 0) break;
    args[key.substr(2)] = argv[i + 1];
  }
  if (!args.count("model-dir")) {
    std::fprintf(stderr, "usage: bench_load --model-dir DIR [--precision fp32|bf16|int8] "
                         "[--int8-smoothing on|off] [--threads N] [--image FILE [--max-tokens N]]\n");
    return 2;
  }
  return moondream::Bench(args);
}
