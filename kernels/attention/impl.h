// The fp32 attention kernels, written once against F16 (kernels/simd/README.md). Each
// attention/<isa>.cc includes its standard headers, pushes its target, includes its
// vec16_<isa>.h and then this file, and instantiates the kernels with its register tiles.
//
// Invariant (the exactness contract of kernels.h): every output element is computed by the
// same sequence of F16 operations whatever the tile sizes, so all ISAs agree bit for bit:
//  - self-attention: a score is one fma chain over d = 0..hd-1 (broadcast q[d] times a
//    packed key lane); SoftmaxRow with the scale folded into the exponent; an output
//    element is one fma chain over the keys in order, times 1 / sum;
//  - decode: a score is an fma chain over the 16-wide chunks of d, ReduceAdd, times scale,
//    times the row scale; SoftmaxRow with scale 1; an output element chains the weights
//    e_j * row scale_j of each segment's even rows onto one accumulator (carried across
//    segments) and its odd rows onto a second one from 0, added at the segment's end;
//    times 1 / sum.
// Tiles only choose how many such chains run side by side.
//
// Needs, included before the target push: <omp.h>, <algorithm>, <array>, <atomic>,
// <cmath>, <cstdint>, <type_traits>, <utility> and kernels/kernels.h.
#pragma once

namespace moondream::kernels {
namespace {
namespace attention {

constexpr int64_t kL = 16;  // F16 lanes

inline int64_t RoundUp(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

inline float Scale(int64_t hd) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
}

// Register tiles of one ISA. Self-attention: kRows query rows at a time, key panels of
// kKeyNv * 16 keys (<= 128, the workspace's panel bound), value tiles of kValNv * 16
// columns. Decode: output columns in blocks of kMixNv * 16.
template <int Rows, int KeyNv, int ValNv, int MixNv>
struct Tiles {
  static_assert(Rows >= 1 && Rows <= 8, "the workspace holds scores of 8 query rows");
  static_assert(KeyNv >= 1 && KeyNv <= 8, "key panels hold at most 128 keys");
  static constexpr int kRows = Rows, kKeyNv = KeyNv, kValNv = ValNv, kMixNv = MixNv;
};

// Function-pointer table {F<1>, ..., F<N>}: tiles narrowed at a tail, picked at run time.
template <typename Fn, template <int> class Make, size_t... I>
constexpr std::array<Fn, sizeof...(I)> TableOf(std::index_sequence<I...>) {
  return {Make<static_cast<int>(I) + 1>::fn...};
}

// ---- softmax ---------------------------------------------------------------------------

// s[0, n) <- Exp(fma(s, scale, -(max * scale))), max over s[0, n); returns 1 / their sum.
// The sum adds 16-wide chunks lane-wise in order (the tail chunk's missing lanes are 0),
// then ReduceAdd. n >= 1.
inline float SoftmaxRow(float* s, int64_t n, float scale) {
  const int64_t full = n / kL * kL;
  F16 mx = Set1(-INFINITY);
  for (int64_t j = 0; j < full; j += kL) mx = Max(mx, Load(s + j));
  float m = ReduceMax(mx);  // the max of a set: the same whatever the order
  for (int64_t j = full; j < n; ++j) m = s[j] > m ? s[j] : m;
  const F16 vscale = Set1(scale), shift = Set1(-(m * scale));
  F16 sum = Zero();
  for (int64_t j = 0; j < full; j += kL) {
    const F16 e = Exp(Fma(Load(s + j), vscale, shift));
    Store(s + j, e);
    sum = Add(sum, e);
  }
  if (full < n) {
    StoreN(s + full, Exp(Fma(LoadN(s + full, n - full), vscale, shift)), n - full);
    sum = Add(sum, LoadN(s + full, n - full));
  }
  return 1.f / ReduceAdd(sum);
}

// ---- self-attention ----------------------------------------------------------------------

// s[r][j0 + c] = sum_d q_r[d] * key(j0 + c)[d] for R query rows and one key panel
// ([hd][NV * 16], zero-padded past t), one fma chain per score from d = 0.
template <int R, int NV>
void ScoreTile(const float* const* q, int64_t hd, const float* panel, float* s, int64_t lds) {
  F16 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = Zero();
  }
  for (int64_t d = 0; d < hd; ++d, panel += NV * kL) {
    F16 k[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) k[v] = Load(panel + v * kL);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const F16 a = Set1(q[r][d]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = Fma(a, k[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) Store(s + r * lds + v * kL, acc[r][v]);
  }
}

// out_r[c0 + c] = inv_sum[r] * sum_{j < t} p[r][j] * val[j][c0 + c] for NV * 16 columns,
// stored up to hd; rows whose out pointer is null are computed and dropped.
template <int R, int NV>
void ValueTile(const float* p, int64_t lds, const float* inv_sum, int64_t t, const float* val,
               int64_t ldv, int64_t c0, int64_t hd, float* const* out) {
  F16 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = Zero();
  }
  const float* vrow = val + c0;
  for (int64_t j = 0; j < t; ++j, vrow += ldv) {
    F16 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = Load(vrow + v * kL);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const F16 a = Set1(p[r * lds + j]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = Fma(a, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    if (out[r] == nullptr) continue;
    const F16 scale = Set1(inv_sum[r]);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const int64_t c = c0 + v * kL;
      StoreN(out[r] + c, Mul(acc[r][v], scale), hd - c);
    }
  }
}

struct Shape {
  int64_t t, ld, heads, hd;
  int64_t hd16;  // packed value row stride: hd rounded up to 16, zero padded
  int64_t lds;   // score row stride: t rounded up to 16
};

// Head h's keys into panels of up to P keys, panel p at kp + p * P * hd laid out
// [hd][width] (width: its keys rounded up to 16, zero padded), and its values into
// vp [t][hd16] (zero padded).
template <int64_t P>
void PackHead(const Shape& sh, const float* qkv, int64_t h, float* kp, float* vp) {
  const float* k0 = qkv + (sh.heads + h) * sh.hd;
  const float* v0 = qkv + (2 * sh.heads + h) * sh.hd;
  for (int64_t j0 = 0; j0 < sh.t; j0 += P) {
    const int64_t keys = std::min(P, sh.t - j0), width = RoundUp(keys, kL);
    float* panel = kp + j0 * sh.hd;
    for (int64_t jj = 0; jj < width; ++jj) {
      const float* k = k0 + (j0 + jj) * sh.ld;
      for (int64_t d = 0; d < sh.hd; ++d) panel[d * width + jj] = jj < keys ? k[d] : 0.f;
    }
  }
  for (int64_t j = 0; j < sh.t; ++j) {
    float* row = vp + j * sh.hd16;
    std::copy(v0 + j * sh.ld, v0 + j * sh.ld + sh.hd, row);
    std::fill(row + sh.hd, row + sh.hd16, 0.f);
  }
}

template <typename Tl>
struct Self {
  static constexpr int kR = Tl::kRows;
  static constexpr int64_t kPanel = Tl::kKeyNv * kL;

  template <int NV>
  struct ScoreOf {
    static constexpr auto fn = &ScoreTile<kR, NV>;
  };
  template <int NV>
  struct ValueOf {
    static constexpr auto fn = &ValueTile<kR, NV>;
  };
  using ScoreFn = decltype(&ScoreTile<kR, 1>);
  using ValueFn = decltype(&ValueTile<kR, 1>);
  static constexpr std::array<ScoreFn, Tl::kKeyNv> kScore =
      TableOf<ScoreFn, ScoreOf>(std::make_index_sequence<Tl::kKeyNv>());
  static constexpr std::array<ValueFn, Tl::kValNv> kValue =
      TableOf<ValueFn, ValueOf>(std::make_index_sequence<Tl::kValNv>());

  // Query rows [r0, r0 + R) of head h (rows past t repeat the last and are dropped):
  // scores against every key panel, softmax, times the values.
  static void RowBlock(const Shape& sh, const float* qkv, int64_t h, int64_t r0,
                       const float* kp, const float* vp, float* s, float* out) {
    const float* q[kR];
    float* o[kR];
    for (int r = 0; r < kR; ++r) {
      const int64_t row = std::min(r0 + r, sh.t - 1);
      q[r] = qkv + row * sh.ld + h * sh.hd;
      o[r] = r0 + r < sh.t ? out + row * sh.heads * sh.hd + h * sh.hd : nullptr;
    }
    for (int64_t j0 = 0; j0 < sh.t; j0 += kPanel) {
      const int64_t width = std::min(kPanel, RoundUp(sh.t - j0, kL));
      kScore[width / kL - 1](q, sh.hd, kp + j0 * sh.hd, s + j0, sh.lds);
    }
    float inv_sum[kR];
    const float scale = Scale(sh.hd);
    for (int r = 0; r < kR; ++r) inv_sum[r] = SoftmaxRow(s + r * sh.lds, sh.t, scale);
    for (int64_t c0 = 0; c0 < sh.hd; c0 += Tl::kValNv * kL) {
      const int64_t nv = std::min<int64_t>(Tl::kValNv, (sh.hd - c0 + kL - 1) / kL);
      kValue[nv - 1](s, sh.lds, inv_sum, sh.t, vp, sh.hd16, c0, sh.hd, o);
    }
  }

  // One thread's region of the workspace (SelfAttentionWorkspaceBytes(t, hd, 1) bytes):
  // key panels, then values, then scores.
  static void Head(const Shape& sh, const float* qkv, int64_t h, float* region, float* out) {
    float* kp = region;
    float* vp = kp + RoundUp(sh.t, 128) * sh.hd16;
    float* s = vp + sh.t * sh.hd16;
    PackHead<kPanel>(sh, qkv, h, kp, vp);
    for (int64_t r0 = 0; r0 < sh.t; r0 += kR) RowBlock(sh, qkv, h, r0, kp, vp, s, out);
  }
};

// The workspace holds omp_get_max_threads() regions; heads are handed out dynamically, so
// a thread the OS deschedules does not hold up the others.
template <typename Tl>
void SelfAttentionImpl(const SelfAttentionArgs& a, void* workspace) {
  const Shape sh{a.t, a.ld, a.heads, a.hd, RoundUp(a.hd, kL), RoundUp(a.t, kL)};
  const size_t region = SelfAttentionWorkspaceBytes(a.t, a.hd, 1);
  const int threads = static_cast<int>(std::clamp<int64_t>(a.heads, 1, omp_get_max_threads()));
  std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(threads)
  {
    float* mine = reinterpret_cast<float*>(static_cast<char*>(workspace) +
                                           region * static_cast<size_t>(omp_get_thread_num()));
    for (int64_t h = next.fetch_add(1); h < a.heads; h = next.fetch_add(1)) {
      Self<Tl>::Head(sh, a.qkv, h, mine, a.out);
    }
  }
}

// ---- decode ------------------------------------------------------------------------------

inline F16 LoadRow(const float* p) { return Load(p); }
inline F16 LoadRow(const uint16_t* p) { return LoadBf16(p); }  // bf16: fp32 high halves
inline F16 LoadRow(const int8_t* p) { return LoadI8(p); }
inline F16 LoadRowN(const float* p, int64_t n) { return LoadN(p, n); }
inline F16 LoadRowN(const uint16_t* p, int64_t n) { return LoadBf16N(p, n); }
inline F16 LoadRowN(const int8_t* p, int64_t n) { return LoadI8N(p, n); }

// Head h's row scales (int8 segments only; null otherwise).
template <typename T>
const float* HeadScales(const float* scales, const KvSegment& seg, int64_t h) {
  return std::is_same_v<T, int8_t> ? scales + h * seg.scale_head_stride : nullptr;
}

// Row j's dequantization scale: int8 rows' own, exactly 1 for fp32 and bf16 rows.
template <typename T>
float RowScale(const float* scales, int64_t j) {
  if constexpr (std::is_same_v<T, int8_t>) {
    return scales[j];
  } else {
    return 1.f;
  }
}

// acc[r] = sum over 16-wide chunks c of q[c] * k_r[c] (one fma chain from 0; the tail
// chunk's missing lanes are 0) for K rows k + r * stride. CH > 0: hd == 16 * CH.
template <typename T, int K, int CH>
void DotRows(const float* q, int64_t hd, const T* k, int64_t stride, F16 (&acc)[K]) {
  const int64_t full = CH > 0 ? CH : hd / kL;
#pragma GCC unroll 4
  for (int r = 0; r < K; ++r) acc[r] = Zero();
#pragma GCC unroll 8
  for (int64_t c = 0; c < full; ++c) {
    const F16 qc = Load(q + c * kL);
#pragma GCC unroll 4
    for (int r = 0; r < K; ++r) acc[r] = Fma(qc, LoadRow(k + r * stride + c * kL), acc[r]);
  }
  if (CH == 0 && full * kL < hd) {
    const int64_t n = hd - full * kL;
    const F16 qc = LoadN(q + full * kL, n);
#pragma GCC unroll 4
    for (int r = 0; r < K; ++r) acc[r] = Fma(qc, LoadRowN(k + r * stride + full * kL, n), acc[r]);
  }
}

// s[j] = ReduceAdd(q . k_j) * scale * RowScale(j) for the segment's rows of head h; four
// rows in flight.
template <typename T, int CH>
void SegmentScores(const float* q, int64_t hd, float scale, const KvSegment& seg, int64_t h,
                   float* s) {
  const T* k = static_cast<const T*>(seg.keys) + h * seg.head_stride;
  const float* ks = HeadScales<T>(seg.key_scales, seg, h);
  int64_t j = 0;
  for (; j + 4 <= seg.n; j += 4) {
    F16 acc[4];
    DotRows<T, 4, CH>(q, hd, k + j * seg.row_stride, seg.row_stride, acc);
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) s[j + r] = ReduceAdd(acc[r]) * scale * RowScale<T>(ks, j + r);
  }
  for (; j < seg.n; ++j) {
    F16 acc[1];
    DotRows<T, 1, CH>(q, hd, k + j * seg.row_stride, seg.row_stride, acc);
    s[j] = ReduceAdd(acc[0]) * scale * RowScale<T>(ks, j);
  }
}

// acc[c] += sum_j (w[j] * RowScale(j)) * v_j[c0 + 16c ...] over the segment's rows of head h,
// even rows chained on acc, odd rows on a second chain from 0 added at the end. NV chunks
// of columns; with kTail the last one is partial (hd - c0 - 16 (NV - 1) columns).
template <typename T, int NV, bool kTail>
void MixSegment(const float* w, const KvSegment& seg, int64_t h, int64_t c0, int64_t hd,
                F16 (&acc)[NV]) {
  const T* v = static_cast<const T*>(seg.values) + h * seg.head_stride + c0;
  const float* vs = HeadScales<T>(seg.value_scales, seg, h);
  const int64_t last = hd - c0 - (NV - 1) * kL;
  auto row = [&](const T* p, int c) {
    return kTail && c == NV - 1 ? LoadRowN(p + c * kL, last) : LoadRow(p + c * kL);
  };
  F16 odd[NV];
#pragma GCC unroll 8
  for (int c = 0; c < NV; ++c) odd[c] = Zero();
  int64_t j = 0;
  for (; j + 2 <= seg.n; j += 2) {
    const F16 w0 = Set1(w[j] * RowScale<T>(vs, j));
    const F16 w1 = Set1(w[j + 1] * RowScale<T>(vs, j + 1));
    const T* v0 = v + j * seg.row_stride;
#pragma GCC unroll 8
    for (int c = 0; c < NV; ++c) {
      acc[c] = Fma(w0, row(v0, c), acc[c]);
      odd[c] = Fma(w1, row(v0 + seg.row_stride, c), odd[c]);
    }
  }
  if (j < seg.n) {
    const F16 w0 = Set1(w[j] * RowScale<T>(vs, j));
#pragma GCC unroll 8
    for (int c = 0; c < NV; ++c) acc[c] = Fma(w0, row(v + j * seg.row_stride, c), acc[c]);
  }
#pragma GCC unroll 8
  for (int c = 0; c < NV; ++c) acc[c] = Add(acc[c], odd[c]);
}

// out[c0, c0 + 16 NV) of head h (up to hd) = inv_sum * the weighted sum of every segment's
// value rows, segment by segment; w: the head's softmax numerators over all positions.
template <int NV, bool kTail>
void MixColumns(const DecodeAttentionArgs& a, int64_t h, const float* w, float inv_sum,
                int64_t c0) {
  F16 acc[NV];
#pragma GCC unroll 8
  for (int c = 0; c < NV; ++c) acc[c] = Zero();
  for (int64_t i = 0; i < a.n_segments; ++i) {
    const KvSegment& seg = a.segments[i];
    switch (seg.type) {
      case KvType::kFloat32: MixSegment<float, NV, kTail>(w, seg, h, c0, a.hd, acc); break;
      case KvType::kBFloat16: MixSegment<uint16_t, NV, kTail>(w, seg, h, c0, a.hd, acc); break;
      case KvType::kInt8: MixSegment<int8_t, NV, kTail>(w, seg, h, c0, a.hd, acc); break;
    }
    w += seg.n;
  }
  float* o = a.out + h * a.hd + c0;
  const F16 scale = Set1(inv_sum);
#pragma GCC unroll 8
  for (int c = 0; c < NV; ++c) StoreN(o + c * kL, Mul(acc[c], scale), a.hd - c0 - c * kL);
}

template <int CH>
void HeadScores(const DecodeAttentionArgs& a, int64_t h, float scale, float* s) {
  const float* q = a.q + h * a.hd;
  for (int64_t i = 0; i < a.n_segments; ++i) {
    const KvSegment& seg = a.segments[i];
    switch (seg.type) {
      case KvType::kFloat32: SegmentScores<float, CH>(q, a.hd, scale, seg, h, s); break;
      case KvType::kBFloat16: SegmentScores<uint16_t, CH>(q, a.hd, scale, seg, h, s); break;
      case KvType::kInt8: SegmentScores<int8_t, CH>(q, a.hd, scale, seg, h, s); break;
    }
    s += seg.n;
  }
}

template <typename Tl>
struct Decode {
  template <int NV>
  struct MixOf {
    static constexpr auto fn = &MixColumns<NV, false>;
  };
  template <int NV>
  struct MixTailOf {
    static constexpr auto fn = &MixColumns<NV, true>;
  };
  using MixFn = decltype(&MixColumns<1, false>);
  static constexpr std::array<MixFn, Tl::kMixNv> kMix =
      TableOf<MixFn, MixOf>(std::make_index_sequence<Tl::kMixNv>());
  static constexpr std::array<MixFn, Tl::kMixNv> kMixTail =
      TableOf<MixFn, MixTailOf>(std::make_index_sequence<Tl::kMixNv>());

  // Head h: scores of every position (s: its row of the workspace), softmax, mix.
  static void Head(const DecodeAttentionArgs& a, int64_t h, int64_t positions, float* s) {
    const float scale = Scale(a.hd);
    if (a.hd == 64) {  // the text model's heads: unrolled
      HeadScores<4>(a, h, scale, s);
    } else {
      HeadScores<0>(a, h, scale, s);
    }
    const float inv_sum = SoftmaxRow(s, positions, 1.f);
    for (int64_t c0 = 0; c0 < a.hd; c0 += Tl::kMixNv * kL) {
      const int64_t cols = std::min<int64_t>(Tl::kMixNv * kL, a.hd - c0);
      const int64_t nv = (cols + kL - 1) / kL;
      (cols % kL == 0 ? kMix : kMixTail)[nv - 1](a, h, s, inv_sum, c0);
    }
  }
};

// Heads in parallel; head h's scores live in workspace row h (RoundUp(positions, 16)).
template <typename Tl>
void DecodeAttentionImpl(const DecodeAttentionArgs& a, void* workspace) {
  int64_t positions = 0;
  for (int64_t i = 0; i < a.n_segments; ++i) positions += a.segments[i].n;
  const int64_t lds = RoundUp(positions, kL);
  float* scores = static_cast<float*>(workspace);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < a.heads; ++h) Decode<Tl>::Head(a, h, positions, scores + h * lds);
}

}  // namespace attention
}  // namespace
}  // namespace moondream::kernels
