// INT8 vs FP32 quality on the moondream-tiny fixtures (issue 4, "Quality"): for every
// checkpoint and image (public-a: images/*.png and real/images/*; public-b: images/*.png)
// both precisions are loaded once per checkpoint and compared with bench/quality's
// statistics; the table goes to stdout (ctest logs) and the thresholds below must hold.
//
// Why the thresholds look the way they do. These are random-weight checkpoints: logits
// come from a 2.5-gain lm_head with an EOS bias (+9.5 a, +8.3 b) calibrated so that EOS
// sits within 0.1-1 of the best token on many decisions, and the goldens record decisions
// with top1-top2 margins down to 3e-4 (README "Near-ties"). A real model's logits are far
// more peaked, so exact greedy agreement is the wrong bar here: a correct INT8 path still
// flips a near-tie now and then. The checks therefore use (a) continuous statistics that do
// not care about ties (embedding cosine, KL), with bounds a few times above the worst value
// measured on a correct INT8 path and far below what a broken one gives, and (b) decision
// agreement only where FP32's margin leaves room for the INT8 error, plus aggregate rates.
// Measured on a correct build (numbers in docs/quantization-quality.md):
//   embedding cosine >= 0.9993 (a), >= 0.9974 (b); worst row >= 0.996 (a), >= 0.985 (b);
//   step-0 KL <= 4.1e-4 (a), <= 2.7e-3 (b); teacher-forced KL mean <= 1e-3 (a), 3.3e-3 (b);
//   teacher-forced top-1 agreement >= 98% per checkpoint; first detect/point decision and
//   first x bin equal everywhere except near-ties.
// A break-it check (every INT8 scale x1.1, see the docs) drives cosine to ~0.99, step-0
// KL to ~1e-2..1e-1 and flips first objects: every bound below fails.
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "bench/quality/quality_compare.h"
#include "engine/model/moondream.h"
#include "tests/model/golden.h"

namespace moondream::testing {
namespace {

using quality::ImageStats;

struct Thresholds {
  double min_embed_cosine;      // flattened [729, D]
  double min_row_cosine;        // worst of the 729 rows
  double max_kl0;               // step-0 KL(P||Q), nats
  double max_kl_mean;           // mean KL over teacher-forced steps, per task
  double min_agreement;         // teacher-forced top-1, over the whole checkpoint
  double decision_margin;       // FP32 step-0 margin above which top-1 must agree
};

// public-b has half the widths (enc 32, D 64): fewer terms average out the rounding
// error, so its measured errors are ~3-6x those of public-a; bounds scale with them.
Thresholds ThresholdsFor(const std::string& set) {
  if (set == "public-a") return {0.998, 0.99, 2e-3, 4e-3, 0.95, 0.05};
  return {0.994, 0.97, 1e-2, 1.5e-2, 0.95, 0.1};
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The checkpoint's images: name -> file path (public-a also gets the real/ images).
std::vector<std::pair<std::string, std::string>> Images(const std::string& set) {
  std::vector<std::pair<std::string, std::string>> images;
  for (const GoldenSet& g : AllGoldenSets()) {
    if (g.name != set && !(set == "public-a" && g.name == "real")) continue;
    const std::string dir = FixturesDir() + (g.name == "real" ? "/real/images/" : "/images/");
    const nlohmann::json golden = ReadJson(g.golden_dir + "/golden.json");
    for (const auto& item : golden["images"].items()) {
      images.emplace_back(item.key(), dir + item.value()["file"].get<std::string>());
    }
  }
  return images;
}

// FP32 and INT8 of one checkpoint, loaded once per process.
struct Pair {
  std::unique_ptr<Moondream> fp32, int8;
};
const Pair& Models(const std::string& ckpt_dir) {
  static std::map<std::string, Pair> pairs;
  auto it = pairs.find(ckpt_dir);
  if (it != pairs.end()) return it->second;
  Pair pair;
  for (const char* precision : {"fp32", "int8"}) {
    MoondreamOptions options;
    options.model_dir = ckpt_dir;
    options.precision = precision;
    auto model = Moondream::Load(options);
    if (!model.ok()) throw std::runtime_error(model.status().ToString());
    (std::string(precision) == "fp32" ? pair.fp32 : pair.int8) = std::move(*model);
  }
  return pairs.emplace(ckpt_dir, std::move(pair)).first->second;
}

void CheckImage(const ImageStats& s, const Thresholds& t) {
  SCOPED_TRACE(s.image);
  EXPECT_GE(s.embed_cosine, t.min_embed_cosine);
  EXPECT_GE(s.embed_min_row_cosine, t.min_row_cosine);
  for (const auto& text : s.text) {
    SCOPED_TRACE(text.task);
    EXPECT_LE(text.kl0, t.max_kl0);
    EXPECT_LE(text.kl_mean, t.max_kl_mean);
    if (text.margin0 > t.decision_margin) {
      EXPECT_TRUE(text.top1_0);
    }
  }
  for (const auto& region : s.regions) {
    SCOPED_TRACE(region.task);
    // Object-vs-EOS at the prompt: the EOS bias puts it within ~0.1-1 of the best token on
    // these checkpoints, well above the step-0 logit error (<= ~0.03 measured).
    EXPECT_TRUE(region.first_decision);
    // Object 0's x bin depends on the prompt only. Neighbouring bins of the random
    // coord decoder are near-ties; a broken path lands anywhere among the bins.
    if (region.first_x_bin_delta >= 0) {
      EXPECT_LE(region.first_x_bin_delta, 2);
    }
  }
}

class Int8Quality : public ::testing::TestWithParam<std::string> {};

TEST_P(Int8Quality, MatchesFp32WithinThresholds) {
  const std::string set = GetParam();
  const Thresholds t = ThresholdsFor(set);
  const Pair& models = Models(FixturesDir() + "/" + set + "/ckpt");
  quality::CompareOptions options;  // 20 tokens (the goldens' budget), 20 objects
  std::vector<ImageStats> rows;
  int agree = 0, steps = 0;
  for (const auto& [name, file] : Images(set)) {
    const std::string bytes = ReadBytes(file);
    ASSERT_FALSE(bytes.empty()) << file;
    auto stats = quality::CompareImage(*models.fp32, *models.int8, name, bytes, options);
    ASSERT_TRUE(stats.ok()) << name << ": " << stats.status();
    for (const auto& text : stats->text) agree += text.agree, steps += text.steps;
    CheckImage(*stats, t);
    rows.push_back(std::move(*stats));
  }
  std::printf("%s", quality::FormatTable(set, rows).c_str());
  std::printf("teacher-forced top-1 agreement %d/%d\n", agree, steps);
  ASSERT_GT(steps, 0);
  EXPECT_GE(static_cast<double>(agree) / steps, t.min_agreement);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Int8Quality, ::testing::Values("public-a", "public-b"),
                         [](const auto& info) {
                           return info.param == "public-a" ? "public_a" : "public_b";
                         });

}  // namespace
}  // namespace moondream::testing
