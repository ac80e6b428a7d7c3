// INT8-vs-FP32 quality statistics of one Moondream2 checkpoint on one image (issue 4,
// "Quality"): shared by tests/quality (fixture thresholds) and bench/quality (full-size
// synthetic checkpoint report).
//
// Per image, with the FP32 model as the reference P and the INT8 model as Q:
//  - image embeddings [729, D]: cosine similarity (flattened) and the worst row's cosine;
//  - text (caption short/normal, query): the FP32 model generates `max_tokens` greedy
//    tokens (EOS is fed back like any token, so random checkpoints that stop at once still
//    give `max_tokens` steps); INT8 is teacher-forced on the same tokens in one prefill.
//    Step 0 = the prompt's logits: KL(P||Q) and top-1 agreement; all steps: top-1
//    agreement and mean KL;
//  - detect/point (greedy, at most `max_objects`): object counts, first decision
//    (object vs EOS) agreement, first object's x bin |delta| (prompt-only, so comparable
//    even when later objects diverge), objects equal from the start, mean |delta| of the
//    coordinates over the objects both produced.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/moondream.h"

namespace moondream::quality {

struct TextStats {
  std::string task;       // caption_short, caption_normal, query
  double kl0 = 0;         // KL(P||Q) of step-0 logits, nats
  bool top1_0 = false;    // step-0 argmax equal
  double margin0 = 0;     // FP32 step-0 top1 - top2 (how close the decision was)
  int steps = 0;          // teacher-forced steps compared (= max_tokens)
  int agree = 0;          // steps whose argmax agrees
  int decided = 0;        // steps whose FP32 top1 - top2 margin > CompareOptions::decided_margin
  int decided_agree = 0;  // of those, steps whose argmax agrees (near-ties excluded)
  double kl_mean = 0;     // mean KL over the steps
  double kl_max = 0;
};

struct RegionStats {
  std::string task;          // detect, point
  int n_fp32 = 0, n_int8 = 0;
  bool first_decision = false;  // both say "object" or both say EOS at step 0
  double decision_margin0 = 0;  // FP32 step 0: |EOS logit - best other logit| (how close)
  int first_x_bin_delta = -1;   // |argmax x bin| of object 0; -1 when either has none
  double x_margin0 = 0;         // object 0: FP32 x logits top1 - top2 (how close the choice was)
  double x_logit_error = 0;     // object 0: max |INT8 - FP32| x logit over all bins
  int leading_equal = 0;        // objects identical from the start
  double mean_abs_delta = 0;    // over coordinates of the common prefix of objects
};

struct ImageStats {
  std::string image;
  double embed_cosine = 0;
  double embed_min_row_cosine = 0;
  std::vector<TextStats> text;
  std::vector<RegionStats> regions;
};

struct CompareOptions {
  int max_tokens = 20;
  int max_objects = 20;
  // Teacher-forced steps count as "decided" when FP32's top1 - top2 logit margin exceeds
  // this: a correct INT8 path flips only near-ties (margins <= 0.18 on the fixtures).
  double decided_margin = 0.3;
};

// Runs both models on the encoded image bytes.
absl::StatusOr<ImageStats> CompareImage(const Moondream& fp32, const Moondream& int8,
                                        std::string_view name, std::string_view image_bytes,
                                        const CompareOptions& options);

// Human-readable table (one row per image and task) and a one-line summary per column.
std::string FormatTable(const std::string& title, const std::vector<ImageStats>& rows);

// KL(P||Q) in nats of softmax(p_logits) vs softmax(q_logits), computed in fp64.
double KlDivergence(const at::Tensor& p_logits, const at::Tensor& q_logits);
double Cosine(const at::Tensor& a, const at::Tensor& b);

}  // namespace moondream::quality
