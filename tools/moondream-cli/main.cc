// moondream-cli: one request on a freshly loaded engine, without the server.
//   moondream-cli --model-dir DIR [--precision P] caption --image FILE --json
//   moondream-cli --model-dir DIR tokenize --text T --json
// Exit codes: 0 ok, 1 runtime error, 2 usage error (messages on stderr).
#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <sstream>
#include <string>

#include "engine/api.h"
#include "engine/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/weights/model_dir.h"
#include "nlohmann/json.hpp"
#include "tools/moondream-cli/cli_args.h"

namespace moondream::cli {
namespace {

using nlohmann::json;

constexpr int kRuntimeError = 1;
constexpr int kUsageError = 2;

int Fail(const absl::Status& status) {
  std::cerr << "moondream-cli: " << status << "\n";
  return kRuntimeError;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError("cannot read " + path + ": " + std::strerror(errno));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

Request BuildRequest(const CliArgs& args, std::string image) {
  Request request;
  request.image_bytes = std::move(image);
  request.caption_length = args.length;
  request.settings.max_tokens = args.max_tokens;
  request.max_objects = args.max_objects;
  if (args.command == "caption") {
    request.task = Task::kCaption;
  } else if (args.command == "query") {
    request.task = Task::kQuery;
    request.text = args.question;
  } else {
    request.task = args.command == "detect" ? Task::kDetect : Task::kPoint;
    request.text = args.object;
  }
  return request;
}

absl::StatusOr<Result> RunOnce(Engine& engine, Request request) {
  std::promise<absl::StatusOr<Result>> done;
  Callbacks callbacks;
  callbacks.on_done = [&done](absl::StatusOr<Result> result) { done.set_value(std::move(result)); };
  auto future = done.get_future();
  if (absl::Status submitted = engine.Submit(std::move(request), std::move(callbacks));
      !submitted.ok()) {
    return submitted;
  }
  return future.get();
}

json ToJson(const CliArgs& args, const Result& result, double load_ms, const ModelInfo& info) {
  json out;
  out["model"] = result.model;
  out["cpu_isa"] = info.cpu_isa;
  if (args.command == "caption" || args.command == "query") {
    out["text"] = result.text;
  } else if (args.command == "detect") {
    out["objects"] = json::array();
    for (const Box& b : result.boxes) {
      out["objects"].push_back(
          {{"x_min", b.x_min}, {"y_min", b.y_min}, {"x_max", b.x_max}, {"y_max", b.y_max}});
    }
  } else {
    out["objects"] = json::array();
    for (const Point& p : result.points) out["objects"].push_back({{"x", p.x}, {"y", p.y}});
  }
  out["token_ids"] = result.token_ids;
  out["finish_reason"] = result.finish_reason == FinishReason::kLength ? "length" : "stop";
  out["usage"] = {{"prompt_tokens", result.usage.prompt_tokens},
                  {"image_tokens", result.usage.image_tokens},
                  {"generated_tokens", result.usage.generated_tokens}};
  const Timings& t = result.timings;
  out["timings"] = {{"load_ms", load_ms},
                    {"queue_ms", t.queue_ms},
                    {"image_decode_ms", t.image_decode_ms},
                    {"vision_encode_ms", t.vision_encode_ms},
                    {"image_prefill_ms", t.image_prefill_ms},
                    {"prefill_ms", t.prefill_ms},
                    {"decode_ms", t.decode_ms},
                    {"time_to_first_token_ms", t.time_to_first_token_ms},
                    {"total_ms", t.total_ms}};
  return out;
}

void PrintPlain(const CliArgs& args, const Result& result) {
  if (args.command == "caption" || args.command == "query") {
    std::cout << result.text << "\n";
    return;
  }
  for (const Box& b : result.boxes) {
    std::cout << b.x_min << " " << b.y_min << " " << b.x_max << " " << b.y_max << "\n";
  }
  for (const Point& p : result.points) std::cout << p.x << " " << p.y << "\n";
}

int Tokenize(const CliArgs& args) {
  absl::StatusOr<std::string> dir = ResolveModelDir(args.model_dir);
  if (!dir.ok()) return Fail(dir.status());
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromFile(*dir + "/tokenizer.json");
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  const std::vector<int32_t> ids = tokenizer->Encode(args.text);
  if (args.json) {
    std::cout << json{{"ids", ids}}.dump() << "\n";
  } else {
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
  }
  return 0;
}

int RunModel(const CliArgs& args) {
  absl::StatusOr<std::string> image = ReadFile(args.image);
  if (!image.ok()) return Fail(image.status());
  EngineOptions options;
  options.model = args.model;
  options.model_dir = args.model_dir;
  options.variants = {args.precision};
  options.device = args.device;
  options.cpu_isa = args.cpu_isa;
  options.threads = args.threads;
  options.max_queue = 0;
  const Clock::time_point start = Clock::now();
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  if (!engine.ok()) return Fail(engine.status());
  const double load_ms = Ms(Clock::now() - start);
  absl::StatusOr<Result> result = RunOnce(**engine, BuildRequest(args, *std::move(image)));
  if (!result.ok()) return Fail(result.status());
  if (args.json) {
    const absl::StatusOr<ModelInfo> info = (*engine)->GetModel("");
    std::cout << ToJson(args, *result, load_ms, info.ok() ? *info : ModelInfo{}).dump() << "\n";
  } else {
    PrintPlain(args, *result);
  }
  return 0;
}

}  // namespace
}  // namespace moondream::cli

int main(int argc, char** argv) {
  using namespace moondream::cli;
  absl::StatusOr<CliArgs> args = ParseArgs(argc, argv);
  if (!args.ok()) {
    std::cerr << "moondream-cli: " << args.status().message() << "\n" << Usage();
    return kUsageError;
  }
  return args->command == "tokenize" ? Tokenize(*args) : RunModel(*args);
}
