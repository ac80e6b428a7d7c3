// quality_report: INT8 vs FP32 quality statistics of one model directory (issue 4).
//   quality_report --model-dir DIR --image FILE... [--tokens N] [--objects N] [--threads T]
//                  [--int8-smoothing on|off] [--int8-skip GLOB,...]
// Loads the FP32 and INT8 variants (both resident at once: ~8 GB + ~2.2 GB for the full
// model), then for each image prints embedding cosine, step-0 KL / top-1, teacher-forced
// top-1 agreement over N greedy FP32 tokens and detect/point agreement (up to --objects
// objects) as a table (bench/quality/quality_compare.h defines every column).
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "bench/quality/quality_compare.h"
#include "engine/model/moondream.h"

namespace moondream {
namespace {

struct Args {
  std::string model_dir;
  std::vector<std::string> images;
  quality::CompareOptions compare;
  int threads = 0;
  bool int8_smoothing = true;  // --int8-smoothing off: the INT8 model without outlier smoothing
  std::vector<std::string> int8_skip;  // --int8-skip: layers the INT8 model keeps in fp32
};

bool Parse(int argc, char** argv, Args* args) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const bool has_value = i + 1 < argc;
    if (flag == "--model-dir" && has_value) {
      args->model_dir = argv[++i];
    } else if (flag == "--image" && has_value) {
      while (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
        args->images.push_back(argv[++i]);
      }
    } else if (flag == "--tokens" && has_value) {
      args->compare.max_tokens = std::atoi(argv[++i]);
    } else if (flag == "--objects" && has_value) {
      args->compare.max_objects = std::atoi(argv[++i]);
    } else if (flag == "--int8-smoothing" && has_value) {
      const std::string v = argv[++i];
      if (v != "on" && v != "off") return false;
      args->int8_smoothing = v == "on";
    } else if (flag == "--int8-skip" && has_value) {
      args->int8_skip = absl::StrSplit(argv[++i], ',', absl::SkipEmpty());
    } else if (flag == "--threads" && has_value) {
      args->threads = std::atoi(argv[++i]);
    } else {
      return false;
    }
  }
  return !args->model_dir.empty() && !args->images.empty() && args->compare.max_tokens > 0 &&
         args->compare.max_objects > 0;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::unique_ptr<Moondream> LoadOrDie(const std::string& dir, const std::string& precision,
                                     const Args& args) {
  const auto start = std::chrono::steady_clock::now();
  MoondreamOptions options;
  options.int8_smoothing = args.int8_smoothing;
  options.int8_skip = args.int8_skip;
  options.model_dir = dir;
  options.precision = precision;
  auto model = Moondream::Load(options);
  if (!model.ok()) {
    std::fprintf(stderr, "load %s: %s\n", precision.c_str(), model.status().ToString().c_str());
    std::exit(1);
  }
  std::printf("loaded %s in %.1f s, cpu_isa %s\n", precision.c_str(), SecondsSince(start),
              (*model)->info().cpu_isa.c_str());
  return std::move(*model);
}

int Main(int argc, char** argv) {
  Args args;
  if (!Parse(argc, argv, &args)) {
    std::fprintf(stderr,
                 "usage: quality_report --model-dir DIR --image FILE... [--tokens N] "
                 "[--objects N] [--threads T] [--int8-smoothing on|off] [--int8-skip GLOB,...]\n");
    return 2;
  }
  if (args.threads > 0) at::set_num_threads(args.threads);
  const auto fp32 = LoadOrDie(args.model_dir, "fp32", args);
  const auto int8 = LoadOrDie(args.model_dir, "int8", args);
  std::vector<quality::ImageStats> rows;
  for (const std::string& path : args.images) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    const auto start = std::chrono::steady_clock::now();
    auto stats = quality::CompareImage(*fp32, *int8, path.substr(path.rfind('/') + 1),
                                       bytes.str(), args.compare);
    if (!stats.ok()) {
      std::fprintf(stderr, "%s: %s\n", path.c_str(), stats.status().ToString().c_str());
      return 1;
    }
    std::printf("compared %s in %.1f s\n%s", path.c_str(), SecondsSince(start),
                quality::FormatTable(stats->image, {*stats}).c_str());
    std::fflush(stdout);
    rows.push_back(std::move(*stats));
  }
  std::printf("%s", quality::FormatTable(args.model_dir, rows).c_str());
  return 0;
}

}  // namespace
}  // namespace moondream

int main(int argc, char** argv) { return moondream::Main(argc, argv); }
