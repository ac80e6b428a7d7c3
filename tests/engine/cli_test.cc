// moondream-cli run as a process: its JSON interface and exit codes on the test model,
// tokenize against the spec §7 vectors, and Moondream2 token ids against the public-a
// goldens.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

using nlohmann::json;

const std::string kFixtures = MOONDREAM_FIXTURES_DIR;
const std::string kCkpt = kFixtures + "/public-a/ckpt";

struct CliRun {
  int exit_code = -1;
  std::string out, err;
};

std::string Quote(const std::string& arg) {
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

CliRun RunCli(const std::vector<std::string>& args) {
  static std::atomic<int> counter{0};
  const std::string err_path = ::testing::TempDir() + "moondream_cli_stderr_" +
                               std::to_string(getpid()) + "_" + std::to_string(counter++);
  // MOONDREAM_TEST_EMULATOR: qemu-aarch64 and its arguments in a cross build, else empty.
  std::string command = MOONDREAM_TEST_EMULATOR " " + Quote(MOONDREAM_CLI);
  for (const std::string& arg : args) command += " " + Quote(arg);
  command += " 2>" + Quote(err_path);
  CliRun run;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return run;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) run.out.append(buffer, n);
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  run.err = ReadAll(err_path);
  std::remove(err_path.c_str());
  return run;
}

// Runs the CLI once per argument list, all at once (start-up dominates each run).
std::vector<CliRun> RunCliAll(const std::vector<std::vector<std::string>>& arg_lists) {
  std::vector<std::future<CliRun>> runs;
  for (const auto& args : arg_lists) runs.push_back(std::async(std::launch::async, RunCli, args));
  std::vector<CliRun> results;
  for (auto& run : runs) results.push_back(run.get());
  return results;
}

json RunJson(const std::vector<std::string>& args) {
  CliRun run = RunCli(args);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  json parsed = json::parse(run.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(parsed.is_discarded()) << run.out;
  return parsed;
}

std::string Image(const std::string& name) { return kFixtures + "/images/" + name; }

TEST(CliTest, CaptionOnTheTestModelPrintsJson) {
  json out = RunJson({"--model", "test", "caption", "--image", Image("img1_640x480.png"),
                      "--length", "short", "--json"});
  ASSERT_TRUE(out.contains("text")) << out;
  EXPECT_EQ(out["text"].get<std::string>().rfind("a test image of 640×480 pixels", 0), 0u);
  EXPECT_FALSE(out["token_ids"].empty());
  for (const char* key :
       {"load_ms", "image_decode_ms", "vision_encode_ms", "image_prefill_ms", "prefill_ms", "decode_ms",
        "total_ms"}) {
    ASSERT_TRUE(out["timings"].contains(key)) << key;
    EXPECT_GE(out["timings"][key].get<double>(), 0) << key;
  }
  EXPECT_GT(out["timings"]["image_decode_ms"].get<double>(), 0);
}

TEST(CliTest, MaxTokensAndQuery) {
  json out = RunJson({"--model", "test", "query", "--image", Image("img4_64x48.png"), "--question",
                      "What is this?", "--max-tokens", "2", "--json"});
  EXPECT_EQ(out["token_ids"].size(), 2u) << out;
  EXPECT_EQ(out["finish_reason"], "length");
}

TEST(CliTest, DetectAndPointPrintObjects) {
  json boxes = RunJson({"--model=test", "detect", "--image", Image("img1_640x480.png"), "--object",
                        "cat", "--json"});
  ASSERT_FALSE(boxes["objects"].empty()) << boxes;
  for (const json& box : boxes["objects"]) {
    EXPECT_LT(box["x_min"].get<double>(), box["x_max"].get<double>());
    EXPECT_LT(box["y_min"].get<double>(), box["y_max"].get<double>());
  }
  json points = RunJson(
      {"--model=test", "point", "--image", Image("img1_640x480.png"), "--object", "cat", "--json"});
  ASSERT_FALSE(points["objects"].empty()) << points;
  EXPECT_TRUE(points["objects"][0].contains("x"));
  EXPECT_TRUE(points["objects"][0].contains("y"));
}

TEST(CliTest, UsageErrorsExitWithTwo) {
  const std::string img = Image("img4_64x48.png");
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"--model", "test", "caption"},                             // no --image
      {"--model", "test", "query", "--image", img},               // no --question
      {"--model", "test", "detect", "--image", img},              // no --object
      {"--model", "test", "caption", "--image", img, "--bogus"},  // unknown flag
      {"--model", "test", "caption", "--image", img, "--length", "long"},
      {"--model", "test", "caption", "--image", img, "--max-tokens", "many"},
      {"--model", "test", "summarize", "--image", img},
      {"tokenize"},  // no --text
  };
  const std::vector<CliRun> runs = RunCliAll(cases);
  for (size_t i = 0; i < cases.size(); ++i) {
    const CliRun& run = runs[i];
    EXPECT_EQ(run.exit_code, 2) << ::testing::PrintToString(cases[i]) << run.err;
    EXPECT_NE(run.err.find("usage:"), std::string::npos) << run.err;
    EXPECT_TRUE(run.out.empty());
  }
}

TEST(CliTest, RuntimeErrorsExitWithOne) {
  CliRun missing = RunCli({"--model", "test", "caption", "--image", "/nonexistent.png", "--json"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("/nonexistent.png"), std::string::npos) << missing.err;
  // Not an image: the README of the fixtures.
  CliRun bad = RunCli({"--model", "test", "caption", "--image", kFixtures + "/README.md"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("INVALID_ARGUMENT"), std::string::npos) << bad.err;
  CliRun no_dir = RunCli({"--model-dir", "/nonexistent", "tokenize", "--text", "hi"});
  EXPECT_EQ(no_dir.exit_code, 1);
  EXPECT_NE(no_dir.err.find("/nonexistent"), std::string::npos) << no_dir.err;
}

// Spec §7 test vectors (GPT-2 BPE, verified against encoder.json + vocab.bpe).
TEST(CliTest, TokenizeMatchesSpecVectors) {
  const std::vector<std::pair<std::string, std::vector<int>>> vectors = {
      {"\n\n", {628}},
      {" gaze\n\n", {17841, 628}},
      {"face", {2550}},
      {" face", {1986}},
      {"person", {6259}},
      {"What is in this image?", {2061, 318, 287, 428, 2939, 30}},
      {" What is in this image?", {1867, 318, 287, 428, 2939, 30}},
      {"How many people are in the image?", {2437, 867, 661, 389, 287, 262, 2939, 30}},
  };
  std::vector<std::vector<std::string>> arg_lists;
  for (const auto& vector : vectors) {
    arg_lists.push_back({"--model-dir", kCkpt, "tokenize", "--text", vector.first, "--json"});
  }
  const std::vector<CliRun> runs = RunCliAll(arg_lists);
  for (size_t i = 0; i < vectors.size(); ++i) {
    ASSERT_EQ(runs[i].exit_code, 0) << runs[i].err;
    json out = json::parse(runs[i].out);
    EXPECT_EQ(out["ids"].get<std::vector<int>>(), vectors[i].second)
        << ::testing::PrintToString(vectors[i].first);
  }
}

TEST(CliTest, CaptionTokenIdsMatchGolden) {
  std::ifstream golden_file(kFixtures + "/public-a/golden/golden.json");
  const json golden = json::parse(golden_file);
  // img2 (1200x300, resized to a global crop and one tile): its crops are upstream's on every
  // platform, libvips's C path on aarch64 included (tests/model/golden.h).
  const json& expected = golden["images"]["img2_1200x300"]["generate"]["caption_short"];
  const int max_tokens = golden["sampling"]["max_tokens"].get<int>();
  json out = RunJson({"--model-dir", kCkpt, "--precision", "fp32", "--threads", "1", "caption",
                      "--image", Image("img2_1200x300.png"), "--length", "short", "--max-tokens",
                      std::to_string(max_tokens), "--json"});
  EXPECT_EQ(out["token_ids"], expected["token_ids"]) << out;
  EXPECT_GT(out["timings"]["vision_encode_ms"].get<double>(), 0);
  EXPECT_GT(out["timings"]["image_prefill_ms"].get<double>(), 0);
  EXPECT_GT(out["timings"]["load_ms"].get<double>(), 0);
}
}  // namespace
