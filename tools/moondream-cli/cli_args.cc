#include "tools/moondream-cli/cli_args.h"

#include <functional>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace moondream::cli {
namespace {

using Setter = std::function<absl::Status(CliArgs&, const std::string&)>;

Setter String(std::string CliArgs::*field) {
  return [field](CliArgs& args, const std::string& value) {
    args.*field = value;
    return absl::OkStatus();
  };
}

Setter Int(int CliArgs::*field, const char* flag) {
  return [field, flag](CliArgs& args, const std::string& value) {
    if (!absl::SimpleAtoi(value, &(args.*field)) || args.*field < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": expected a non-negative integer, got \"", value, "\""));
    }
    return absl::OkStatus();
  };
}

absl::Status SetLength(CliArgs& args, const std::string& value) {
  if (value == "short") {
    args.length = CaptionLength::kShort;
  } else if (value == "normal") {
    args.length = CaptionLength::kNormal;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--length: expected short or normal, got \"", value, "\""));
  }
  return absl::OkStatus();
}

const std::map<std::string, Setter>& ValueFlags() {
  static const auto* flags = new std::map<std::string, Setter>{
      {"model", String(&CliArgs::model)},
      {"model-dir", String(&CliArgs::model_dir)},
      {"precision", String(&CliArgs::precision)},
      {"device", String(&CliArgs::device)},
      {"cpu-isa", String(&CliArgs::cpu_isa)},
      {"threads", Int(&CliArgs::threads, "threads")},
      {"image", String(&CliArgs::image)},
      {"length", SetLength},
      {"question", String(&CliArgs::question)},
      {"object", String(&CliArgs::object)},
      {"text", String(&CliArgs::text)},
      {"max-tokens", Int(&CliArgs::max_tokens, "max-tokens")},
      {"max-objects", Int(&CliArgs::max_objects, "max-objects")},
  };
  return *flags;
}

// Flags each command needs.
absl::Status CheckRequired(const CliArgs& args) {
  auto missing = [](const char* flag) {
    return absl::InvalidArgumentError(absl::StrCat("missing ", flag));
  };
  if (args.command == "tokenize") return args.text.empty() ? missing("--text") : absl::OkStatus();
  if (args.command != "caption" && args.command != "query" && args.command != "detect" &&
      args.command != "point") {
    return absl::InvalidArgumentError(absl::StrCat("unknown command \"", args.command, "\""));
  }
  if (args.image.empty()) return missing("--image");
  if (args.command == "query" && args.question.empty()) return missing("--question");
  if ((args.command == "detect" || args.command == "point") && args.object.empty()) {
    return missing("--object");
  }
  return absl::OkStatus();
}

}  // namespace

const char* Usage() {
  return "usage: moondream-cli [--model moondream2|test] [--model-dir DIR] [--precision "
         "fp32|bf16|fp16|int8]\n"
         "                    [--device cpu|cuda] [--cpu-isa auto|avx512vnni|avxvnni|avx2|"
         "neon-dot|neon|scalar]\n"
         "                    [--threads N] COMMAND [options] [--json]\n"
         "  caption --image FILE [--length short|normal] [--max-tokens N]\n"
         "  query   --image FILE --question Q [--max-tokens N]\n"
         "  detect  --image FILE --object O [--max-objects N]\n"
         "  point   --image FILE --object O [--max-objects N]\n"
         "  tokenize --text T   (reads DIR/tokenizer.json)\n"
         "--json prints JSON: text or objects, token_ids, usage, timings (ms), cpu_isa.\n";
}

absl::StatusOr<CliArgs> ParseArgs(int argc, char** argv) {
  CliArgs args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      if (!args.command.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\""));
      }
      args.command = arg;
      continue;
    }
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) value = name.substr(eq + 1), name = name.substr(0, eq);
    if (name == "json" && !inline_value) {
      args.json = true;
      continue;
    }
    auto flag = ValueFlags().find(name);
    if (flag == ValueFlags().end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (!inline_value) {
      if (i + 1 >= argc)
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    if (absl::Status set = flag->second(args, value); !set.ok()) return set;
  }
  if (args.command.empty()) return absl::InvalidArgumentError("missing command");
  if (absl::Status required = CheckRequired(args); !required.ok()) return required;
  return args;
}

}  // namespace moondream::cli
