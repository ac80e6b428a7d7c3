#include "engine/model/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include <ATen/Parallel.h>

#include "engine/model/torch_compat.h"
#include "quantization/simd_math.h"

#define MOONDREAM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

namespace moondream {
namespace {

using simd::TailMask;

constexpr int64_t kLanes = 16;
constexpr int64_t kScoreBudgetBytes = 8ll << 20;  // fp32 scores per attention call

bool CpuHasAvx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}

// One segment of one layer's cache as raw rows: row j of head h starts at
// base + h * head_stride + j * row_stride (elements).
struct Rows {
  const void* keys;
  const void* values;
  int64_t n, head_stride, row_stride;
  const float* key_scales = nullptr;  // int8: scale of row j of head h at
  const float* value_scales = nullptr;  // [h * scale_head_stride + j]
  int64_t scale_head_stride = 0;
};

template <typename T>
MOONDREAM_AVX512 __m512 Load(const T* p, __mmask16 m);

template <>
MOONDREAM_AVX512 __m512 Load<float>(const float* p, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, p);
}

template <>
MOONDREAM_AVX512 __m512 Load<int8_t>(const int8_t* p, __mmask16 m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
}

// Row j's dequantization scale (int8 rows), 1 for float rows.
template <typename T>
float RowScale(const float* scales, int64_t j) {
  return std::is_same<T, int8_t>::value ? scales[j] : 1.f;
}

template <>
MOONDREAM_AVX512 __m512 Load<c10::BFloat16>(const c10::BFloat16* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);  // bf16 = the high half of an fp32
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// scores[j] = (q · k_j) * scale for the segment's rows of head h; CH = head_dim / 16 chunks
// (CH = 0: any head_dim, masked tails). Four keys per iteration keep four independent FMA
// chains in flight.
template <typename T, int CH>
MOONDREAM_AVX512 void Scores(const float* q, int64_t hd, float scale, const Rows& rows,
                             int64_t h, float* scores) {
  const int64_t chunks = CH > 0 ? CH : (hd + kLanes - 1) / kLanes;
  const T* k = static_cast<const T*>(rows.keys) + h * rows.head_stride;
  const float* ks = rows.key_scales + h * rows.scale_head_stride;  // int8 only
  int64_t j = 0;
  if (CH > 0) {
    for (; j + 4 <= rows.n; j += 4, k += 4 * rows.row_stride) {
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                       _mm512_setzero_ps()};
#pragma GCC unroll 16
      for (int c = 0; c < CH; ++c) {
        const __m512 qc = _mm512_loadu_ps(q + c * kLanes);
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
          acc[r] = _mm512_fmadd_ps(qc, Load(k + r * rows.row_stride + c * kLanes, 0xffff), acc[r]);
        }
      }
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        scores[j + r] = _mm512_reduce_add_ps(acc[r]) * scale * RowScale<T>(ks, j + r);
      }
    }
  }
  for (; j < rows.n; ++j, k += rows.row_stride) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t c = 0; c < chunks; ++c) {
      const __mmask16 m = TailMask(hd - c * kLanes);
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + c * kLanes), Load(k + c * kLanes, m), acc);
    }
    scores[j] = _mm512_reduce_add_ps(acc) * scale * RowScale<T>(ks, j);
  }
}

// out[0..hd) += sum_j p[j] * v_j over the segment's rows of head h (CH as in Scores). Two
// keys per iteration with separate accumulators, summed at the end.
template <typename T, int CH>
MOONDREAM_AVX512 void Mix(const float* p, int64_t hd, const Rows& rows, int64_t h, float* out) {
  const T* v = static_cast<const T*>(rows.values) + h * rows.head_stride;
  const float* vs = rows.value_scales + h * rows.scale_head_stride;  // int8 only
  if (CH > 0) {
    __m512 a[CH], b[CH];
#pragma GCC unroll 16
    for (int c = 0; c < CH; ++c) {
      a[c] = _mm512_loadu_ps(out + c * kLanes);
      b[c] = _mm512_setzero_ps();
    }
    int64_t j = 0;
    for (; j + 2 <= rows.n; j += 2, v += 2 * rows.row_stride) {
      const __m512 p0 = _mm512_set1_ps(p[j] * RowScale<T>(vs, j));
      const __m512 p1 = _mm512_set1_ps(p[j + 1] * RowScale<T>(vs, j + 1));
#pragma GCC unroll 16
      for (int c = 0; c < CH; ++c) {
        a[c] = _mm512_fmadd_ps(p0, Load(v + c * kLanes, 0xffff), a[c]);
        b[c] = _mm512_fmadd_ps(p1, Load(v + rows.row_stride + c * kLanes, 0xffff), b[c]);
      }
    }
    if (j < rows.n) {
      const __m512 p0 = _mm512_set1_ps(p[j] * RowScale<T>(vs, j));
#pragma GCC unroll 16
      for (int c = 0; c < CH; ++c) a[c] = _mm512_fmadd_ps(p0, Load(v + c * kLanes, 0xffff), a[c]);
    }
#pragma GCC unroll 16
    for (int c = 0; c < CH; ++c) _mm512_storeu_ps(out + c * kLanes, _mm512_add_ps(a[c], b[c]));
    return;
  }
  for (int64_t j = 0; j < rows.n; ++j, v += rows.row_stride) {  // any head_dim: via memory
    const __m512 pj = _mm512_set1_ps(p[j] * RowScale<T>(vs, j));
    for (int64_t c = 0; c < hd; c += kLanes) {
      const __mmask16 m = TailMask(hd - c);
      _mm512_mask_storeu_ps(out + c, m, _mm512_fmadd_ps(pj, Load(v + c, m), _mm512_maskz_loadu_ps(m, out + c)));
    }
  }
}

// The fused single-row kernel: scores of every head, one softmax, then the weighted sum.
template <typename T, int CH>
at::Tensor DecodeAttention(const at::Tensor& q, const std::vector<Rows>& segments, int64_t end) {
  const int64_t heads = q.size(0), hd = q.size(2);
  const at::Tensor qf = q.to(at::kFloat).contiguous();  // [H, 1, hd]
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  at::Tensor scores = at::empty({heads, end}, at::kFloat);
  float* s = scores.data_ptr<float>();
  const float* qp = qf.data_ptr<float>();
  at::parallel_for(0, heads, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      int64_t off = 0;
      for (const Rows& rows : segments) {
        Scores<T, CH>(qp + h * hd, hd, scale, rows, h, s + h * end + off);
        off += rows.n;
      }
    }
  });
  const at::Tensor probs = at::softmax(scores, -1);  // [H, end]
  const float* p = probs.data_ptr<float>();
  at::Tensor out = at::zeros({heads, 1, hd}, at::kFloat);
  float* o = out.data_ptr<float>();
  at::parallel_for(0, heads, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      int64_t off = 0;
      for (const Rows& rows : segments) {
        Mix<T, CH>(p + h * end + off, hd, rows, h, o + h * hd);
        off += rows.n;
      }
    }
  });
  return out.to(q.scalar_type());
}

// Unrolled kernels for the common head sizes (text: 64), per cache dtype.
template <typename T>
at::Tensor DispatchHeadDim(const at::Tensor& q, const std::vector<Rows>& rows, int64_t end) {
  switch (q.size(2)) {
    case 64: return DecodeAttention<T, 4>(q, rows, end);
    case 128: return DecodeAttention<T, 8>(q, rows, end);
    default: return DecodeAttention<T, 0>(q, rows, end);
  }
}

at::Tensor Dispatch(at::ScalarType dtype, const at::Tensor& q, const std::vector<Rows>& rows,
                    int64_t end) {
  switch (dtype) {
    case at::kFloat: return DispatchHeadDim<float>(q, rows, end);
    case at::kChar: return DispatchHeadDim<int8_t>(q, rows, end);
    default: return DispatchHeadDim<c10::BFloat16>(q, rows, end);
  }
}

bool FusedApplies(const at::Tensor& q, const std::vector<KvSegment>& kv) {
  if (q.size(1) != 1 || !q.device().is_cpu() || !CpuHasAvx512()) return false;
  const at::ScalarType dtype = kv.front().keys.scalar_type();
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kChar) return false;
  for (const KvSegment& seg : kv) {
    if (seg.keys.scalar_type() != dtype || seg.values.scalar_type() != dtype ||
        seg.keys.strides() != seg.values.strides() || seg.keys.stride(2) != 1) {
      return false;
    }
    if (dtype == at::kChar &&
        (seg.key_scales.stride(1) != 1 || seg.key_scales.strides() != seg.value_scales.strides())) {
      return false;
    }
  }
  return true;
}

at::Tensor Fused(const at::Tensor& q, const std::vector<KvSegment>& kv) {
  std::vector<Rows> rows;
  int64_t end = 0;
  for (const KvSegment& seg : kv) {
    Rows r{seg.keys.data_ptr(), seg.values.data_ptr(), seg.keys.size(1), seg.keys.stride(0),
           seg.keys.stride(1)};
    if (seg.key_scales.defined()) {
      r.key_scales = seg.key_scales.data_ptr<float>();
      r.value_scales = seg.value_scales.data_ptr<float>();
      r.scale_head_stride = seg.key_scales.stride(0);
    }
    rows.push_back(r);
    end += seg.keys.size(1);
  }
  return Dispatch(kv.front().keys.scalar_type(), q, rows, end);
}

// An int8 segment's rows in fp32 (rows * scales); other dtypes as they are.
at::Tensor Dequantized(const at::Tensor& rows, const at::Tensor& scales) {
  return scales.defined() ? rows.to(at::kFloat).mul_(scales.unsqueeze(-1)) : rows;
}

at::Tensor Joined(const std::vector<at::Tensor>& parts) {
  return parts.size() == 1 ? parts.front() : at::cat(parts, 1);
}

// Sdpa over the joined segments, a group of heads at a time.
at::Tensor Chunked(const at::Tensor& q, const std::vector<KvSegment>& kv, const at::Tensor& mask) {
  std::vector<at::Tensor> keys, values;
  for (const KvSegment& seg : kv) {
    keys.push_back(Dequantized(seg.keys, seg.key_scales));
    values.push_back(Dequantized(seg.values, seg.value_scales));
  }
  const at::Tensor k = Joined(keys), v = Joined(values);  // [H, end, hd]
  const int64_t heads = q.size(0), t = q.size(1), end = k.size(1);
  const int64_t group = std::max<int64_t>(1, kScoreBudgetBytes / (t * end * 4));
  if (group >= heads) return Sdpa(q, k, v, mask);
  at::Tensor out = at::empty_like(q);
  for (int64_t h = 0; h < heads; h += group) {
    const int64_t n = std::min(group, heads - h);
    out.narrow(0, h, n).copy_(Sdpa(q.narrow(0, h, n), k.narrow(0, h, n), v.narrow(0, h, n), mask));
  }
  return out;
}

}  // namespace

at::Tensor CachedAttention(const at::Tensor& q, const std::vector<KvSegment>& kv,
                           const at::Tensor& mask) {
  TORCH_CHECK(q.dim() == 3 && !kv.empty(), "attention: q must be [H, T, hd] with >= 1 segment");
  if (!mask.defined() && FusedApplies(q, kv)) return Fused(q, kv);
  return Chunked(q, kv, mask);
}

}  // namespace moondream
