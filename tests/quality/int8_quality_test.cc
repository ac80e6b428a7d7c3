// INT8 vs FP32 quality on the moondream-tiny fixtures (issue 4, "Quality"): for every
// checkpoint and image (public-a: images/*.png and real/images/*; public-b: images/*.png)
// both precisions are loaded once per checkpoint and compared with bench/quality's
// statistics; the table goes to stdout (ctest logs) and the thresholds below must hold.
//
// Why the thresholds look the way they do. These are random-weight checkpoints: logits
// come from a 2.5-gain lm_head with an EOS bias (+9.5 a, +8.3 b) calibrated so that EOS
// sits close to the best token on many decisions, and the goldens record decisions with
// top1-top2 margins down to 3e-4 (fixtures README, "Near-ties"). Teacher-forced sequences
// are full of such near-ties, so a correct INT8 path (INT8 weights, per-token INT8
// activations, int8 KV cache) flips some argmaxes; a real model's logits are far more
// peaked, so these tiny checkpoints are the harsher test. The checks therefore rest on
// continuous statistics that do not care about ties (embedding cosine, KL), and demand
// equal decisions only where the FP32 margin leaves room for the INT8 logit error.
// Measured (2026-11-26, this build, full table in docs/quantization-quality.md):
//                                correct INT8          every INT8 scale x1.1 (broken)
//   embedding cosine, min        0.99789 a / 0.99430 b  max 0.9905 a / 0.9787 b
//   worst-row cosine, min        0.9961 a / 0.9467 b    max 0.9846 a / 0.9740 b
//   step-0 KL, max               0.0104 a / 0.0271 b    min 0.104 a / 0.0965 b
//   teacher-forced KL mean, max  0.0112 a / 0.0257 b    min 0.104 a / 0.0945 b
//   step-0 top-1 flips at FP32 margin <= 0.18               flips at margins up to 1.47
//   teacher-forced top-1 rate    93.0% a / 99.0% b      30% a / 55% b
//   detect/point first decision  all equal                  4 differ
//   object 0 x bin |delta|       0 (1 near-tie: 313) ¹      124..423 bins on 9 pairs
//   object 0 x logit error, max  1.28 a / 4.19 b            min 10.3 a / 16.0 b
// Each bound sits ~2.5x above the worst correct value and below the best broken one
// (public-b's worst-row cosine excepted: gray img6 overlaps, so there the bound only
// guards against gross breaks). Object counts and later objects are reported, not
// asserted: after the first near-tie coordinate both runs follow different, equally valid
// greedy paths (count mismatches 20/13, 18/14, 1/20 occur on a correct INT8 path).
// ¹ since the fused INT8 image-prefix attention (fp32 K/V in the prefill); see kMaxFirstXBinDelta.
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
#include "kernels/kernels.h"
#include "tests/model/golden.h"

namespace moondream::testing {
namespace {

using quality::ImageStats;

struct Thresholds {
  double min_embed_cosine;  // flattened [729, D]
  double min_row_cosine;    // worst of the 729 rows
  double max_kl0;           // step-0 KL(P||Q), nats
  double max_kl_mean;       // mean KL over teacher-forced steps, per task
  double min_agreement;     // teacher-forced top-1 rate over the whole checkpoint
  double max_coord_error;   // object 0: max |INT8 - FP32| x coordinate logit
};
// FP32 step-0 margin above which INT8 must pick the same token (flips seen <= 0.18).
constexpr double kDecisionMargin = 0.3;
// Object 0's x bin may move to a neighbour (adjacent bins of the random coordinate
// decoder are near-ties); a broken path lands 100+ bins away. Demanded only where FP32's
// top-1 x logit beats its runner-up by more than two worst-case coordinate errors (the
// two bins can each move by max_coord_error): public-a p3_palette detect has a margin of
// 1.62 against errors of 1.22 and INT8 correctly picks FP32's runner-up, 313 bins away.
constexpr int kMaxFirstXBinDelta = 2;

// public-b has half the widths (enc 32, D 64): fewer terms average out the rounding
// error, so its errors are ~2-3x those of public-a; its bounds scale with them.
Thresholds ThresholdsFor(const std::string& set) {
  if (set == "public-a") return {0.995, 0.99, 0.03, 0.03, 0.85, 3.0};
  return {0.99, 0.93, 0.06, 0.06, 0.9, 10.0};
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
    if (text.margin0 > kDecisionMargin) {
      EXPECT_TRUE(text.top1_0);
    }
  }
  for (const auto& region : s.regions) {
    SCOPED_TRACE(region.task);
    // Object vs EOS at the prompt: like step-0 top-1, demanded where FP32's EOS-vs-best
    // margin leaves room for the INT8 logit error (public-a's p1_astronaut detect/point is
    // a near-tie that the outlier smoothing, issue 12, flips while improving every
    // continuous statistic of that image).
    if (region.decision_margin0 > kDecisionMargin) {
      EXPECT_TRUE(region.first_decision);
    }
    if (region.first_x_bin_delta < 0) continue;  // no object in one of the runs
    EXPECT_LE(region.x_logit_error, t.max_coord_error);
    if (region.x_margin0 > 2 * t.max_coord_error) {
      EXPECT_LE(region.first_x_bin_delta, kMaxFirstXBinDelta);
    }
  }
}

// The forced-ISA copies of this test (CMakeLists.txt: MOONDREAM_CPU_ISA=avx2 / avxvnni) on
// a CPU without that ISA (avxvnni on a Zen 3, neither VEX nor EVEX-256): why to skip, or ""
// where the ISA runs. A name that is no ISA at all is not skipped: the load fails on it.
std::string ForcedIsaMissing() {
  const std::string name = kernels::DefaultIsaName();
  kernels::Isa isa;
  std::string error;
  if (!kernels::ParseIsa(name, &isa)) return "";  // "auto", or no ISA at all
  return kernels::ResolveKernels(name, &error) == nullptr ? "MOONDREAM_CPU_ISA: " + error : "";
}

class Int8Quality : public ::testing::TestWithParam<std::string> {};

TEST_P(Int8Quality, MatchesFp32WithinThresholds) {
  if (const std::string why = ForcedIsaMissing(); !why.empty()) GTEST_SKIP() << why;
  const std::string set = GetParam();
  const Thresholds t = ThresholdsFor(set);
  const Pair& models = Models(FixturesDir() + "/" + set + "/ckpt");
  quality::CompareOptions options;  // 20 tokens (the goldens' budget)
  options.max_objects = 10;        // first objects only: later ones diverge anyway
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
