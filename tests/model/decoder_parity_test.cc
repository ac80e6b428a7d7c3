// Decoder parity against the fixture goldens (fp32), fed the GOLDEN image_embeds so it is
// independent of the vision tower: image prefill, every task's prompt hidden and step-0
// logits, greedy token ids and detect/point objects (+ first-object region logits).
//
// Tolerances: the goldens are the upstream reference in fp32 activations (fp16 weights).
// The README measures that pipeline against float64 at max abs <= 2e-5 (a) / 6e-5 (b) on
// the same tensors, so any other correct fp32 evaluation order (BLAS blocking, fused ops)
// sits at that level too. Hidden states: atol 1e-4 + rtol 1e-4 (the README's suggestion;
// hidden absmax ~15 puts the relative part at ~1.5e-3 at most). Logits and coordinate
// logits: atol 2e-4 + rtol 1e-4 (one more LayerNorm + matmul). Decisions are exact: the
// smallest taken margin in the goldens is 3.3e-4, above these error bounds.
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/model/tasks.h"
#include "engine/model/torch_compat.h"
#include "tests/model/golden.h"

namespace moondream::testing {
namespace {

constexpr double kHiddenAtol = 1e-4, kLogitAtol = 2e-4, kRtol = 1e-4;

using Case = GoldenCase;

// One loaded fp32 language model per checkpoint, shared by the cases.
const Language& Fp32Language(const std::string& ckpt_dir) {
  static std::map<std::string, LoadedLanguage> loaded;
  auto it = loaded.find(ckpt_dir);
  if (it == loaded.end()) {
    auto lm = LoadLanguage(ckpt_dir, Precision::kFP32);
    if (!lm.ok()) throw std::runtime_error(lm.status().ToString());
    it = loaded.emplace(ckpt_dir, std::move(*lm)).first;
  }
  return *it->second.lm;
}

void ExpectClose(const at::Tensor& actual, const at::Tensor& golden, double atol,
                 const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what << " not produced";
  ASSERT_EQ(actual.sizes(), golden.sizes()) << what;
  const at::Tensor a = actual.to(at::kFloat), g = golden.to(at::kFloat);
  const at::Tensor excess = (a - g).abs() - (atol + kRtol * g.abs());
  EXPECT_LE(excess.max().item<double>(), 0.0)
      << what << ": max abs error " << MaxAbsDiff(a, g) << " over atol " << atol;
  ::testing::Test::RecordProperty("max_abs_err_" + what, std::to_string(MaxAbsDiff(a, g)));
  std::printf("[max-abs-err] %-40s %.3g\n", what.c_str(), MaxAbsDiff(a, g));
}

class DecoderParity : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const Case& c = GetParam();
    golden_ = ReadJson(c.set.golden_dir + "/golden.json")["images"][c.image];
    tensors_ = ReadGoldenTensors(c.set.golden_dir + "/" + c.image + ".safetensors");
    lm_ = &Fp32Language(c.set.ckpt_dir);
    InferenceModeGuard guard;
    auto prefix = PrefillImage(*lm_, tensors_.at("image_embeds"), &prefill_hidden_);
    ASSERT_TRUE(prefix.ok()) << prefix.status();
    prefix_ = std::move(*prefix);
  }

  bool Has(const std::string& name) const { return tensors_.count(name) > 0; }

  // Runs a task like the golden generator: greedy, at most 20 tokens / 50 objects.
  Result Run(Task task, CaptionLength length, const std::string& text, GenerationTaps* taps) {
    Request request;
    request.task = task;
    request.caption_length = length;
    request.text = text;
    request.settings.max_tokens = 20;
    request.max_objects = 50;
    RunContext ctx;
    InferenceModeGuard guard;
    auto result = RunTask(*lm_, request, prefix_, ctx, taps);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : Result{};
  }

  void CheckStep0(const std::string& task, const GenerationTaps& taps) {
    ExpectClose(taps.prompt_hidden_last, tensors_.at(task + ".prompt_hidden_last"), kHiddenAtol,
                task + ".prompt_hidden_last");
    if (Has(task + ".logits0")) {
      ExpectClose(taps.logits0, tensors_.at(task + ".logits0"), kLogitAtol, task + ".logits0");
    } else if (Has(task + ".logits0_topk_ids")) {
      const at::Tensor ids = tensors_.at(task + ".logits0_topk_ids");
      ExpectClose(taps.logits0.index_select(0, ids), tensors_.at(task + ".logits0_topk_vals"),
                  kLogitAtol, task + ".logits0_topk");
      // Nothing outside the golden top-64 may exceed its 64th value.
      const double floor = tensors_.at(task + ".logits0_topk_vals").min().item<double>();
      at::Tensor rest = taps.logits0.clone();
      rest.index_fill_(0, ids, -1e30);
      EXPECT_LE(rest.max().item<double>(), floor + kLogitAtol) << task;
    }
  }

  void CheckFirstObject(const std::string& task, const GenerationTaps& taps) {
    const struct {
      const char* golden;
      const at::Tensor& actual;
      double atol;
    } taps_to_check[] = {{".coord_logits_obj0_x", taps.coord_logits_x, kLogitAtol},
                         {".coord_logits_obj0_y", taps.coord_logits_y, kLogitAtol},
                         {".size_logits_obj0", taps.size_logits, kLogitAtol},
                         {".encode_coordinate_out_obj0_x", taps.encode_coordinate_x, kHiddenAtol},
                         {".encode_size_out_obj0", taps.encode_size, kHiddenAtol}};
    for (const auto& tap : taps_to_check) {
      if (Has(task + tap.golden)) {
        ExpectClose(tap.actual, tensors_.at(task + tap.golden), tap.atol, task + tap.golden);
      }
    }
  }

  const Language* lm_ = nullptr;
  nlohmann::json golden_;
  std::map<std::string, at::Tensor> tensors_;
  KvCache prefix_;
  at::Tensor prefill_hidden_;
};

TEST_P(DecoderParity, ImagePrefill) {
  const int64_t prefix = lm_->config.text.prefix_attn;
  EXPECT_EQ(prefix_.length(), golden_["encode_image_pos"].get<int64_t>());
  ExpectClose(prefill_hidden_[prefix - 1], tensors_.at("image_prefill.hidden_last"),
              kHiddenAtol, "image_prefill.hidden_last");
  if (Has("image_prefill.hidden")) {
    ExpectClose(prefill_hidden_, tensors_.at("image_prefill.hidden"), kHiddenAtol,
                "image_prefill.hidden");
  }
  if (Has("image_prefill.kv_cache")) {  // golden [L, 2, H, 730, hd]; ours [L, 2, 1, H, T, hd]
    // The reference writes rotated key pairs interleaved (a'0, b'0, a'1, b'1, ...); we keep
    // the half-split layout (a'0..a'15, b'0..b'15). Same dot products (spec §5.3): permute
    // the golden keys' rotated dims into our layout; values are untouched.
    const int64_t half = lm_->config.text.rot_dim() / 2, hd = lm_->config.text.head_dim();
    std::vector<int64_t> order;
    for (int64_t j = 0; j < half; ++j) order.push_back(2 * j);
    for (int64_t j = 0; j < half; ++j) order.push_back(2 * j + 1);
    for (int64_t j = 2 * half; j < hd; ++j) order.push_back(j);
    at::Tensor golden = tensors_.at("image_prefill.kv_cache").clone();  // [L, 2, H, T, hd]
    golden.select(1, 0).copy_(golden.select(1, 0).index_select(-1, at::tensor(order)));
    ExpectClose(prefix_.data().squeeze(2), golden, kHiddenAtol, "image_prefill.kv_cache");
  }
}

TEST_P(DecoderParity, TextTasks) {
  const std::string question = ReadJson(GetParam().set.golden_dir +
                                        "/golden.json")["prompts"]["question_text"];
  const struct {
    std::string name;
    Task task;
    CaptionLength length;
  } tasks[] = {{"caption_short", Task::kCaption, CaptionLength::kShort},
               {"caption_normal", Task::kCaption, CaptionLength::kNormal},
               {"query", Task::kQuery, CaptionLength::kNormal}};
  for (const auto& t : tasks) {
    SCOPED_TRACE(t.name);
    GenerationTaps taps;
    const Result result = Run(t.task, t.length, t.task == Task::kQuery ? question : "", &taps);
    const nlohmann::json& gen = golden_["generate"][t.name];
    CheckStep0(t.name, taps);
    EXPECT_EQ(result.token_ids, gen["token_ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(result.finish_reason,
              gen["stop"] == "eos" ? FinishReason::kStop : FinishReason::kLength);
    EXPECT_EQ(result.usage.prompt_tokens, static_cast<int>(gen["prompt_ids"].size()));
    EXPECT_EQ(result.usage.generated_tokens, static_cast<int>(result.token_ids.size()));
    EXPECT_EQ(result.text, lm_->tokenizer.Decode(result.token_ids));
  }
}

TEST_P(DecoderParity, RegionTasks) {
  const std::string object = ReadJson(GetParam().set.golden_dir +
                                      "/golden.json")["prompts"]["object_text"];
  for (const std::string name : {"detect", "point"}) {
    SCOPED_TRACE(name);
    GenerationTaps taps;
    const bool detect = name == "detect";
    const Result result = Run(detect ? Task::kDetect : Task::kPoint, CaptionLength::kNormal,
                              object, &taps);
    const nlohmann::json& region = golden_["region"][name];
    CheckStep0(name, taps);
    const nlohmann::json& objects = region["objects"];
    ASSERT_EQ(detect ? result.boxes.size() : result.points.size(), objects.size());
    for (size_t i = 0; i < objects.size(); ++i) {
      if (detect) {
        const Box& b = result.boxes[i];
        EXPECT_EQ(std::vector<double>({b.x_min, b.y_min, b.x_max, b.y_max}),
                  std::vector<double>({objects[i]["x_min"], objects[i]["y_min"],
                                       objects[i]["x_max"], objects[i]["y_max"]}))
            << "object " << i;
      } else {
        EXPECT_EQ(result.points[i].x, objects[i]["x"].get<double>()) << "object " << i;
        EXPECT_EQ(result.points[i].y, objects[i]["y"].get<double>()) << "object " << i;
      }
    }
    EXPECT_EQ(result.finish_reason,
              region["stop"] == "eos" ? FinishReason::kStop : FinishReason::kLength);
    CheckFirstObject(name, taps);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DecoderParity, ::testing::ValuesIn(AllGoldenCases()),
                         [](const auto& info) { return GoldenCaseName(info.param); });

}  // namespace
}  // namespace moondream::testing
