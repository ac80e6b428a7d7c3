// Per-output-row symmetric INT8 quantization of weight matrices.
//
// Rows are quantized in chunks of ~kRowBlockElements, in parallel (at::parallel_for): each task
// converts its chunk to fp32 in one reused buffer (no copy for contiguous fp32 input) and
// writes q and the scales straight into the result. On AVX2 CPUs the per-row absmax and the
// round/clamp/error pass run 8 (absmax) and 4 (fp64 quantization) lanes at a time with the
// same arithmetic as the scalar path, so q and the scales are identical on every CPU;
// other architectures (arm64) run the scalar path.
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "quantization/linear.h"

namespace moondream::quant {
namespace {


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

// max|w[c]| over [begin, end); false when a value is NaN or Inf.
bool AbsMaxScalar(const float* w, int64_t begin, int64_t end, float* amax) {
  bool finite = true;
  for (int64_t c = begin; c < end; ++c) {
    const float a = std::fabs(w[c]);
    finite &= a <= FLT_MAX;
    *amax = std::max(*amax, a);
  }
  return finite;
}

// q[c] = clamp(round-half-even(w[c] / s)) over [begin, end), errors in fp64 (s > 0).
void QuantizeScalar(const float* w, int64_t begin, int64_t end, double s, int8_t* q, ErrorSums* e) {
  for (int64_t c = begin; c < end; ++c) {
    const double ratio = RoundHalfEven(w[c] / s);  // |w/s| <= ~128
    const double qc = std::min(127.0, std::max(-127.0, ratio));
    const double err = w[c] - qc * s;
    q[c] = static_cast<int8_t>(qc);
    e->max_abs = std::max(e->max_abs, std::fabs(err));
    e->err2 += err * err;
    e->w2 += static_cast<double>(w[c]) * w[c];
    e->clipped += std::fabs(ratio) > 127.0;
  }
}

#if defined(__x86_64__)
// AVX2 (no FMA, so err = w - q*s rounds exactly like the scalar code). Returns the number of
// leading elements handled; the caller finishes the tail with the scalar functions.
__attribute__((target("avx2"))) int64_t AbsMaxAvx2(const float* w, int64_t in, float* amax,
                                                   bool* finite) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 flt_max = _mm256_set1_ps(FLT_MAX);
  __m256 vmax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= in; c += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(w + c), abs_mask);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, flt_max, _CMP_NLE_UQ));  // NaN or Inf
    vmax = _mm256_max_ps(vmax, a);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, vmax);
  for (float v : lanes) *amax = std::max(*amax, v);
  *finite = _mm256_testz_ps(bad, bad) != 0;
  return c;
}

__attribute__((target("avx2"))) int64_t QuantizeAvx2(const float* w, int64_t in, double s, int8_t* q,
                                                     ErrorSums* e) {
  const __m256d sv = _mm256_set1_pd(s), lim = _mm256_set1_pd(127.0), nlim = _mm256_set1_pd(-127.0);
  const __m256d abs_mask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
  __m256d emax = _mm256_setzero_pd(), err2 = _mm256_setzero_pd(), w2 = _mm256_setzero_pd();
  int64_t c = 0;
  for (; c + 4 <= in; c += 4) {
    const __m256d x = _mm256_cvtps_pd(_mm_loadu_ps(w + c));
    const __m256d ratio = _mm256_round_pd(_mm256_div_pd(x, sv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    e->clipped += __builtin_popcount(_mm256_movemask_pd(
        _mm256_cmp_pd(_mm256_and_pd(ratio, abs_mask), lim, _CMP_GT_OQ)));
    const __m256d qc = _mm256_min_pd(lim, _mm256_max_pd(nlim, ratio));
    const __m256d err = _mm256_sub_pd(x, _mm256_mul_pd(qc, sv));
    emax = _mm256_max_pd(emax, _mm256_and_pd(err, abs_mask));
    err2 = _mm256_add_pd(err2, _mm256_mul_pd(err, err));
    w2 = _mm256_add_pd(w2, _mm256_mul_pd(x, x));
    const __m128i i32 = _mm256_cvtpd_epi32(qc);  // exact: qc is integral
    const __m128i i16 = _mm_packs_epi32(i32, i32);
    const int32_t packed = _mm_cvtsi128_si32(_mm_packs_epi16(i16, i16));
    std::memcpy(q + c, &packed, 4);
  }
  double lanes[3][4];
  _mm256_storeu_pd(lanes[0], emax);
  _mm256_storeu_pd(lanes[1], err2);
  _mm256_storeu_pd(lanes[2], w2);
  for (int l = 0; l < 4; ++l) {
    e->max_abs = std::max(e->max_abs, lanes[0][l]);
    e->err2 += lanes[1][l];
    e->w2 += lanes[2][l];
  }
  return c;
}

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#else
bool HasAvx2() { return false; }
int64_t AbsMaxAvx2(const float*, int64_t, float*, bool*) { return 0; }
int64_t QuantizeAvx2(const float*, int64_t, double, int8_t*, ErrorSums*) { return 0; }
#endif

// One row: scale = max|w|/127 (fp32), q = clamp(round-half-even(w / scale)), errors in fp64.
// A scale that is 0 (zero row, or underflow) stores the row as zeros. False on NaN/Inf.
bool QuantizeRow(const float* w, int64_t in, int8_t* q, float* scale, ErrorSums* e) {
  float amax = 0;
  bool finite = true;
  const int64_t head = HasAvx2() ? AbsMaxAvx2(w, in, &amax, &finite) : 0;
  finite &= AbsMaxScalar(w, head, in, &amax);
  if (!finite) return false;
  *scale = static_cast<float>(static_cast<double>(amax) / 127.0);
  const double s = *scale;
  if (s == 0) {  // q = 0, error = w
    std::memset(q, 0, static_cast<size_t>(in));
    for (int64_t c = 0; c < in; ++c) {
      const double v = w[c];
      e->max_abs = std::max(e->max_abs, std::fabs(v));
      e->err2 += v * v;
      e->w2 += v * v;
    }
    return true;
  }
  const int64_t done = HasAvx2() ? QuantizeAvx2(w, in, s, q, e) : 0;
  QuantizeScalar(w, done, in, s, q, e);
  return true;
}

void FillStats(const ErrorSums& sums, int64_t numel, QuantStats* stats) {
  stats->max_abs_error = sums.max_abs;
  stats->rel_frobenius_error = sums.w2 > 0 ? std::sqrt(sums.err2 / sums.w2) : 0.0;
  stats->sqnr_db = sums.err2 > 0 ? 10.0 * std::log10(sums.w2 / sums.err2)
                                 : std::numeric_limits<double>::infinity();
  stats->clipped_fraction = numel ? static_cast<double>(sums.clipped) / numel : 0.0;
  stats->sum_sq = sums.w2;
}

// src: CPU [out, in] fp16/bf16/fp32. Quantizes rows [r0, r1) into m; returns the first row
// holding NaN/Inf, or -1. `buf` is the task's fp32 scratch.
int64_t QuantizeChunk(const at::Tensor& src, int64_t r0, int64_t r1, Int8Matrix& m,
                      std::vector<float>& buf, ErrorSums* sums) {
  const int64_t in = src.size(1);
  const float* rows = RowsAsFloat(src, r0, r1, buf);
  int8_t* q = m.q.data_ptr<int8_t>();
  float* scale = m.scale.data_ptr<float>();
  for (int64_t r = r0; r < r1; ++r) {
    if (!QuantizeRow(rows + (r - r0) * in, in, q + r * in, scale + r, sums)) return r;
  }
  return -1;
}

}  // namespace

const float* RowsAsFloat(const at::Tensor& m, int64_t r0, int64_t r1, std::vector<float>& buffer) {
  const int64_t in = m.size(1);
  if (m.scalar_type() == at::kFloat && m.is_contiguous()) return m.data_ptr<float>() + r0 * in;
  buffer.resize(static_cast<size_t>((r1 - r0) * in));
  at::from_blob(buffer.data(), {r1 - r0, in}, at::kFloat).copy_(m.slice(0, r0, r1));
  return buffer.data();
}

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
    const at::Tensor src = w.device().is_cpu() ? w : w.to(at::kCPU);
    const int64_t out = src.size(0), in = src.size(1);
    Int8Matrix m{at::empty({out, in}, at::kChar), at::empty({out}, at::kFloat)};
    const int64_t rows = RowsPerBlock(in);
    const int64_t chunks = (out + rows - 1) / rows;
    std::vector<ErrorSums> sums(chunks);  // per chunk, merged in order: deterministic stats
    std::vector<int64_t> bad(chunks, -1);
    at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
      std::vector<float> buf;
      for (int64_t i = b; i < e; ++i) {
        bad[i] = QuantizeChunk(src, i * rows, std::min(out, (i + 1) * rows), m, buf, &sums[i]);
      }
    });
    ErrorSums total;
    for (int64_t i = 0; i < chunks; ++i) {
      if (bad[i] >= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("quantize ", label, ": tensor holds NaN or Inf (row ", bad[i], ")"));
      }
      total.Add(sums[i]);
    }
    if (stats != nullptr) FillStats(total, w.numel(), stats);
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
