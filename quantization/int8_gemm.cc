#include "quantization/int8_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <utility>

#include <ATen/Parallel.h>

#include "quantization/simd_math.h"

#define MOONDREAM_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

namespace moondream::quant::internal {
namespace {

constexpr int64_t kPanel = 64;     // output columns per panel (4 zmm of int32)
constexpr int64_t kLane = 16;      // int32 lanes per zmm
constexpr int kMr = 6;             // activation rows per register tile (6 x 4 zmm accumulators)
constexpr int kNvMax = kPanel / kLane;
// Loop order: a work unit runs every activation row of a block past one panel, so the panel
// (k x 64 bytes, <= 512 KiB) stays in L2 while the activations stream from L3 at ~2
// bytes/cycle. Row blocks of <= 8 MiB keep that stream in L3 (vision batches reach ~9500 x
// 4304 bytes).
constexpr int64_t kActivationBlockBytes = 8 << 20;

int64_t PanelWidth(int64_t n, int64_t p) {  // columns stored in panel p (multiple of 16)
  const int64_t rest = std::min(kPanel, n - p * kPanel);
  return (rest + kLane - 1) / kLane * kLane;
}

// One register tile: MR activation rows x NV*16 output columns of one panel, full k.
struct TileArgs {
  const uint8_t* a;       // [MR][lda] u8 activations (+128 offset), row mr0
  int64_t lda;
  const float* a_scale;   // [MR]
  const int8_t* b;        // panel start
  int64_t k4;
  int64_t n0, n;          // first column of the panel, total columns
  const int32_t* row_sum; // [n]
  const float* w_scale;   // [n]
  const float* bias;      // [n] or null
  float* y;               // row mr0, column 0
  int64_t ldy;
  bool gelu;              // apply GELU (tanh approximation) to y
};
using TileFn = void (*)(const TileArgs&);

// Scales the int32 sums of one tile (acc[r][c], c relative to the panel) into y.
MOONDREAM_VNNI void Epilogue(const TileArgs& t, int mr, int nv, const int32_t* acc) {
  for (int v = 0; v < nv; ++v) {
    const int64_t c = t.n0 + v * kLane;
    const __mmask16 m = simd::TailMask(t.n - c);
    const __m512i rs = _mm512_maskz_loadu_epi32(m, t.row_sum + c);
    const __m512 ws = _mm512_maskz_loadu_ps(m, t.w_scale + c);
    const __m512 bias = t.bias ? _mm512_maskz_loadu_ps(m, t.bias + c) : _mm512_setzero_ps();
    for (int r = 0; r < mr; ++r) {
      const __m512i a = _mm512_loadu_si512(acc + (r * nv + v) * kLane);
      const __m512 f = _mm512_cvtepi32_ps(_mm512_sub_epi32(a, rs));
      const __m512 s = _mm512_mul_ps(_mm512_set1_ps(t.a_scale[r]), ws);
      __m512 out = _mm512_fmadd_ps(f, s, bias);
      if (t.gelu) out = simd::GeluTanh(out);
      _mm512_mask_storeu_ps(t.y + r * t.ldy + c, m, out);
    }
  }
}

// The register tile. Every loop over the accumulators is fully unrolled so GCC keeps them
// in zmm registers (a loop it does not unroll makes it spill the array every iteration).
template <int MR, int NV>
MOONDREAM_VNNI void Tile(const TileArgs& t) {
  __m512i acc[MR * NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR * NV; ++i) acc[i] = _mm512_setzero_si512();
  const int8_t* b = t.b;
  const uint8_t* a = t.a;
  for (int64_t kg = 0; kg < t.k4; ++kg, b += NV * 64, a += 4) {
    __m512i bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_si512(b + v * 64);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      int32_t a4;
      std::memcpy(&a4, a + r * t.lda, 4);
      const __m512i av = _mm512_set1_epi32(a4);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r * NV + v] = _mm512_dpbusd_epi32(acc[r * NV + v], av, bv[v]);
    }
  }
  alignas(64) int32_t out[MR * NV * kLane];
#pragma GCC unroll 32
  for (int i = 0; i < MR * NV; ++i) _mm512_store_si512(out + i * kLane, acc[i]);
  Epilogue(t, MR, NV, out);
}

template <int MR, size_t... V>
constexpr std::array<TileFn, kNvMax> TileRow(std::index_sequence<V...>) {
  return {&Tile<MR, static_cast<int>(V) + 1>...};
}
template <size_t... R>
constexpr std::array<std::array<TileFn, kNvMax>, kMr> TileTable(std::index_sequence<R...>) {
  return {TileRow<static_cast<int>(R) + 1>(std::make_index_sequence<kNvMax>{})...};
}
// kTiles[mr - 1][nv - 1]
constexpr auto kTiles = TileTable(std::make_index_sequence<kMr>{});

// x[k] -> out[lda] u8 = clamp(round(x * 127/max|x|), -127, 127) + 128; padding = 128.
// A row holding NaN/Inf gets scale NaN so its outputs are NaN, as in floating point; a row
// whose 127/max|x| overflows fp32 is quantized as zeros.
MOONDREAM_VNNI void QuantizeRow(const float* x, int64_t k, int64_t lda, uint8_t* out,
                                float* scale) {
  __m512 amax = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (int64_t i = 0; i < k; i += kLane) {
    const __mmask16 m = simd::TailMask(k - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    bad |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
  }
  const float mx = _mm512_reduce_max_ps(amax);
  std::memset(out, 128, static_cast<size_t>(lda));
  if (bad || !std::isfinite(mx)) {
    *scale = std::nanf("");
    return;
  }
  const float inv_scale = 127.f / mx;
  if (std::isinf(inv_scale)) {  // max|x| below ~3.7e-38 (or 0): a zero row, y = bias
    *scale = 0.f;
    return;
  }
  *scale = mx / 127.f;
  const __m512 inv = _mm512_set1_ps(inv_scale);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  const __m512i off = _mm512_set1_epi32(128);
  for (int64_t i = 0; i < k; i += kLane) {
    const __mmask16 m = simd::TailMask(k - i);
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), off);
    _mm512_mask_cvtepi32_storeu_epi8(out + i, m, q);
  }
}

}  // namespace

bool CpuHasVnni() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512vnni");
  return has;
}

PackedWeight PackWeight(const at::Tensor& q) {
  TORCH_CHECK(q.dim() == 2 && q.scalar_type() == at::kChar && q.device().is_cpu(),
              "PackWeight: need int8 [n, k] on CPU");
  const at::Tensor qc = q.contiguous();
  PackedWeight w;
  w.n = qc.size(0);
  w.k = qc.size(1);
  w.k4 = (w.k + 3) / 4;
  const int64_t panels = (w.n + kPanel - 1) / kPanel;
  const int64_t total = panels == 0 ? 0 : ((panels - 1) * kPanel + PanelWidth(w.n, panels - 1)) * w.k4 * 4;
  w.data = at::zeros({total}, at::kChar);
  // 128 * sum of each row: the u8 activation offset's correction, summed while
  // reordering (a qc.sum() would first widen the whole matrix to int32).
  w.row_sum = at::empty({w.n}, at::kInt);
  const int8_t* src = qc.data_ptr<int8_t>();
  int8_t* dst = w.data.data_ptr<int8_t>();
  int32_t* row_sum = w.row_sum.data_ptr<int32_t>();
  at::parallel_for(0, panels, 1, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      const int64_t width = PanelWidth(w.n, p);
      int8_t* panel = dst + p * kPanel * w.k4 * 4;
      for (int64_t c = 0; c < std::min(width, w.n - p * kPanel); ++c) {
        const int8_t* row = src + (p * kPanel + c) * w.k;
        int32_t sum = 0;
        for (int64_t kk = 0; kk < w.k; ++kk) {
          panel[(kk / 4) * width * 4 + c * 4 + kk % 4] = row[kk];
          sum += row[kk];
        }
        row_sum[p * kPanel + c] = 128 * sum;
      }
    }
  });
  return w;
}

namespace {

// Every register tile of rows [r0, r1) against panel p.
void RunPanel(TileArgs t, const PackedWeight& w, int64_t p, int64_t r0, int64_t r1) {
  const int64_t nv = PanelWidth(w.n, p) / kLane;
  t.b += p * kPanel * w.k4 * 4;
  t.n0 = p * kPanel;
  const uint8_t* a = t.a;
  const float* a_scale = t.a_scale;
  float* y = t.y;
  for (int64_t r = r0; r < r1; r += kMr) {
    t.a = a + r * t.lda;
    t.a_scale = a_scale + r;
    t.y = y + r * t.ldy;
    kTiles[std::min<int64_t>(kMr, r1 - r) - 1][nv - 1](t);
  }
}

}  // namespace

at::Tensor Int8Gemm(const PackedWeight& w, const at::Tensor& w_scale, const at::Tensor& bias,
                    const at::Tensor& x, Activation act) {
  TORCH_CHECK(CpuHasVnni(), "Int8Gemm needs AVX-512 VNNI");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == w.k && x.scalar_type() == at::kFloat &&
                  x.is_contiguous() && x.device().is_cpu(),
              "Int8Gemm: x must be contiguous fp32 [m, ", w.k, "] on CPU");
  const int64_t m = x.size(0), lda = w.k4 * 4;
  at::Tensor a = at::empty({m, lda}, at::kByte);
  at::Tensor a_scale = at::empty({m}, at::kFloat);
  const float* xp = x.data_ptr<float>();
  at::parallel_for(0, m, 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      QuantizeRow(xp + r * w.k, w.k, lda, a.data_ptr<uint8_t>() + r * lda, a_scale.data_ptr<float>() + r);
  });

  at::Tensor y = at::empty({m, w.n}, at::kFloat);
  const TileArgs base{a.data_ptr<uint8_t>(), lda,     a_scale.data_ptr<float>(), w.data.data_ptr<int8_t>(),
                      w.k4,                  0,       w.n,                      w.row_sum.data_ptr<int32_t>(),
                      w_scale.data_ptr<float>(), bias.defined() ? bias.data_ptr<float>() : nullptr,
                      y.data_ptr<float>(),   w.n,
                      act == Activation::kGeluTanh};
  // Work units (row block, panel) in row-block-major order, handed out dynamically in runs of
  // `grab` consecutive panels: a thread that the OS deschedules (shared machine, gRPC threads)
  // does not hold up the other, and decode streams still read long contiguous runs.
  const int64_t panels = (w.n + kPanel - 1) / kPanel;
  const int64_t mc = std::max<int64_t>(kMr, kActivationBlockBytes / std::max<int64_t>(lda, 1) / kMr * kMr);
  const int64_t units = (m + mc - 1) / mc * panels;
  const int64_t threads = at::get_num_threads();
  const int64_t grab = std::max<int64_t>(1, units / (8 * threads));
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t u0 = next.fetch_add(grab); u0 < units; u0 = next.fetch_add(grab)) {
      for (int64_t u = u0; u < std::min(units, u0 + grab); ++u) {
        const int64_t r0 = u / panels * mc;
        RunPanel(base, w, u % panels, r0, std::min(m, r0 + mc));
      }
    }
  });
  return y;
}

}  // namespace moondream::quant::internal
