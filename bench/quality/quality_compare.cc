#include "bench/quality/quality_compare.h"

#include <limits>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "engine/model/sampling.h"
#include "engine/model/status_macros.h"
#include "engine/model/tasks.h"
#include "engine/model/torch_compat.h"

namespace moondream::quality {
namespace {

at::Tensor Ids(const std::vector<int32_t>& ids) {
  return at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong);
}

// Both models' image prefixes: the full pipeline of each precision (decode, crops,
// vision, projection, image prefill). `embeds` receives the [729, D] embeddings.
struct Encoded {
  at::Tensor embeds;
  std::shared_ptr<const MoondreamImage> image;
};

absl::StatusOr<Encoded> Encode(const Moondream& model, std::string_view bytes) {
  Encoded out;
  MD_ASSIGN_OR_RETURN(out.embeds, model.EncodeEmbeds(bytes, RunContext{}, nullptr));
  MD_ASSIGN_OR_RETURN(out.image, model.EncodeFromEmbeds(out.embeds, nullptr));
  return out;
}

// FP32 greedy: `n` steps from the prompt (EOS fed back like any token). Returns the
// logits of every step [n, vocab]; `tokens` gets the n chosen ids.
at::Tensor GreedyLogits(const Language& lm, const KvCache& prefix,
                        const std::vector<int32_t>& prompt, int n,
                        std::vector<int32_t>* tokens) {
  KvCache cache = KvCache::Extend(
      prefix, prefix.length() + static_cast<int64_t>(prompt.size()) + n);
  int64_t pos = prefix.length();
  at::Tensor h = lm.text.Prefill(lm.text.Embed(Ids(prompt)), pos, cache);
  pos += static_cast<int64_t>(prompt.size());
  std::vector<at::Tensor> steps;
  for (int i = 0; i < n; ++i) {
    steps.push_back(lm.text.Logits(h[h.size(0) - 1]));
    tokens->push_back(Argmax(steps.back()));
    if (i + 1 == n) break;
    h = lm.text.Prefill(lm.text.Embed(Ids({tokens->back()})), pos++, cache);
  }
  return at::stack(steps);
}

// Teacher forcing: prompt ++ tokens[0..n-2] in one prefill; logits of the n positions
// that predict tokens[0..n-1] -> [n, vocab].
at::Tensor ForcedLogits(const Language& lm, const KvCache& prefix,
                        const std::vector<int32_t>& prompt, const std::vector<int32_t>& tokens) {
  std::vector<int32_t> ids = prompt;
  ids.insert(ids.end(), tokens.begin(), tokens.end() - 1);
  KvCache cache = KvCache::Extend(prefix, prefix.length() + static_cast<int64_t>(ids.size()));
  const at::Tensor h = lm.text.Prefill(lm.text.Embed(Ids(ids)), prefix.length(), cache);
  std::vector<at::Tensor> steps;
  for (size_t i = 0; i < tokens.size(); ++i) {
    steps.push_back(lm.text.Logits(h[prompt.size() - 1 + i]));
  }
  return at::stack(steps);
}

absl::StatusOr<TextStats> CompareText(const Moondream& fp32, const Moondream& int8,
                                      const Encoded& a, const Encoded& b,
                                      const Request& request, std::string task, int n,
                                      double decided_margin) {
  MD_ASSIGN_OR_RETURN(const std::vector<int32_t> prompt, BuildPrompt(fp32.language(), request));
  std::vector<int32_t> tokens;
  const at::Tensor p = GreedyLogits(fp32.language(), a.image->prefix(), prompt, n, &tokens);
  const at::Tensor q = ForcedLogits(int8.language(), b.image->prefix(), prompt, tokens);
  TextStats s;
  s.task = std::move(task);
  s.steps = n;
  const at::Tensor top2 = std::get<0>(p[0].topk(2));
  s.margin0 = (top2[0] - top2[1]).item<double>();
  for (int i = 0; i < n; ++i) {
    const double kl = KlDivergence(p[i], q[i]);
    if (i == 0) s.kl0 = kl;
    const bool same = Argmax(p[i]) == Argmax(q[i]);
    if (i == 0) s.top1_0 = same;
    s.agree += same ? 1 : 0;
    const at::Tensor best2 = std::get<0>(p[i].topk(2));
    if ((best2[0] - best2[1]).item<double>() > decided_margin) {
      ++s.decided;
      s.decided_agree += same ? 1 : 0;
    }
    s.kl_mean += kl / n;
    s.kl_max = std::max(s.kl_max, kl);
  }
  return s;
}

// Object coordinates as a flat list: boxes (x_min, y_min, x_max, y_max) or points (x, y).
std::vector<std::vector<float>> Objects(const Result& r) {
  std::vector<std::vector<float>> out;
  for (const Box& box : r.boxes) out.push_back({box.x_min, box.y_min, box.x_max, box.y_max});
  for (const Point& pt : r.points) out.push_back({pt.x, pt.y});
  return out;
}

absl::StatusOr<RegionStats> CompareRegions(const Moondream& fp32, const Moondream& int8,
                                           const Encoded& a, const Encoded& b,
                                           const Request& request, std::string task) {
  GenerationTaps ta, tb;
  MD_ASSIGN_OR_RETURN(const Result ra, fp32.Run(request, *a.image, RunContext{}, &ta));
  MD_ASSIGN_OR_RETURN(const Result rb, int8.Run(request, *b.image, RunContext{}, &tb));
  const auto oa = Objects(ra), ob = Objects(rb);
  RegionStats s;
  s.task = std::move(task);
  s.n_fp32 = static_cast<int>(oa.size());
  s.n_int8 = static_cast<int>(ob.size());
  const int32_t eos = fp32.language().config.tokenizer.eos_id;
  s.first_decision = (Argmax(ta.logits0) == eos) == (Argmax(tb.logits0) == eos);
  {
    const at::Tensor l = ta.logits0.to(at::kDouble).flatten();
    const double eos_logit = l[eos].item<double>();
    at::Tensor others = l.clone();
    others[eos] = -std::numeric_limits<double>::infinity();
    s.decision_margin0 = std::abs(eos_logit - others.max().item<double>());
  }
  if (ta.coord_logits_x.defined() && tb.coord_logits_x.defined()) {
    s.first_x_bin_delta = std::abs(Argmax(ta.coord_logits_x) - Argmax(tb.coord_logits_x));
    const at::Tensor top2 = std::get<0>(ta.coord_logits_x.topk(2));
    s.x_margin0 = (top2[0] - top2[1]).item<double>();
    s.x_logit_error = (tb.coord_logits_x - ta.coord_logits_x).abs().max().item<double>();
  }
  const size_t common = std::min(oa.size(), ob.size());
  bool equal_so_far = true;
  double sum = 0;
  size_t count = 0;
  for (size_t i = 0; i < common; ++i) {
    equal_so_far = equal_so_far && oa[i] == ob[i];
    s.leading_equal += equal_so_far ? 1 : 0;
    for (size_t k = 0; k < oa[i].size(); ++k, ++count) sum += std::abs(oa[i][k] - ob[i][k]);
  }
  s.mean_abs_delta = count > 0 ? sum / count : 0;
  return s;
}

}  // namespace

double KlDivergence(const at::Tensor& p_logits, const at::Tensor& q_logits) {
  const at::Tensor lp = at::log_softmax(p_logits.to(at::kDouble), -1);
  const at::Tensor lq = at::log_softmax(q_logits.to(at::kDouble), -1);
  return (lp.exp() * (lp - lq)).sum().item<double>();
}

double Cosine(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble).flatten(), y = b.to(at::kDouble).flatten();
  return (x.dot(y) / (x.norm() * y.norm())).item<double>();
}

absl::StatusOr<ImageStats> CompareImage(const Moondream& fp32, const Moondream& int8,
                                        std::string_view name, std::string_view image_bytes,
                                        const CompareOptions& options) {
  return RunGuarded([&]() -> absl::StatusOr<ImageStats> {
    MD_ASSIGN_OR_RETURN(const Encoded a, Encode(fp32, image_bytes));
    MD_ASSIGN_OR_RETURN(const Encoded b, Encode(int8, image_bytes));
    ImageStats s;
    s.image = std::string(name);
    s.embed_cosine = Cosine(a.embeds, b.embeds);
    const at::Tensor x = a.embeds.to(at::kDouble), y = b.embeds.to(at::kDouble);
    s.embed_min_row_cosine = at::cosine_similarity(x, y, 1).min().item<double>();

    Request request;
    request.settings.max_tokens = options.max_tokens;
    request.max_objects = options.max_objects;
    request.text = "What is in the image?";
    const struct {
      const char* name;
      Task task;
      CaptionLength length;
    } texts[] = {{"caption_short", Task::kCaption, CaptionLength::kShort},
                 {"caption_normal", Task::kCaption, CaptionLength::kNormal},
                 {"query", Task::kQuery, CaptionLength::kNormal}};
    for (const auto& t : texts) {
      request.task = t.task;
      request.caption_length = t.length;
      MD_ASSIGN_OR_RETURN(TextStats ts,
                          CompareText(fp32, int8, a, b, request, t.name, options.max_tokens,
                                      options.decided_margin));
      s.text.push_back(std::move(ts));
    }
    request.text = "cat";
    for (Task task : {Task::kDetect, Task::kPoint}) {
      request.task = task;
      MD_ASSIGN_OR_RETURN(RegionStats rs,
                          CompareRegions(fp32, int8, a, b, request, TaskName(task)));
      s.regions.push_back(std::move(rs));
    }
    return s;
  });
}

std::string FormatTable(const std::string& title, const std::vector<ImageStats>& rows) {
  std::string out = "== INT8 vs FP32: " + title + " ==\n";
  char line[256];
  std::snprintf(line, sizeof(line), "%-28s %-8s %9s %9s %10s %5s %8s %6s %10s %10s %7s\n",
                "image", "embedcos", "minrowcos", "task", "KL0", "top1", "margin0",
                "agree", "KLmean", "KLmax", "decided");
  out += line;
  for (const ImageStats& r : rows) {
    for (const TextStats& t : r.text) {
      std::snprintf(line, sizeof(line),
                    "%-28s %8.6f %9.6f %9s %10.3e %5s %8.4f %3d/%-2d %10.3e %10.3e %3d/%-3d\n",
                    r.image.c_str(), r.embed_cosine, r.embed_min_row_cosine,
                    t.task.substr(0, 9).c_str(), t.kl0, t.top1_0 ? "yes" : "NO", t.margin0,
                    t.agree, t.steps, t.kl_mean, t.kl_max, t.decided_agree, t.decided);
      out += line;
    }
    for (const RegionStats& g : r.regions) {
      std::snprintf(line, sizeof(line),
                    "%-28s %-8s %9s %9s  objects fp32/int8 %2d/%-2d first-decision %-3s "
                    "(margin %.3f) x0-bin|d| %3d (margin %.3f, err %.3f)  leading-equal %2d  mean|d| %.4f\n",
                    r.image.c_str(), "", "", g.task.c_str(), g.n_fp32, g.n_int8,
                    g.first_decision ? "yes" : "NO", g.decision_margin0, g.first_x_bin_delta, g.x_margin0,
                    g.x_logit_error, g.leading_equal, g.mean_abs_delta);
      out += line;
    }
  }
  return out;
}

}  // namespace moondream::quality
