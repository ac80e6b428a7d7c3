#include "engine/model/fused_attention.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include <ATen/Parallel.h>

#include "quantization/simd_math.h"

#define MD_AVX512 __attribute__((target("avx512f")))

namespace moondream {
namespace {

constexpr int kL = 16;                   // fp32 lanes per zmm
constexpr int kMr = 4;                   // query rows per register tile
constexpr int kKeyNv = 6;                // zmm per key panel (96 keys)
constexpr int64_t kKeyPanel = kKeyNv * kL;
constexpr int kValNv = 5;                // zmm of value columns per tile (80 columns)

using simd::TailMask;

// s[r][j0 + c] = q_r · key(j0 + c) for the kMr query rows and one key panel ([hd][NV·16]).
template <int NV>
MD_AVX512 void ScoreTile(const float* const* q, int64_t hd, const float* panel, float* s,
                         int64_t lds) {
  __m512 acc[kMr * NV];
#pragma GCC unroll 32
  for (int i = 0; i < kMr * NV; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t d = 0; d < hd; ++d, panel += NV * kL) {
    __m512 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(panel + v * kL);
#pragma GCC unroll 8
    for (int r = 0; r < kMr; ++r) {
      const __m512 a = _mm512_set1_ps(q[r][d]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r * NV + v] = _mm512_fmadd_ps(a, b[v], acc[r * NV + v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kMr; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(s + r * lds + v * kL, acc[r * NV + v]);
  }
}

// out_r[c0 + c] = inv_sum[r] · Σ_j p[r][j] · val[j][c0 + c] for NV·16 columns (masked to hd);
// rows whose out pointer is null are computed and dropped.
template <int NV>
MD_AVX512 void ValueTile(const float* p, int64_t lds, const float* inv_sum, int64_t t,
                         const float* val, int64_t ldv, int64_t c0, int64_t hd,
                         float* const* out) {
  __m512 acc[kMr * NV];
#pragma GCC unroll 32
  for (int i = 0; i < kMr * NV; ++i) acc[i] = _mm512_setzero_ps();
  const float* vrow = val + c0;
  for (int64_t j = 0; j < t; ++j, vrow += ldv) {
    __m512 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(vrow + v * kL);
#pragma GCC unroll 8
    for (int r = 0; r < kMr; ++r) {
      const __m512 a = _mm512_set1_ps(p[r * lds + j]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r * NV + v] = _mm512_fmadd_ps(a, b[v], acc[r * NV + v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kMr; ++r) {
    if (out[r] == nullptr) continue;
    const __m512 scale = _mm512_set1_ps(inv_sum[r]);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const int64_t c = c0 + v * kL;
      _mm512_mask_storeu_ps(out[r] + c, TailMask(hd - c), _mm512_mul_ps(acc[r * NV + v], scale));
    }
  }
}

using ScoreFn = void (*)(const float* const*, int64_t, const float*, float*, int64_t);
using ValueFn = void (*)(const float*, int64_t, const float*, int64_t, const float*, int64_t,
                         int64_t, int64_t, float* const*);
constexpr ScoreFn kScoreTiles[kKeyNv] = {&ScoreTile<1>, &ScoreTile<2>, &ScoreTile<3>,
                                         &ScoreTile<4>, &ScoreTile<5>, &ScoreTile<6>};
constexpr ValueFn kValueTiles[kValNv] = {&ValueTile<1>, &ValueTile<2>, &ValueTile<3>,
                                         &ValueTile<4>, &ValueTile<5>};

// Row r of s over [0, t): s <- exp(scale·(s − max)); returns 1 / Σ.
MD_AVX512 float SoftmaxRow(float* s, int64_t t, float scale) {
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < t; j += kL) {
    mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), TailMask(t - j), s + j));
  }
  const __m512 vs = _mm512_set1_ps(scale);
  const __m512 shift = _mm512_set1_ps(_mm512_reduce_max_ps(mx) * scale);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < t; j += kL) {
    const __mmask16 m = TailMask(t - j);
    const __m512 e = simd::Exp(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, s + j), vs, shift));
    _mm512_mask_storeu_ps(s + j, m, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
  }
  return 1.f / _mm512_reduce_add_ps(sum);
}


struct Shape {
  int64_t t, heads, hd, ld;  // ld: qkv row stride (elements)
  int64_t panels, lds, ldv;  // key panels, score row stride, packed value row stride
};

// One head: pack its keys (panels [hd][96], zero padded) and values ([t][ldv]), then every
// block of kMr query rows: scores, softmax, · values.
MD_AVX512 void Head(const Shape& sh, const float* qkv, int64_t h, float* out, float* kp,
                    float* vp, float* s) {
  const int64_t d_model = sh.heads * sh.hd;
  const float* q0 = qkv + h * sh.hd;
  const float* k0 = q0 + d_model;
  const float* v0 = k0 + d_model;
  for (int64_t j = 0; j < sh.t; ++j) {
    const int64_t p = j / kKeyPanel, jj = j % kKeyPanel;
    const int64_t width = std::min<int64_t>(kKeyPanel, (sh.t - p * kKeyPanel + kL - 1) / kL * kL);
    float* panel = kp + p * kKeyPanel * sh.hd;
    const float* k = k0 + j * sh.ld;
    for (int64_t d = 0; d < sh.hd; ++d) panel[d * width + jj] = k[d];
    std::copy(v0 + j * sh.ld, v0 + j * sh.ld + sh.hd, vp + j * sh.ldv);
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(sh.hd)));
  float inv_sum[kMr];
  for (int64_t r0 = 0; r0 < sh.t; r0 += kMr) {
    const float* q[kMr];
    float* o[kMr];
    for (int r = 0; r < kMr; ++r) {
      const int64_t row = std::min(r0 + r, sh.t - 1);  // rows past the end repeat the last
      q[r] = q0 + row * sh.ld;
      o[r] = r0 + r < sh.t ? out + row * d_model + h * sh.hd : nullptr;
    }
    for (int64_t p = 0; p < sh.panels; ++p) {
      const int64_t width = std::min<int64_t>(kKeyPanel, (sh.t - p * kKeyPanel + kL - 1) / kL * kL);
      kScoreTiles[width / kL - 1](q, sh.hd, kp + p * kKeyPanel * sh.hd, s + p * kKeyPanel,
                                  sh.lds);
    }
    for (int r = 0; r < kMr; ++r) inv_sum[r] = SoftmaxRow(s + r * sh.lds, sh.t, scale);
    for (int64_t c0 = 0; c0 < sh.hd; c0 += kValNv * kL) {
      const int64_t nv = std::min<int64_t>(kValNv, (sh.hd - c0 + kL - 1) / kL);
      kValueTiles[nv - 1](s, sh.lds, inv_sum, sh.t, vp, sh.ldv, c0, sh.hd, o);
    }
  }
}

}  // namespace

bool FusedAttentionSupported() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

at::Tensor FusedSelfAttention(const at::Tensor& qkv, int64_t heads) {
  TORCH_CHECK(FusedAttentionSupported(), "FusedSelfAttention needs AVX-512");
  TORCH_CHECK(qkv.dim() == 2 && qkv.scalar_type() == at::kFloat && qkv.device().is_cpu() &&
                  heads > 0 && qkv.size(1) % (3 * heads) == 0 && qkv.stride(1) == 1 &&
                  qkv.size(0) > 0,
              "FusedSelfAttention: qkv must be fp32 [T > 0, 3·heads·hd] on CPU with "
              "contiguous rows");
  Shape sh;
  sh.t = qkv.size(0);
  sh.heads = heads;
  sh.hd = qkv.size(1) / (3 * heads);
  sh.ld = qkv.stride(0);
  sh.panels = (sh.t + kKeyPanel - 1) / kKeyPanel;
  sh.lds = (sh.t + kL - 1) / kL * kL;
  sh.ldv = (sh.hd + kL - 1) / kL * kL;
  at::Tensor out = at::empty({sh.t, heads * sh.hd}, qkv.options());
  const float* src = qkv.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  // Heads handed out dynamically: a thread the OS deschedules does not hold up the other.
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::vector<float> kp(sh.panels * kKeyPanel * sh.hd, 0.f), vp(sh.t * sh.ldv, 0.f),
        s(kMr * sh.lds, 0.f);
    for (int64_t h = next.fetch_add(1); h < heads; h = next.fetch_add(1)) {
      Head(sh, src, h, dst, kp.data(), vp.data(), s.data());
    }
  });
  return out;
}

}  // namespace moondream
