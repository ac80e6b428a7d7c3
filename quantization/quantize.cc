// Per-output-row symmetric INT8 quantization of weight matrices.
#include <cmath>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "quantization/linear.h"

namespace moondream::quant {
namespace {

constexpr int64_t kRowsPerChunk = 512;  // bounds the fp64 temporaries to chunk x in

struct ErrorSums {
  double max_abs = 0, err2 = 0, w2 = 0;
  int64_t clipped = 0;
};

// rows: fp64 [r, in] -> q rows and scales; accumulates the error sums.
void QuantizeChunk(const at::Tensor& rows, at::Tensor q, at::Tensor scale, ErrorSums* sums) {
  const at::Tensor amax = rows.abs().amax(1);                          // [r]
  const at::Tensor s32 = (amax / 127.0).to(at::kFloat);                // stored scale
  const at::Tensor s = s32.to(at::kDouble).unsqueeze(1);               // [r, 1]
  const at::Tensor live = s > 0;                                       // zero or underflowed rows -> 0
  const at::Tensor ratio = at::where(live, rows / at::where(live, s, at::ones_like(s)),
                                     at::zeros_like(rows)).round();
  const at::Tensor qd = ratio.clamp(-127, 127);
  q.copy_(qd);
  scale.copy_(at::where(live.squeeze(1), s32, at::zeros_like(s32)));
  const at::Tensor err = rows - qd * s;
  sums->max_abs = std::max(sums->max_abs, err.numel() ? err.abs().max().item<double>() : 0.0);
  sums->err2 += err.square().sum().item<double>();
  sums->w2 += rows.square().sum().item<double>();
  sums->clipped += (ratio.abs() > 127).sum().item<int64_t>();
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
    Int8Matrix m{at::empty({out, w.size(1)}, w.options().dtype(at::kChar)),
                 at::empty({out}, w.options().dtype(at::kFloat))};
    ErrorSums sums;
    for (int64_t r0 = 0; r0 < out; r0 += kRowsPerChunk) {
      const int64_t r1 = std::min(out, r0 + kRowsPerChunk);
      const at::Tensor rows = w.slice(0, r0, r1).to(at::kDouble);
      if (!at::isfinite(rows).all().item<bool>()) {
        return absl::InvalidArgumentError(
            absl::StrCat("quantize ", label, ": tensor holds NaN or Inf (rows ", r0, "..", r1 - 1, ")"));
      }
      QuantizeChunk(rows, m.q.slice(0, r0, r1), m.scale.slice(0, r0, r1), &sums);
    }
    if (stats != nullptr) FillStats(sums, w.numel(), stats);
    return m;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("quantize ", label, ": ", e.what_without_backtrace()));
  }
}

at::Tensor Dequantize(const Int8Matrix& m, at::ScalarType dtype) {
  return (m.q.to(at::kFloat) * m.scale.unsqueeze(1)).to(dtype);
}

}  // namespace moondream::quant
