#include "engine/weights/smoothing.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/weights/weight_store.h"

namespace moondream {
namespace {

constexpr int64_t kChunkElements = 1 << 22;  // fp32 elements converted at a time (16 MB)


std::string Label(const std::string& name) {
  std::string s(absl::StripPrefix(name, "model."));
  return std::string(absl::StripSuffix(s, ".weight"));
}

// max / median of a positive vector.
double Spread(const at::Tensor& r) {
  const at::Tensor sorted = std::get<0>(r.flatten().sort());
  const double median = sorted[sorted.numel() / 2].item<double>();
  const double max = sorted[-1].item<double>();
  return median > 0 ? max / median : 0.0;
}

// Worst head's spread of r [heads * hd].
double HeadSpread(const at::Tensor& r, int64_t heads) {
  const at::Tensor h = r.view({heads, -1});
  double worst = 0;
  for (int64_t i = 0; i < heads; ++i) worst = std::max(worst, Spread(h[i]));
  return worst;
}

// Positive vector with entries below `rel` * max raised to it (dead channels stay finite).
at::Tensor Floored(const at::Tensor& x, double rel = 1e-6) {
  const double floor = std::max(x.max().item<double>() * rel, 1e-30);
  return x.clamp_min(floor);
}

// sqrt(a / w), normalised to geometric mean 1.
at::Tensor BalanceScales(const at::Tensor& a, const at::Tensor& w) {
  at::Tensor s = (Floored(a) / Floored(w)).sqrt();
  return s / s.log().mean().exp();
}

}  // namespace

at::Tensor ApplyScaling(const at::Tensor& t, const TensorScaling& scaling) {
  at::Tensor out = t.to(at::kFloat, false, /*copy=*/true);
  if (scaling.rows.defined()) {
    out.mul_(t.dim() == 1 ? scaling.rows.to(t.device()) : scaling.rows.to(t.device()).unsqueeze(1));
  }
  if (scaling.cols.defined()) out.mul_(scaling.cols.to(t.device()).unsqueeze(0));
  return out.to(t.scalar_type());
}

absl::StatusOr<quant::Int8Matrix> QuantizeScaled(const at::Tensor& src, const TensorScaling& scaling,
                                                 std::string_view name, quant::QuantStats* stats) {
  const int64_t out = src.size(0), in = src.size(1);
  if ((scaling.rows.defined() && scaling.rows.numel() != out) ||
      (scaling.cols.defined() && scaling.cols.numel() != in)) {
    return absl::InvalidArgumentError(absl::StrCat("quantize ", std::string(name), ": smoothing scales do not fit"));
  }
  quant::Int8Matrix m{at::empty({out, in}, at::kChar), at::empty({out}, at::kFloat)};
  const int64_t step = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(in, 1));
  double max_abs = 0, err2 = 0, w2 = 0, clipped = 0;
  // One fp32 buffer for every chunk: a fresh 16 MB allocation per chunk is an mmap and a
  // page fault per page each time (it tripled the INT8 load).
  const at::Tensor buffer = at::empty({std::min(step, out), in}, at::kFloat);
  for (int64_t r0 = 0; r0 < out; r0 += step) {
    const int64_t r1 = std::min(out, r0 + step);
    at::Tensor chunk = buffer.narrow(0, 0, r1 - r0);
    chunk.copy_(src.slice(0, r0, r1));
    if (scaling.rows.defined()) chunk.mul_(scaling.rows.slice(0, r0, r1).unsqueeze(1));
    if (scaling.cols.defined()) chunk.mul_(scaling.cols.unsqueeze(0));
    quant::QuantStats st;
    auto part = quant::QuantizePerChannel(chunk, name, &st);
    if (!part.ok()) return part.status();
    m.q.slice(0, r0, r1).copy_(part->q);
    m.scale.slice(0, r0, r1).copy_(part->scale);
    const double chunk_w2 = st.sum_sq;
    max_abs = std::max(max_abs, st.max_abs_error);
    err2 += st.rel_frobenius_error * st.rel_frobenius_error * chunk_w2;
    w2 += chunk_w2;
    clipped += st.clipped_fraction * static_cast<double>(chunk.numel());
  }
  if (stats != nullptr) {
    stats->max_abs_error = max_abs;
    stats->rel_frobenius_error = w2 > 0 ? std::sqrt(err2 / w2) : 0.0;
    stats->sqnr_db = err2 > 0 ? 10.0 * std::log10(w2 / err2) : std::numeric_limits<double>::infinity();
    stats->clipped_fraction = out * in > 0 ? clipped / static_cast<double>(out * in) : 0.0;
  }
  return m;
}

absl::StatusOr<const TensorScaling*> SmoothingPlan::For(const std::string& name) {
  std::string group;
  for (const char* prefix : {"model.vision.blocks.", "model.text.blocks."}) {
    if (!absl::StartsWith(name, prefix)) continue;
    const size_t dot = name.find('.', std::strlen(prefix));
    if (dot != std::string::npos) group = name.substr(0, dot);
  }
  if (absl::StartsWith(name, "model.vision.post_ln.") || name == "model.vision.proj_mlp.fc1.weight") {
    group = "model.vision.post_ln";
  }
  if (absl::StartsWith(name, "model.text.post_ln.") || name == "model.text.lm_head.weight") {
    group = "model.text.post_ln";
  }
  if (group.empty()) return nullptr;
  if (computed_.insert(group).second) {
    absl::Status status;
    try {
      status = Compute(group);
    } catch (const c10::Error& e) {
      status = absl::InternalError(e.what_without_backtrace());
    }
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat("int8 smoothing of ", group, ": ", status.message()));
    }
  }
  auto it = scalings_.find(name);
  return it == scalings_.end() ? nullptr : &it->second;
}

const SmoothingStats* SmoothingPlan::StatsFor(const std::string& label) const {
  auto it = stats_.find(label);
  return it == stats_.end() ? nullptr : &it->second;
}

absl::Status SmoothingPlan::Compute(const std::string& group) {
  if (group == "model.vision.post_ln") {
    return ComputePostLn(group, "model.vision.proj_mlp.fc1", /*doubled=*/true);
  }
  if (group == "model.text.post_ln") return ComputePostLn(group, "model.text.lm_head", false);
  return ComputeBlock(group, absl::StartsWith(group, "model.text."));
}

namespace {

struct Source {
  const SafetensorsFile* file;
  absl::StatusOr<const TensorView*> Find(const std::string& name) const {
    const TensorView* v = file->Find(name);
    if (v == nullptr) return absl::NotFoundError(absl::StrCat("missing tensor ", name));
    return v;
  }
  // fp32 copy of rows [r0, r1) (all rows when r1 < 0).
  absl::StatusOr<at::Tensor> Rows(const std::string& name, int64_t r0 = 0, int64_t r1 = -1) const {
    auto v = Find(name);
    if (!v.ok()) return v.status();
    at::Tensor t = SourceView(**v);
    if (r1 >= 0) t = t.slice(0, r0, r1);
    return t.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  }
  // max_i |W[i, j]| of a 2-D tensor, a chunk of rows at a time.
  absl::StatusOr<at::Tensor> ColAbsMax(const std::string& name) const {
    auto v = Find(name);
    if (!v.ok()) return v.status();
    if ((*v)->shape.size() != 2) return absl::InvalidArgumentError(absl::StrCat(name, " is not 2-D"));
    const at::Tensor t = SourceView(**v);
    const int64_t out = t.size(0), in = t.size(1);
    const int64_t step = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(in, 1));
    at::Tensor m = at::zeros({in}, at::kFloat);
    const at::Tensor buffer = at::empty({std::min(step, out), in}, at::kFloat);  // reused
    for (int64_t r0 = 0; r0 < out; r0 += step) {
      at::Tensor chunk = buffer.narrow(0, 0, std::min(out, r0 + step) - r0);
      chunk.copy_(t.slice(0, r0, r0 + chunk.size(0))).abs_();
      at::maximum_out(m, m, chunk.amax(0));
    }
    return m;
  }
};

// Range of y = W (gamma ⊙ x̂ + beta) + b over a normalised x̂ of `c` sigmas, per row of W.
at::Tensor RowRange(const at::Tensor& w, const at::Tensor& gamma, const at::Tensor& beta,
                    const at::Tensor& b, double c) {
  return (w * gamma.unsqueeze(0)).norm(2, {1}) * c + (at::mv(w, beta) + b).abs();
}

}  // namespace

#define SM_ASSIGN(lhs, expr)            \
  auto lhs##_or = (expr);               \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  at::Tensor lhs = std::move(*lhs##_or)

absl::Status SmoothingPlan::ComputeBlock(const std::string& prefix, bool text) {
  const Source src{file_};
  const double c = options_.sigmas;
  // LayerNorm -> linears: returns the LN's (gamma, beta) as in the file.
  auto ln_group = [&](const std::string& ln, const std::vector<std::string>& linears)
      -> absl::StatusOr<std::pair<at::Tensor, at::Tensor>> {
    SM_ASSIGN(gamma, src.Rows(ln + ".weight"));
    SM_ASSIGN(beta, src.Rows(ln + ".bias"));
    const at::Tensor a = gamma.abs() * c + beta.abs();
    at::Tensor w = at::zeros_like(a);
    for (const std::string& lin : linears) {
      SM_ASSIGN(m, src.ColAbsMax(lin + ".weight"));
      if (m.numel() != w.numel()) return absl::InvalidArgumentError(absl::StrCat(lin, ": width mismatch"));
      w = at::maximum(w, m);
    }
    const at::Tensor s = Gate(BalanceScales(a, w));
    for (const std::string& lin : linears) RecordInput(lin, ln, a, s);
    if (!s.defined()) return std::make_pair(gamma, beta);
    scalings_[ln + ".weight"].rows = s.reciprocal();
    scalings_[ln + ".bias"].rows = s.reciprocal();
    for (const std::string& lin : linears) scalings_[lin + ".weight"].cols = s;
    return std::make_pair(gamma, beta);
  };
  const std::string qkv = prefix + ".attn.qkv", proj = prefix + ".attn.proj";
  const std::string fc1 = prefix + ".mlp.fc1";
  std::pair<at::Tensor, at::Tensor> ln;  // the LN feeding qkv
  if (text) {
    auto r = ln_group(prefix + ".ln", {qkv, fc1});
    if (!r.ok()) return r.status();
    ln = *r;
  } else {
    auto r = ln_group(prefix + ".ln1", {qkv});
    if (!r.ok()) return r.status();
    ln = *r;
    auto r2 = ln_group(prefix + ".ln2", {fc1});
    if (!r2.ok()) return r2.status();
  }
  const at::Tensor& gamma = ln.first;
  const at::Tensor& beta = ln.second;
  const int64_t d = gamma.numel();

  // Values -> out-projection.
  SM_ASSIGN(bias, src.Rows(qkv + ".bias"));
  if (bias.numel() != 3 * d) return absl::InvalidArgumentError(absl::StrCat(qkv, ": expected 3*", d, " rows"));
  SM_ASSIGN(wv, src.Rows(qkv + ".weight", 2 * d, 3 * d));
  const at::Tensor rv = RowRange(wv, gamma, beta, bias.slice(0, 2 * d, 3 * d), c);
  SM_ASSIGN(wproj, src.ColAbsMax(proj + ".weight"));
  if (wproj.numel() != d) return absl::InvalidArgumentError(absl::StrCat(proj, ": width mismatch"));
  const at::Tensor sv = Gate(BalanceScales(rv, wproj));
  at::Tensor rows = at::ones({3 * d}, at::kFloat);
  bool rows_changed = sv.defined();
  if (sv.defined()) {
    rows.slice(0, 2 * d, 3 * d).copy_(sv.reciprocal());
    scalings_[proj + ".weight"].cols = sv;
  }
  RecordInput(proj, prefix + ".attn.v", rv, sv);
  SmoothingStats& qst = stats_[Label(qkv)];
  const int64_t heads = text && options_.text_heads > 0 ? options_.text_heads : 1;
  qst.value_spread_before = HeadSpread(rv, heads);
  qst.value_spread_after = sv.defined() ? HeadSpread(rv / sv, heads) : qst.value_spread_before;

  // Keys <-> queries (text: the int8 KV cache), per rotary pair.
  if (text && options_.text_heads > 0 && d % options_.text_heads == 0) {
    SM_ASSIGN(wq, src.Rows(qkv + ".weight", 0, d));
    SM_ASSIGN(wk, src.Rows(qkv + ".weight", d, 2 * d));
    const at::Tensor rq = RowRange(wq, gamma, beta, bias.slice(0, 0, d), c);
    const at::Tensor rk = RowRange(wk, gamma, beta, bias.slice(0, d, 2 * d), c);
    const int64_t hd = d / heads, rot = hd / 2, half = rot / 2;  // rot_dim = dim / (2 heads)
    // Pair partner of each channel within its head (itself outside the rotary dims).
    std::vector<int64_t> partner(d);
    for (int64_t j = 0; j < d; ++j) {
      const int64_t h = j / hd, i = j % hd;
      partner[j] = i >= rot ? j : h * hd + (i < half ? i + half : i - half);
    }
    const at::Tensor idx = at::tensor(partner, at::kLong);
    const at::Tensor pk = at::maximum(rk, rk.index_select(0, idx));
    const at::Tensor pq = at::maximum(rq, rq.index_select(0, idx));
    const at::Tensor sk = Gate((Floored(pk) / Floored(pq)).sqrt());
    qst.key_spread_before = HeadSpread(rk, heads);
    qst.key_spread_after = qst.key_spread_before;
    if (sk.defined()) {
      rows.slice(0, 0, d).copy_(sk);
      rows.slice(0, d, 2 * d).copy_(sk.reciprocal());
      qst.key_spread_after = HeadSpread(rk / sk, heads);
      rows_changed = true;
    }
  }
  if (rows_changed) {
    scalings_[qkv + ".weight"].rows = rows;
    scalings_[qkv + ".bias"].rows = rows;
  }
  return absl::OkStatus();
}

absl::Status SmoothingPlan::ComputePostLn(const std::string& ln, const std::string& linear,
                                          bool doubled) {
  const Source src{file_};
  SM_ASSIGN(gamma, src.Rows(ln + ".weight"));
  SM_ASSIGN(beta, src.Rows(ln + ".bias"));
  const int64_t d = gamma.numel();
  const at::Tensor a = gamma.abs() * options_.sigmas + beta.abs();
  SM_ASSIGN(m, src.ColAbsMax(linear + ".weight"));
  if (m.numel() != (doubled ? 2 : 1) * d) {
    return absl::InvalidArgumentError(absl::StrCat(linear, ": width mismatch"));
  }
  // vision proj_mlp.fc1 reads cat(global, pooled local), both post_ln outputs (the pooling
  // and stitching are per channel and linear, so they commute with the scales).
  const at::Tensor w = doubled ? at::maximum(m.slice(0, 0, d), m.slice(0, d, 2 * d)) : m;
  const at::Tensor s = Gate(BalanceScales(a, w));
  RecordInput(linear, ln, a, s);
  if (!s.defined()) return absl::OkStatus();
  scalings_[ln + ".weight"].rows = s.reciprocal();
  scalings_[ln + ".bias"].rows = s.reciprocal();
  scalings_[linear + ".weight"].cols = doubled ? at::cat({s, s}) : s;
  return absl::OkStatus();
}

at::Tensor SmoothingPlan::Gate(const at::Tensor& s) const {
  const at::Tensor rel = s / s.median();
  const double r = options_.min_scale_ratio;
  const at::Tensor outlier = rel.ge(r).logical_or(rel.le(1.0 / r));
  if (!outlier.any().item<bool>()) return at::Tensor();
  return at::where(outlier, rel, at::ones_like(rel));
}

void SmoothingPlan::RecordInput(const std::string& linear, const std::string& source,
                                           const at::Tensor& range, const at::Tensor& s) {
  SmoothingStats& st = stats_[Label(linear)];
  st.applied = s.defined();
  st.source = Label(source);
  st.input_spread_before = Spread(range);
  st.input_spread_after = st.applied ? Spread(range / s) : st.input_spread_before;
  st.scale_min = st.applied ? s.min().item<double>() : 1.0;
  st.scale_max = st.applied ? s.max().item<double>() : 1.0;
}

}  // namespace moondream
