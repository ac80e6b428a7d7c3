// INT8 on function-preserving outlier checkpoints (issue 12). At test time the generator
// (tools/make-synthetic-checkpoint --outliers) writes tiny public-a-sized checkpoints into
// the build dir: the unstressed one (tensors equal to fixture public-a) and one per stress
// (LayerNorm gain+bias, attention values, keys, queries, x100 each, and all combined; and
// constant offsets x100 in LayerNorm, value and key channels).
//  - FunctionPreserved: FP32 of every stressed checkpoint equals FP32 of the unstressed
//    one up to the fp16 rounding of the rescaled weights and compensating biases.
//  - SmoothedInt8: INT8 (smoothing on, the default) vs FP32 of the same stressed checkpoint
//    holds the fixture thresholds of int8_quality_test (public-a's).
//  - BreakIt: with --int8-smoothing=off the LN, value, key and combined stresses fail those
//    thresholds (the method, not luck, keeps INT8 faithful); queries x100 and key offsets
//    x100 only double or triple the mean KL on this 2-layer decoder, so there smoothing
//    must bring it back to the unstressed checkpoint's level; the unstressed checkpoint
//    passes either way.
//  - Report: the per-layer quantization report shows the spread moved and the shifts.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "bench/quality/quality_compare.h"
#include "engine/model/moondream.h"
#include "tests/model/golden.h"

namespace moondream::testing {
namespace {

using quality::ImageStats;

struct Stress {
  const char* name;
  const char* spec;  // --outliers ("" = unstressed)
  bool breaks;       // INT8 without smoothing fails the thresholds
  // An offset site rewrites biases to K·sigma·|W|·sqrt(channels) (~45 on the tiny LN x100)
  // and stores them in fp16 (relative 2^-11), so its FP32 function moves by more than a
  // rescaling's; the KL grows as K^2 (measured, lnb / vb: 2.5e-5 / 2.9e-5 at x10, 2.3e-3 /
  // 3.0e-3 at x100). A missing or wrong compensation moves it by orders of magnitude more.
  bool offsets = false;
};
const Stress kStresses[] = {
    {"none", "", false},          {"ln100", "ln:100", true},  {"v100", "v:100", true},
    {"k100", "k:100", true},      {"q100", "q:100", false},
    {"all100", "ln:100,v:100,k:100", true},
    {"lnb100", "lnb:100", true, true},  {"vb100", "vb:100", true, true},
    {"kb100", "kb:100", false, true},
};

// public-a's thresholds (int8_quality_test.cc explains and measures them).
struct Thresholds {
  double min_embed_cosine = 0.995, min_row_cosine = 0.99, max_kl0 = 0.03, max_kl_mean = 0.03;
  // Teacher-forced top-1 agreement on "decided" steps only (FP32 top1-top2 margin > 0.3):
  // these random checkpoints are full of near-ties (int8_quality_test.cc), and on 72 steps
  // the raw rate of a correct INT8 path swings 0.72-0.92 with the tie flips; above the
  // margin a correct path agrees everywhere (measured: all decided steps, every stress).
  double min_agreement = 0.97;
};

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string CheckpointDir(const Stress& s) {
  const std::string dir = std::string(MOONDREAM_STRESS_DIR) + "/" + s.name;
  std::ifstream probe(dir + "/model.safetensors");
  if (!probe) {
    std::string cmd = std::string(MOONDREAM_GENERATOR) + " --size tiny --quiet --out " + dir;
    if (*s.spec) cmd += std::string(" --outliers ") + s.spec;
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
  }
  return dir;
}

// Loaded once per (checkpoint, variant); variant: fp32, int8 (smoothing on), int8-off.
const Moondream& Model(const Stress& s, const std::string& variant) {
  static std::map<std::string, std::unique_ptr<Moondream>> models;
  const std::string key = std::string(s.name) + "/" + variant;
  auto it = models.find(key);
  if (it != models.end()) return *it->second;
  MoondreamOptions options;
  options.model_dir = CheckpointDir(s);
  options.precision = variant == "fp32" ? "fp32" : "int8";
  options.int8_smoothing = variant != "int8-off";
  if (variant == "int8") {
    options.quant_report_json = std::string(MOONDREAM_STRESS_DIR) + "/" + s.name + ".report.json";
  }
  auto model = Moondream::Load(options);
  if (!model.ok()) throw std::runtime_error(model.status().ToString());
  return *models.emplace(key, std::move(*model)).first->second;
}

// img0: one global crop + one tile; img1 640x480: several tiles (stitching, pooling).
std::vector<std::pair<std::string, std::string>> Images() {
  const std::string dir = FixturesDir() + "/images/";
  return {{"img0_378x378", dir + "img0_378x378.png"}, {"img1_640x480", dir + "img1_640x480.png"}};
}

struct Summary {
  double min_cosine = 1, min_row_cosine = 1, max_kl0 = 0, max_kl_mean = 0;
  int agree = 0, steps = 0, decided_agree = 0, decided = 0;
  double agreement() const { return decided ? static_cast<double>(decided_agree) / decided : 0; }
  bool Within(const Thresholds& t) const {
    return min_cosine >= t.min_embed_cosine && min_row_cosine >= t.min_row_cosine &&
           max_kl0 <= t.max_kl0 && max_kl_mean <= t.max_kl_mean && agreement() >= t.min_agreement;
  }
};

Summary Compare(const Moondream& reference, const Moondream& candidate, const std::string& title) {
  quality::CompareOptions options;
  options.max_tokens = 12;
  options.max_objects = 2;
  Summary sum;
  std::vector<ImageStats> rows;
  for (const auto& [name, file] : Images()) {
    auto stats = quality::CompareImage(reference, candidate, name, ReadBytes(file), options);
    if (!stats.ok()) throw std::runtime_error(stats.status().ToString());
    sum.min_cosine = std::min(sum.min_cosine, stats->embed_cosine);
    sum.min_row_cosine = std::min(sum.min_row_cosine, stats->embed_min_row_cosine);
    for (const auto& t : stats->text) {
      sum.max_kl0 = std::max(sum.max_kl0, t.kl0);
      sum.max_kl_mean = std::max(sum.max_kl_mean, t.kl_mean);
      sum.agree += t.agree;
      sum.steps += t.steps;
      sum.decided_agree += t.decided_agree;
      sum.decided += t.decided;
    }
    rows.push_back(std::move(*stats));
  }
  std::printf("%s", quality::FormatTable(title, rows).c_str());
  std::printf("%s: cosine %.5f, worst row %.5f, KL0 max %.2e, KL mean max %.2e, agreement %d/%d,"
              " decided %d/%d\n", title.c_str(), sum.min_cosine, sum.min_row_cosine, sum.max_kl0,
              sum.max_kl_mean, sum.agree, sum.steps, sum.decided_agree, sum.decided);
  return sum;
}

const Stress& Named(const std::string& name) {
  for (const Stress& s : kStresses) {
    if (name == s.name) return s;
  }
  throw std::runtime_error("no stress named " + name);
}

class Int8Smoothing : public ::testing::TestWithParam<Stress> {};

TEST_P(Int8Smoothing, FunctionPreserved) {
  const Stress& s = GetParam();
  if (!*s.spec) GTEST_SKIP() << "unstressed";
  // fp16 rounding of the rescaled gains and weights (relative 2^-11 each) moves the FP32
  // outputs by ~1e-4 relative; a broken stress (e.g. a scaled column without its gain)
  // gives cosines far below 0.999. Offsets: see Stress::offsets.
  const Summary sum = Compare(Model(kStresses[0], "fp32"), Model(s, "fp32"),
                              std::string("fp32 none vs fp32 ") + s.name);
  EXPECT_GE(sum.min_cosine, s.offsets ? 0.999 : 0.9999);
  EXPECT_GE(sum.min_row_cosine, s.offsets ? 0.998 : 0.999);
  EXPECT_LE(sum.max_kl0, s.offsets ? 1e-2 : 1e-3);
  EXPECT_LE(sum.max_kl_mean, s.offsets ? 1e-2 : 1e-3);
}

TEST_P(Int8Smoothing, SmoothedInt8WithinThresholds) {
  const Stress& s = GetParam();
  const Summary sum = Compare(Model(s, "fp32"), Model(s, "int8"), std::string("int8 ") + s.name);
  const Thresholds t;
  EXPECT_GE(sum.min_cosine, t.min_embed_cosine);
  EXPECT_GE(sum.min_row_cosine, t.min_row_cosine);
  EXPECT_LE(sum.max_kl0, t.max_kl0);
  EXPECT_LE(sum.max_kl_mean, t.max_kl_mean);
  EXPECT_GE(sum.agreement(), t.min_agreement);
}

TEST_P(Int8Smoothing, BreakIt) {
  const Stress& s = GetParam();
  const Summary sum =
      Compare(Model(s, "fp32"), Model(s, "int8-off"), std::string("int8 smoothing off ") + s.name);
  if (s.breaks) {
    EXPECT_FALSE(sum.Within(Thresholds{})) << "the stress no longer breaks unsmoothed INT8";
  } else if (!*s.spec) {
    EXPECT_TRUE(sum.Within(Thresholds{}));  // unstressed: fine either way
  } else {
    // Queries x100 (keys / 100) crush the scaled key channels in the int8 KV cache rows,
    // and a key channel's constant x100 crushes the others of its row, but on this 2-layer
    // decoder that stays inside the loose fixture bounds (KL mean 9.9e-3 / 1.5e-2 off,
    // 5.0e-3 / 4.7e-3 on, 4.7e-3 unstressed); demand the measurable part of it: without
    // smoothing the mean KL is 1.5x or more what it is with it, and with it within 20 % of
    // the unstressed checkpoint's.
    const Summary on = Compare(Model(s, "fp32"), Model(s, "int8"), std::string("int8 ") + s.name);
    const Stress& none = kStresses[0];
    const Summary base = Compare(Model(none, "fp32"), Model(none, "int8"), "int8 none");
    EXPECT_GT(sum.max_kl_mean, 1.5 * on.max_kl_mean);
    EXPECT_LE(on.max_kl_mean, 1.2 * base.max_kl_mean);
  }
}

TEST(Int8SmoothingReport, ShowsTheMovedRange) {
  const Stress& s = kStresses[5];  // all100
  Model(s, "int8");
  const nlohmann::json j =
      ReadJson(std::string(MOONDREAM_STRESS_DIR) + "/" + s.name + ".report.json");
  std::map<std::string, nlohmann::json> layers;
  for (const auto& l : j["layers"]) layers[l["name"].get<std::string>()] = l;
  for (const char* name :
       {"vision.blocks.0.attn.qkv", "vision.blocks.0.mlp.fc1", "vision.proj_mlp.fc1",
        "text.blocks.1.attn.qkv", "text.blocks.1.mlp.fc1", "text.lm_head",
        "text.blocks.1.attn.proj", "vision.blocks.3.attn.proj"}) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(layers.count(name));
    const nlohmann::json& sm = layers[name]["smoothing"];
    ASSERT_TRUE(sm.is_object());
    std::printf("%-28s %-28s spread %.1f -> %.2f, scales %.3g..%.3g\n", name,
                sm["source"].get<std::string>().c_str(), sm["input_spread_before"].get<double>(),
                sm["input_spread_after"].get<double>(), sm["scale_min"].get<double>(),
                sm["scale_max"].get<double>());
    EXPECT_GT(sm["input_spread_before"].get<double>(), 30.0);  // the x100 channels show
    EXPECT_LT(sm["input_spread_after"].get<double>(), 5.0);    // and are gone
  }
  const nlohmann::json& qkv = layers["text.blocks.1.attn.qkv"]["smoothing"];
  std::printf("text.blocks.1 KV cache rows: key spread %.1f -> %.2f, value spread %.1f -> %.2f\n",
              qkv["key_spread_before"].get<double>(), qkv["key_spread_after"].get<double>(),
              qkv["value_spread_before"].get<double>(), qkv["value_spread_after"].get<double>());
  EXPECT_GT(qkv["key_spread_before"].get<double>(), 30.0);
  EXPECT_LT(qkv["key_spread_after"].get<double>(), 5.0);
  EXPECT_GT(qkv["value_spread_before"].get<double>(), 30.0);
  EXPECT_LT(qkv["value_spread_after"].get<double>(), 5.0);
  // The same, summed up in ModelInfo (GetModel, the moondream_model_quantization_smoothing
  // metric): the worst spreads over all layers.
  const QuantizationSummary& q = Model(s, "int8").info().quantization;
  EXPECT_GT(q.smoothed_layers, 0);
  EXPECT_GT(q.input_spread_before, 30.0);
  EXPECT_LT(q.input_spread_after, 5.0);
  EXPECT_GT(q.kv_spread_before, 30.0);
  EXPECT_LT(q.kv_spread_after, 5.0);
  EXPECT_EQ(Model(s, "int8-off").info().quantization.smoothed_layers, 0);
}

// Offsets: each site's 6 channels (per LayerNorm, per block's values and keys) are shifted
// into the next bias, and nothing else is.
TEST(Int8SmoothingReport, ShowsTheShiftedOffsets) {
  struct Expect {
    const char* stress;
    const char* layer;
    const char* count;   // the report's field that counts the shifted channels
    const char* spread;  // ... and the spread they were in ("input", "key", "value")
  };
  const Expect expects[] = {
      {"lnb100", "text.blocks.1.attn.qkv", "shifted_channels", "input"},
      {"lnb100", "text.blocks.1.mlp.fc1", "shifted_channels", "input"},
      {"lnb100", "vision.proj_mlp.fc1", "shifted_channels", "input"},
      {"lnb100", "text.lm_head", "shifted_channels", "input"},
      {"vb100", "vision.blocks.2.attn.proj", "shifted_channels", "input"},
      {"vb100", "text.blocks.0.attn.qkv", "shifted_values", "value"},
      {"kb100", "text.blocks.1.attn.qkv", "shifted_keys", "key"},
  };
  for (const Expect& e : expects) {
    SCOPED_TRACE(std::string(e.stress) + " " + e.layer);
    const Stress* s = &Named(e.stress);
    Model(*s, "int8");
    const nlohmann::json j =
        ReadJson(std::string(MOONDREAM_STRESS_DIR) + "/" + s->name + ".report.json");
    nlohmann::json sm;
    for (const auto& l : j["layers"]) {
      if (l["name"] == e.layer) sm = l["smoothing"];
    }
    ASSERT_TRUE(sm.is_object());
    const double before = sm[std::string(e.spread) + "_spread_before"].get<double>();
    const double after = sm[std::string(e.spread) + "_spread_after"].get<double>();
    std::printf("%-7s %-26s %s %d, %s spread %.1f -> %.2f\n", e.stress, e.layer, e.count,
                sm[e.count].get<int>(), e.spread, before, after);
    EXPECT_EQ(sm[e.count].get<int>(), 6);
    EXPECT_GT(before, 30.0);
    EXPECT_LT(after, 5.0);
    EXPECT_GT(Model(*s, "int8").info().quantization.shifted_channels, 0);
  }
  EXPECT_EQ(Model(kStresses[0], "int8").info().quantization.shifted_channels, 0);
  // all100 holds rescalings only.
  EXPECT_EQ(Model(kStresses[5], "int8").info().quantization.shifted_channels, 0);
}

// Query, key or value rows x100 fold no LayerNorm channel, as on the unstressed checkpoint
// (nothing folded there): INT8 weights are quantized per row, so the column statistic the
// LayerNorm balance reads (ColRelMax, smoothing.cc) ignores row scales. Raw column maxima
// let the x100 rows dominate every column of attn.qkv and folded LayerNorm channels for
// nothing (tiny q100: 2 vision blocks; full-size q:100: KL at step 0 5.2e-3 -> 8.3e-3).
TEST(Int8SmoothingReport, RowRescalingsLeaveTheLayerNormsAlone) {
  for (const char* stress : {"q100", "k100", "v100"}) {
    Model(Named(stress), "int8");
    const nlohmann::json j =
        ReadJson(std::string(MOONDREAM_STRESS_DIR) + "/" + stress + ".report.json");
    int layer_norm_sites = 0;
    for (const auto& l : j["layers"]) {
      const nlohmann::json& sm = l.value("smoothing", nlohmann::json());
      if (!sm.is_object() || absl::EndsWith(sm["source"].get<std::string>(), ".attn.v")) continue;
      SCOPED_TRACE(std::string(stress) + " " + l["name"].get<std::string>());
      ++layer_norm_sites;
      EXPECT_FALSE(sm["applied"].get<bool>());
      EXPECT_EQ(sm["scale_max"].get<double>(), 1.0);
    }
    EXPECT_GT(layer_norm_sites, 0) << stress;
  }
}

INSTANTIATE_TEST_SUITE_P(Tiny, Int8Smoothing, ::testing::ValuesIn(kStresses),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace moondream::testing
