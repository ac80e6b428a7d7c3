#include "engine/weights/smoothing.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

#include <ATen/Parallel.h>

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

// The ChannelRanges of channels with half-widths `half` and centers `center`; only channels
// where `eligible` is 1 (when given) may be shifted.
ChannelRanges Ranges(const at::Tensor& half, const at::Tensor& center, const at::Tensor& eligible = at::Tensor()) {
  ChannelRanges r;
  r.before = half + center.abs();
  const at::Tensor m = eligible.defined() ? center * eligible : center;
  const at::Tensor dominated = m.abs().ge(half).logical_and(m.ne(0));
  if (dominated.any().item<bool>()) r.shift = at::where(dominated, m, at::zeros_like(m));
  r.after = r.shift.defined() ? half + (center - r.shift).abs() : r.before;
  return r;
}

int Count(const at::Tensor& shift) {
  return shift.defined() ? static_cast<int>(shift.ne(0).sum().item<int64_t>()) : 0;
}

// sqrt(a / w), normalised to geometric mean 1.
at::Tensor BalanceScales(const at::Tensor& a, const at::Tensor& w) {
  at::Tensor s = (Floored(a) / Floored(w)).sqrt();
  return s / s.log().mean().exp();
}

}  // namespace

at::Tensor ApplyScaling(const at::Tensor& t, const TensorScaling& scaling) {
  at::Tensor out = t.to(at::kFloat, false, /*copy=*/true);
  if (scaling.add.defined()) out.add_(scaling.add.to(t.device()));
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
      (scaling.cols.defined() && scaling.cols.numel() != in) || scaling.add.defined()) {
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
  if (absl::StartsWith(name, "model.vision.post_ln.") || absl::StartsWith(name, "model.vision.proj_mlp.fc1.")) {
    group = "model.vision.post_ln";
  }
  if (absl::StartsWith(name, "model.text.post_ln.") || absl::StartsWith(name, "model.text.lm_head.")) {
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
  // vision proj_mlp.fc1 reads cat(global, pooled local), both post_ln outputs (the pooling
  // and stitching are per channel and affine, so they commute with the shifts and scales).
  if (group == "model.vision.post_ln") return ComputeLayerNorm(group, {"model.vision.proj_mlp.fc1"}, 2).status();
  if (group == "model.text.post_ln") return ComputeLayerNorm(group, {"model.text.lm_head"}, 1).status();
  return ComputeBlock(group, absl::StartsWith(group, "model.text."));
}

namespace {

// max_j |w[j]| over j < n in 16 running maxima side by side, so it vectorizes (a maximum
// is exact in any order); a NaN is skipped.
float AbsMax(const float* w, int64_t n) {
  constexpr int kLanes = 16;
  float m[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) m[l] = std::max(m[l], std::fabs(w[j + l]));
  }
  for (; j < n; ++j) m[0] = std::max(m[0], std::fabs(w[j]));
  return *std::max_element(m, m + kLanes);
}

// acc[j] = max(acc[j], |w[j]| * inv) for j < n, 16 at a time so it vectorizes as AbsMax
// does; a NaN is skipped.
void MaxScaledAbs(const float* __restrict w, int64_t n, float inv, float* __restrict acc) {
  constexpr int kLanes = 16;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[j + l] = std::max(acc[j + l], std::fabs(w[j + l]) * inv);
  }
  for (; j < n; ++j) acc[j] = std::max(acc[j], std::fabs(w[j]) * inv);
}

struct Source {
  const SafetensorsFile* file;
  absl::StatusOr<const TensorView*> Find(const std::string& name) const {
    const TensorView* v = file->Find(name);
    if (v == nullptr) return absl::NotFoundError(absl::StrCat("missing tensor ", name));
    return v;
  }
  // fp32 copy of a (small) tensor: a LayerNorm's gain or bias, a linear's bias.
  absl::StatusOr<at::Tensor> Fp32(const std::string& name) const {
    auto v = Find(name);
    if (!v.ok()) return v.status();
    return SourceView(**v).to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  }
  // max_i |W[i, j]| / max_j' |W[i, j']|: the largest share of a row's grid that column j
  // takes. INT8 weights are quantized per output row, each on its own grid, so this (not
  // the raw column maximum) is what a column rescaling trades against: it is unchanged when
  // rows are rescaled (query, key or value rows x K, say), as their quantization is. Zero
  // rows count as 0; a NaN is skipped (the quantizer refuses that tensor by name right after).
  absl::StatusOr<at::Tensor> ColRelMax(const std::string& name) const {
    auto t = Matrix(name);
    if (!t.ok()) return t.status();
    const int64_t in = t->size(1);
    at::Tensor m = at::zeros({in}, at::kFloat);
    float* mp = m.data_ptr<float>();
    std::mutex mu;
    ForRowBlocks(*t, 0, t->size(0), [&](int64_t b0, int64_t b1, const float* rows) {
      std::vector<float> part(static_cast<size_t>(in), 0.f);
      for (int64_t r = b0; r < b1; ++r) {
        const float* w = rows + (r - b0) * in;
        const float row_max = AbsMax(w, in);
        if (!(row_max > 0) || !std::isfinite(row_max)) continue;
        const float inv = 1.f / row_max;
        MaxScaledAbs(w, in, inv, part.data());
      }
      const std::lock_guard<std::mutex> lock(mu);
      for (int64_t j = 0; j < in; ++j) mp[j] = std::max(mp[j], part[j]);
    });
    return m;
  }
  // Rows [r0, r1) of y = W (gamma ⊙ x̂ + beta) + b over a normalised x̂ of `c` sigmas:
  // {half-width c·||W[i, :] ⊙ gamma||, center W[i, :]·beta + b[i]}, sums in fp64 (in SIMD
  // lanes, then added: a fixed order for a given build), one parallel pass. `b` holds
  // those rows' biases.
  absl::StatusOr<std::pair<at::Tensor, at::Tensor>> RowStats(const std::string& name, int64_t r0, int64_t r1,
                                                             const at::Tensor& gamma, const at::Tensor& beta,
                                                             const at::Tensor& b, double c) const {
    auto t = Matrix(name);
    if (!t.ok()) return t.status();
    const int64_t in = t->size(1);
    if (gamma.numel() != in || beta.numel() != in || b.numel() != r1 - r0 || r1 > t->size(0)) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": shape does not fit its LayerNorm"));
    }
    const at::Tensor g = gamma.contiguous(), be = beta.contiguous(), bias = b.contiguous();
    const float *gp = g.data_ptr<float>(), *bp = be.data_ptr<float>(), *bias_p = bias.data_ptr<float>();
    at::Tensor half = at::empty({r1 - r0}, at::kFloat), center = at::empty({r1 - r0}, at::kFloat);
    float *half_p = half.data_ptr<float>(), *center_p = center.data_ptr<float>();
    ForRowBlocks(*t, r0, r1, [&](int64_t b0, int64_t b1, const float* rows) {
      for (int64_t r = b0; r < b1; ++r) {
        const float* w = rows + (r - b0) * in;
        double norm2 = 0, dot = 0;
#pragma omp simd reduction(+ : norm2, dot)
        for (int64_t j = 0; j < in; ++j) {
          const double wg = static_cast<double>(w[j]) * gp[j];
          norm2 += wg * wg;
          dot += static_cast<double>(w[j]) * bp[j];
        }
        half_p[r - r0] = static_cast<float>(std::sqrt(norm2) * c);
        center_p[r - r0] = static_cast<float>(dot + bias_p[r - r0]);
      }
    });
    return std::make_pair(half, center);
  }
  // W[:, j] · shift[j] summed over the shifted channels (shift[j] != 0), each of the
  // `copies` input blocks of shift's width reading the same shift; fp64 sums. The constant
  // a shift moves into W's bias. Reads only those columns.
  absl::StatusOr<at::Tensor> TimesShift(const std::string& name, const at::Tensor& shift, int copies) const {
    auto t = Matrix(name);
    if (!t.ok()) return t.status();
    const int64_t d = shift.numel();
    if (t->size(1) != copies * d) return absl::InvalidArgumentError(absl::StrCat(name, ": width mismatch"));
    const at::Tensor idx = shift.nonzero().flatten();
    std::vector<at::Tensor> cols;
    for (int i = 0; i < copies; ++i) cols.push_back(idx + i * d);
    const at::Tensor w = t->index_select(1, at::cat(cols)).to(at::kDouble);
    return w.matmul(shift.index_select(0, idx).to(at::kDouble).repeat({copies})).to(at::kFloat);
  }

 private:
  absl::StatusOr<at::Tensor> Matrix(const std::string& name) const {
    auto v = Find(name);
    if (!v.ok()) return v.status();
    if ((*v)->shape.size() != 2) return absl::InvalidArgumentError(absl::StrCat(name, " is not 2-D"));
    return SourceView(**v);
  }
  // fn(b0, b1, rows) for blocks of rows [b0, b1) within [r0, r1), `rows` their fp32 values,
  // the blocks split over at::parallel_for's threads.
  template <typename Fn>
  static void ForRowBlocks(const at::Tensor& t, int64_t r0, int64_t r1, Fn fn) {
    const int64_t step = quant::RowsPerBlock(t.size(1));
    const int64_t blocks = (r1 - r0 + step - 1) / step;
    at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
      std::vector<float> buffer;
      for (int64_t i = first; i < last; ++i) {
        const int64_t b0 = r0 + i * step, b1 = std::min(r1, b0 + step);
        fn(b0, b1, quant::RowsAsFloat(t, b0, b1, buffer));
      }
    });
  }
};

}  // namespace

#define SM_ASSIGN(lhs, expr)            \
  auto lhs##_or = (expr);               \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  at::Tensor lhs = std::move(*lhs##_or)

absl::StatusOr<std::pair<at::Tensor, at::Tensor>> SmoothingPlan::ComputeLayerNorm(
    const std::string& ln, const std::vector<std::string>& linears, int copies) {
  const Source src{file_};
  SM_ASSIGN(gamma, src.Fp32(ln + ".weight"));
  SM_ASSIGN(beta, src.Fp32(ln + ".bias"));
  const int64_t d = gamma.numel();
  const ChannelRanges r = Ranges(gamma.abs() * options_.sigmas, beta);
  at::Tensor w = at::zeros_like(gamma);
  for (const std::string& lin : linears) {
    SM_ASSIGN(m, src.ColRelMax(lin + ".weight"));
    if (m.numel() != copies * d) return absl::InvalidArgumentError(absl::StrCat(lin, ": width mismatch"));
    for (int i = 0; i < copies; ++i) w = at::maximum(w, m.slice(0, i * d, (i + 1) * d));
  }
  const at::Tensor s = Gate(BalanceScales(r.after, w));
  for (const std::string& lin : linears) RecordInput(lin, ln, r, s);
  if (r.shift.defined()) {
    AddTo(ln + ".bias", -r.shift);
    for (const std::string& lin : linears) {
      SM_ASSIGN(moved, src.TimesShift(lin + ".weight", r.shift, copies));
      AddTo(lin + ".bias", moved);
    }
  }
  if (s.defined()) {
    scalings_[ln + ".weight"].rows = s.reciprocal();
    scalings_[ln + ".bias"].rows = s.reciprocal();
    for (const std::string& lin : linears) scalings_[lin + ".weight"].cols = s.repeat({copies});
  }
  return std::make_pair(gamma, beta);
}

absl::Status SmoothingPlan::ComputeBlock(const std::string& prefix, bool text) {
  const Source src{file_};
  const double c = options_.sigmas;
  const std::string qkv = prefix + ".attn.qkv", proj = prefix + ".attn.proj";
  const std::string fc1 = prefix + ".mlp.fc1";
  // The LN feeding qkv (gamma, beta as in the file).
  auto ln = ComputeLayerNorm(prefix + (text ? ".ln" : ".ln1"), text ? std::vector<std::string>{qkv, fc1}
                                                                      : std::vector<std::string>{qkv}, 1);
  if (!ln.ok()) return ln.status();
  if (!text) {
    auto ln2 = ComputeLayerNorm(prefix + ".ln2", {fc1}, 1);
    if (!ln2.ok()) return ln2.status();
  }
  const at::Tensor& gamma = ln->first;
  const at::Tensor& beta = ln->second;
  const int64_t d = gamma.numel();

  // Values -> out-projection.
  SM_ASSIGN(bias, src.Fp32(qkv + ".bias"));
  if (bias.numel() != 3 * d) return absl::InvalidArgumentError(absl::StrCat(qkv, ": expected 3*", d, " rows"));
  // Value (and, for text, query and key) rows' half-widths and centers, in one pass over the
  // rows needed.
  const int64_t first = text ? 0 : 2 * d;
  auto rows_or = src.RowStats(qkv + ".weight", first, 3 * d, gamma, beta, bias.slice(0, first, 3 * d), c);
  if (!rows_or.ok()) return rows_or.status();
  const at::Tensor& half = rows_or->first;
  const at::Tensor& center = rows_or->second;
  auto part = [&](const at::Tensor& t, int64_t i) { return t.slice(0, i * d - first, (i + 1) * d - first); };
  const ChannelRanges v = Ranges(part(half, 2), part(center, 2));
  SM_ASSIGN(wproj, src.ColRelMax(proj + ".weight"));
  if (wproj.numel() != d) return absl::InvalidArgumentError(absl::StrCat(proj, ": width mismatch"));
  const at::Tensor sv = Gate(BalanceScales(v.after, wproj));
  at::Tensor rows = at::ones({3 * d}, at::kFloat);
  at::Tensor qkv_shift = at::zeros({3 * d}, at::kFloat);
  bool rows_changed = sv.defined();
  if (sv.defined()) {
    rows.slice(0, 2 * d, 3 * d).copy_(sv.reciprocal());
    scalings_[proj + ".weight"].cols = sv;
  }
  if (v.shift.defined()) {
    qkv_shift.slice(0, 2 * d, 3 * d).copy_(v.shift);
    SM_ASSIGN(moved, src.TimesShift(proj + ".weight", v.shift, 1));
    AddTo(proj + ".bias", moved);
  }
  RecordInput(proj, prefix + ".attn.v", v, sv);
  SmoothingStats& qst = stats_[Label(qkv)];
  const int64_t heads = text && options_.text_heads > 0 ? options_.text_heads : 1;
  qst.value_spread_before = HeadSpread(v.before, heads);
  qst.value_spread_after = HeadSpread(sv.defined() ? v.after / sv : v.after, heads);
  qst.shifted_values = Count(v.shift);

  // Keys <-> queries (text: the int8 KV cache), per rotary pair; keys shifted outside the
  // rotary dims.
  if (text && options_.text_heads > 0 && d % options_.text_heads == 0) {
    const int64_t hd = d / heads, rot = hd / 2, half_rot = rot / 2;  // rot_dim = dim / (2 heads)
    // Pair partner of each channel within its head (itself outside the rotary dims).
    std::vector<int64_t> partner(d);
    std::vector<float> pass_through(d);
    for (int64_t j = 0; j < d; ++j) {
      const int64_t h = j / hd, i = j % hd;
      partner[j] = i >= rot ? j : h * hd + (i < half_rot ? i + half_rot : i - half_rot);
      pass_through[j] = i >= rot ? 1.0f : 0.0f;
    }
    const ChannelRanges k = Ranges(part(half, 1), part(center, 1), at::tensor(pass_through));
    const at::Tensor rq = part(half, 0) + part(center, 0).abs();
    const at::Tensor idx = at::tensor(partner, at::kLong);
    const at::Tensor pk = at::maximum(k.after, k.after.index_select(0, idx));
    const at::Tensor pq = at::maximum(rq, rq.index_select(0, idx));
    const at::Tensor sk = Gate((Floored(pk) / Floored(pq)).sqrt());
    qst.key_spread_before = HeadSpread(k.before, heads);
    qst.key_spread_after = HeadSpread(sk.defined() ? k.after / sk : k.after, heads);
    qst.shifted_keys = Count(k.shift);
    if (sk.defined()) {
      rows.slice(0, 0, d).copy_(sk);
      rows.slice(0, d, 2 * d).copy_(sk.reciprocal());
      rows_changed = true;
    }
    if (k.shift.defined()) qkv_shift.slice(0, d, 2 * d).copy_(k.shift);
  }
  if (qst.shifted_values + qst.shifted_keys > 0) AddTo(qkv + ".bias", -qkv_shift);
  if (rows_changed) {
    scalings_[qkv + ".weight"].rows = rows;
    scalings_[qkv + ".bias"].rows = rows;
  }
  return absl::OkStatus();
}

at::Tensor SmoothingPlan::Gate(const at::Tensor& s) const {
  const at::Tensor rel = s / s.median();
  const double r = options_.min_scale_ratio;
  const at::Tensor outlier = rel.ge(r).logical_or(rel.le(1.0 / r));
  if (!outlier.any().item<bool>()) return at::Tensor();
  return at::where(outlier, rel, at::ones_like(rel));
}

void SmoothingPlan::AddTo(const std::string& name, const at::Tensor& add) {
  at::Tensor& a = scalings_[name].add;
  a = a.defined() ? a + add : add.clone();
}

void SmoothingPlan::RecordInput(const std::string& linear, const std::string& source, const ChannelRanges& r,
                                const at::Tensor& s) {
  SmoothingStats& st = stats_[Label(linear)];
  st.applied = s.defined() || r.shift.defined();
  st.source = Label(source);
  st.input_spread_before = Spread(r.before);
  st.input_spread_after = Spread(s.defined() ? r.after / s : r.after);
  st.scale_min = s.defined() ? s.min().item<double>() : 1.0;
  st.scale_max = s.defined() ? s.max().item<double>() : 1.0;
  st.shifted_channels = Count(r.shift);
}

}  // namespace moondream
