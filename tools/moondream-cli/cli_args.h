// Command line of moondream-cli (see Usage()).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/api.h"

namespace moondream::cli {

struct CliArgs {
  std::string command;               // caption | query | detect | point | tokenize
  std::string model = "moondream2";  // moondream2 | test
  std::string model_dir;
  std::string precision = "fp32";
  std::string cpu_isa;  // --cpu-isa; empty = MOONDREAM_CPU_ISA or auto
  std::string device = "cpu";
  int threads = 0;
  std::string image;  // file path
  CaptionLength length = CaptionLength::kNormal;
  std::string question;  // query
  std::string object;    // detect, point
  std::string text;      // tokenize
  int max_tokens = 0;
  int max_objects = 0;
  bool json = false;
};

const char* Usage();

// INVALID_ARGUMENT naming the problem on a usage error.
absl::StatusOr<CliArgs> ParseArgs(int argc, char** argv);

}  // namespace moondream::cli
