// Per-output-row symmetric INT8 quantization of weight matrices.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "quantization/linear.h"

namespace moondream::quant {
namespace {

constexpr int64_t kRowsPerChunk = 512;  // bounds the fp32 copy of the input to chunk x in

struct ErrorSums {
  double max_abs = 0, err2 = 0, w2 = 0;
  int64_t clipped = 0;
  void Add(const ErrorSums& o) {
    max_abs = std::max(max_abs, o.max_abs);
    err2 += o.err2;
    w2 += o.w2;
    clipped += o.clipped;
  }
};

// Round half to even for |x| < 2^51 in the default rounding mode, without a libm call
// (std::nearbyint is an out-of-line call on baseline x86-64 and dominated the run time).
double RoundHalfEven(double x) {
  constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52
  return (x + kMagic) - kMagic;
}

// One row: scale = max|w|/127 (fp32), q = clamp(round-half-even(w / scale)), errors in fp64.
// A scale that is 0 (zero row, or underflow) stores the row as zeros.
ErrorSums QuantizeRow(const float* w, int64_t in, int8_t* q, float* scale) {
  double amax = 0;
  for (int64_t c = 0; c < in; ++c) amax = std::max(amax, std::fabs(static_cast<double>(w[c])));
  *scale = static_cast<float>(amax / 127.0);
  const double s = *scale;
  ErrorSums e;
  for (int64_t c = 0; c < in; ++c) {
    const double ratio = s > 0 ? RoundHalfEven(w[c] / s) : 0.0;  // |w/s| <= ~128
    const double qc = std::min(127.0, std::max(-127.0, ratio));
    const double err = w[c] - qc * s;
    q[c] = static_cast<int8_t>(qc);
    e.max_abs = std::max(e.max_abs, std::fabs(err));
    e.err2 += err * err;
    e.w2 += static_cast<double>(w[c]) * w[c];
    e.clipped += std::fabs(ratio) > 127.0;
  }
  return e;
}

// rows: fp32 contiguous [r, in] (finite) -> q rows and scales; accumulates the error sums.
void QuantizeChunk(const at::Tensor& rows, at::Tensor q, at::Tensor scale, ErrorSums* sums) {
  const int64_t r = rows.size(0), in = rows.size(1);
  std::vector<ErrorSums> per_row(r);
  at::parallel_for(0, r, 8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      per_row[i] = QuantizeRow(rows.data_ptr<float>() + i * in, in, q.data_ptr<int8_t>() + i * in,
                               scale.data_ptr<float>() + i);
    }
  });
  for (const ErrorSums& e : per_row) sums->Add(e);  // fixed order: deterministic stats
}

void FillStats(const ErrorSums& sums, int64_t numel, QuantStats* stats) {
  stats->max_abs_error = sums.max_abs;
  stats->rel_frobenius_error = sums.w2 > 0 ? std::sqrt(sums.err2 / sums.w2) : 0.0;
  stats->sqnr_db = sums.err2 > 0 ? 10.0 * std::log10(sums.w2 / sums.err2)
                                 : std::numeric_limits<double>::infinity();
  stats->clipped_fraction = numel ? static_cast<double>(sums.clipped) / numel : 0.0;
}

}  // namespace

absl::StatusOr<Int8Matrix> QuantizePerChannel(const at::Tensor& w, std::string_view name,
                                              QuantStats* stats) {
  const std::string label(name);
  if (!w.defined() || w.dim() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("quantize ", label, ": need a 2-D [out, in] tensor"));
  }
  const at::ScalarType t = w.scalar_type();
  if (t != at::kFloat && t != at::kHalf && t != at::kBFloat16) {
    return absl::InvalidArgumentError(absl::StrCat("quantize ", label, ": dtype must be fp16/bf16/fp32"));
  }
  try {
    const int64_t out = w.size(0);
    Int8Matrix m{at::empty({out, w.size(1)}, at::kChar), at::empty({out}, at::kFloat)};
    ErrorSums sums;
    for (int64_t r0 = 0; r0 < out; r0 += kRowsPerChunk) {
      const int64_t r1 = std::min(out, r0 + kRowsPerChunk);
      const at::Tensor rows = w.slice(0, r0, r1).to(at::kCPU, at::kFloat).contiguous();
      if (!at::isfinite(rows).all().item<bool>()) {
        return absl::InvalidArgumentError(
            absl::StrCat("quantize ", label, ": tensor holds NaN or Inf (rows ", r0, "..", r1 - 1, ")"));
      }
      QuantizeChunk(rows, m.q.slice(0, r0, r1), m.scale.slice(0, r0, r1), &sums);
    }
    if (stats != nullptr) FillStats(sums, w.numel(), stats);
    if (!w.device().is_cpu()) m = Int8Matrix{m.q.to(w.device()), m.scale.to(w.device())};
    return m;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("quantize ", label, ": ", e.what_without_backtrace()));
  }
}

at::Tensor Dequantize(const Int8Matrix& m, at::ScalarType dtype) {
  return (m.q.to(at::kFloat) * m.scale.unsqueeze(1)).to(dtype);
}

}  // namespace moondream::quant
