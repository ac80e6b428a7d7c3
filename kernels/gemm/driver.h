// The INT8 GEMM written once for every ISA: row quantization, the register-tile loop over
// the packed panels, the dynamic split over OpenMP threads and the F16 epilogue. Each
// gemm/<isa>.cc includes prelude.h, pushes its target, includes its vec16 header, defines
// its primitives struct (below) and then includes this file, so all of it is compiled for
// that ISA and stays TU-local.
//
// The primitives struct K:
//   using V;                       kCols 32-bit lanes: int32 accumulators, or as an operand
//                                  4 bytes per lane (weights: one column x 4 k)
//   kCols                          int32 lanes per V (16 zmm, 8 ymm, 4 NEON / scalar)
//   kMr                            most activation rows per register tile
//   Groups(mr)                     16-column groups per micro-kernel pass of mr rows
//                                  (register budget: mr * Groups(mr) * 16 / kCols accumulators)
//   kUnsignedA                     activations are fed as u8 = q + 128 (VNNI dpbusd); the
//                                  epilogue then subtracts w_row_sum = 128 * sum(q_w)
//   kDecodePrefetch                bytes ahead of the weight stream that a one-row tile
//                                  (decode) prefetches, 0 = none: a decode thread reads one
//                                  sequential stream, and where the hardware prefetcher alone
//                                  does not keep enough of it in flight this does (measured
//                                  per ISA in the kernel's file)
//   kDecodeStreams                 segments of k a one-row tile reads side by side, one group
//                                  of 4 k from each in turn, into the same accumulators (exact
//                                  int32 sums: the order changes nothing); 1 = one sequential
//                                  stream per panel. Several nearby streams can draw more
//                                  bandwidth than one (bench/common/bandwidth.h's layouts)
//   V Zero(); V LoadW(const int8_t* p);      p: 4 k of kCols columns (4 * kCols bytes)
//   V Bcast(const int8_t* a);                the 4 activation bytes a[0..4) in every lane
//   V Dot(V acc, V a, V w);                  acc[c] + sum_i a[i] * w[c][i], exact int32
//   void Store(int32_t* p, V acc);
//   float AbsMax(const float* x, int64_t k); max |x[i]| (exact); NaN if any x[i] is NaN
//   void Quantize(const float* x, int64_t k, float inv, int8_t* q);
//                                            q[i] = clamp(round-half-even(x[i] * inv), -127, 127)
#pragma once

namespace moondream::kernels {
namespace {

constexpr int64_t kGroupCols = 16;  // one F16 of outputs; panel widths are multiples of it
constexpr int kMaxGroups = static_cast<int>(kPanel / kGroupCols);
// Loop order: a work unit runs every activation row of a block past one panel, so the panel
// (k x 64 bytes, <= 512 KiB) stays in L2 while the activations stream from L3. Row blocks of
// <= 8 MiB keep that stream in L3.
constexpr int64_t kActivationBlockBytes = 8 << 20;

inline int64_t RoundUp4(int64_t k) { return (k + 3) / 4 * 4; }

// ---- row quantization -------------------------------------------------------------------

// The kernels.h semantics; q[k..ldq) = 0. kUnsigned: every byte then gets + 128 (u8).
template <class K, bool kUnsigned>
void QuantizeRow(const float* x, int64_t k, int64_t ldq, int8_t* q, float* scale) {
  const float amax = K::AbsMax(x, k);
  const float inv = 127.f / amax;
  std::memset(q, 0, static_cast<size_t>(ldq));
  if (!std::isfinite(amax)) {  // NaN or Inf in the row: NaN outputs, as in floating point
    *scale = std::numeric_limits<float>::quiet_NaN();
  } else if (std::isinf(inv)) {  // max|x| below ~3.7e-38, or 0: a zero row
    *scale = 0.f;
  } else {
    *scale = amax / 127.f;
    K::Quantize(x, k, inv, q);
  }
  if constexpr (kUnsigned) {
    for (int64_t i = 0; i < ldq; ++i) q[i] = static_cast<int8_t>(q[i] ^ 0x80);
  }
}

template <class K>
void QuantizeRowsWith(const float* x, int64_t m, int64_t k, int64_t ldx, int8_t* q,
                      int64_t ldq, float* scale) {
  for (int64_t r = 0; r < m; ++r) QuantizeRow<K, false>(x + r * ldx, k, ldq, q + r * ldq, scale + r);
}

// ---- register tiles ---------------------------------------------------------------------

// acc[r * kPanel + c] = sum over k of a[r][k] * b[k][c] for r < MR, c < 16 * G. a: MR rows
// of stride lda; b: the first of those columns in the panel, ldb bytes per group of 4 k.
// Every loop over the accumulators is fully unrolled so they stay in registers.
template <class K, int MR, int G>
void Micro(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int64_t k4,
           int32_t* acc) {
  constexpr int kNv = G * static_cast<int>(kGroupCols) / K::kCols;
  typename K::V c[MR * kNv];
#pragma GCC unroll 32
  for (int i = 0; i < MR * kNv; ++i) c[i] = K::Zero();
  // One group of 4 k: a (MR rows of stride lda) against its ldb bytes of b.
  auto step = [&c, lda](const int8_t* ak, const int8_t* bk) {
    if constexpr (MR == 1 && K::kDecodePrefetch > 0) {  // this step's lines, that far ahead
#pragma GCC unroll 4
      for (int l = 0; l < kNv * K::kCols * 4; l += 64) {
        __builtin_prefetch(bk + K::kDecodePrefetch + l, /*rw=*/0, /*locality=*/3);
      }
    }
    typename K::V w[kNv];
#pragma GCC unroll 16
    for (int v = 0; v < kNv; ++v) w[v] = K::LoadW(bk + v * K::kCols * 4);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const typename K::V av = K::Bcast(ak + r * lda);
#pragma GCC unroll 16
      for (int v = 0; v < kNv; ++v) c[r * kNv + v] = K::Dot(c[r * kNv + v], av, w[v]);
    }
  };
  int64_t kg = 0;
  if constexpr (MR == 1 && K::kDecodeStreams > 1) {  // the segments side by side
    const int64_t seg = k4 / K::kDecodeStreams;
    for (; kg < seg; ++kg) {
#pragma GCC unroll 8
      for (int s = 0; s < K::kDecodeStreams; ++s) {
        step(a + (s * seg + kg) * 4, b + (s * seg + kg) * ldb);
      }
    }
    kg = seg * K::kDecodeStreams;  // then the k4 % streams groups left
  }
  for (; kg < k4; ++kg) step(a + kg * 4, b + kg * ldb);
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 16
    for (int v = 0; v < kNv; ++v) K::Store(acc + r * kPanel + v * K::kCols, c[r * kNv + v]);
  }
}

using MicroFn = void (*)(const int8_t*, int64_t, const int8_t*, int64_t, int64_t, int32_t*);

// kMicro<K>[mr - 1][g - 1]; null where g > K::Groups(mr) (never called: too many registers).
template <class K, int MR, int G>
constexpr MicroFn MicroOrNull() {
  if constexpr (G <= K::Groups(MR)) {
    return &Micro<K, MR, G>;
  } else {
    return nullptr;
  }
}
template <class K, int MR, size_t... G>
constexpr std::array<MicroFn, kMaxGroups> MicroRow(std::index_sequence<G...>) {
  return {MicroOrNull<K, MR, static_cast<int>(G) + 1>()...};
}
template <class K, size_t... R>
constexpr std::array<std::array<MicroFn, kMaxGroups>, K::kMr> MicroTable(std::index_sequence<R...>) {
  return {MicroRow<K, static_cast<int>(R) + 1>(std::make_index_sequence<kMaxGroups>{})...};
}
template <class K>
constexpr auto kMicro = MicroTable<K>(std::make_index_sequence<K::kMr>{});

// ---- the GEMM ---------------------------------------------------------------------------

struct GemmCtx {
  const Int8GemmArgs* g;
  const int8_t* qa;  // quantized activations [m][lda] (u8 when K::kUnsignedA)
  int64_t lda, k4;
  const float* a_scale;  // [m]
};

inline F16 LoadCols(const float* p, int64_t valid) { return valid == kGroupCols ? Load(p) : LoadN(p, valid); }
inline void StoreCols(float* p, F16 v, int64_t valid) {
  if (valid == kGroupCols) {
    Store(p, v);
  } else {
    StoreN(p, v, valid);
  }
}

// y[r0 + r][n0 + c] from acc[r * kPanel + c], r < mr, c < width (the kernels.h epilogue).
template <class K>
void WriteTile(const GemmCtx& t, int64_t n0, int64_t width, int64_t r0, int mr, int32_t* acc) {
  const Int8GemmArgs& g = *t.g;
  for (int64_t c = 0; c < width; c += kGroupCols) {
    const int64_t col = n0 + c;
    const int64_t valid = std::min(kGroupCols, g.n - col);  // >= 1: width rounds up to 16
    const F16 w_scale = LoadCols(g.w_scale + col, valid);
    const F16 bias = g.bias != nullptr ? LoadCols(g.bias + col, valid) : Zero();
    for (int r = 0; r < mr; ++r) {
      int32_t* a = acc + r * kPanel + c;
      if constexpr (K::kUnsignedA) {
        for (int64_t j = 0; j < valid; ++j) a[j] -= g.w_row_sum[col + j];
      }
      F16 y = Fma(LoadI32(a), Mul(Set1(t.a_scale[r0 + r]), w_scale), bias);
      if (g.epilogue == Epilogue::kGeluTanh) y = GeluTanh(y);
      StoreCols(g.y + (r0 + r) * g.ldy + col, y, valid);
    }
  }
}

// Rows [r0, r0 + mr) against panel p, full k: in passes of K::Groups(mr) column groups.
template <class K>
void RunTile(const GemmCtx& t, int64_t p, int64_t r0, int mr) {
  const int64_t width = PanelWidth(t.g->n, p);
  const int64_t groups = width / kGroupCols;
  const int8_t* panel = t.g->w + p * kPanel * t.k4 * 4;
  alignas(64) int32_t acc[K::kMr * kPanel];
  const int per_pass = K::Groups(mr);
  for (int64_t c = 0; c < groups; c += per_pass) {
    const int64_t pass = std::min<int64_t>(per_pass, groups - c);
    kMicro<K>[mr - 1][pass - 1](t.qa + r0 * t.lda, t.lda, panel + c * kGroupCols * 4, width * 4,
                                t.k4, acc + c * kGroupCols);
  }
  WriteTile<K>(t, p * kPanel, width, r0, mr, acc);
}

template <class K>
void Int8GemmWith(const Int8GemmArgs& g, void* workspace) {
  if (g.m <= 0 || g.n <= 0) return;
  // Workspace (Int8GemmWorkspaceBytes): q [m][lda] bytes, scales [m] at a 64-byte offset.
  const int64_t lda = RoundUp4(g.k);
  int8_t* qa = static_cast<int8_t*>(workspace);
  float* a_scale = reinterpret_cast<float*>(qa + (g.m * lda + 63) / 64 * 64);
  const GemmCtx t{&g, qa, lda, lda / 4, a_scale};

  // Work units (row block, panel) in row-block-major order, handed out dynamically in runs
  // of consecutive panels: a descheduled thread (shared machine) does not hold up the
  // others, and a decode (m = 1) still streams long contiguous runs of panels. Runs are
  // 1/8 of a thread's share, shrinking near the end (a quarter of the rest per thread,
  // down to one unit) so that the threads finish together.
  const int64_t panels = (g.n + kPanel - 1) / kPanel;
  const int64_t mc = std::max<int64_t>(
      K::kMr, kActivationBlockBytes / std::max<int64_t>(t.lda, 1) / K::kMr * K::kMr);
  const int64_t units = (g.m + mc - 1) / mc * panels;
  std::atomic<int64_t> next{0};
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < g.m; ++r) {
      QuantizeRow<K, K::kUnsignedA>(g.x + r * g.ldx, g.k, t.lda, qa + r * t.lda, a_scale + r);
    }  // implicit barrier: every row is quantized before any tile runs
    const int64_t threads = omp_get_num_threads();
    const int64_t most = std::max<int64_t>(1, units / (8 * threads));
    for (int64_t u0 = next.load(std::memory_order_relaxed); u0 < units;) {
      const int64_t grab = std::clamp<int64_t>((units - u0) / (4 * threads), 1, most);
      if (!next.compare_exchange_weak(u0, u0 + grab, std::memory_order_relaxed)) continue;
      for (int64_t u = u0; u < std::min(units, u0 + grab); ++u) {
        const int64_t rb = u / panels * mc, re = std::min(g.m, rb + mc);
        for (int64_t r = rb; r < re; r += K::kMr) {
          RunTile<K>(t, u % panels, r, static_cast<int>(std::min<int64_t>(K::kMr, re - r)));
        }
      }
      u0 = next.load(std::memory_order_relaxed);
    }
  }
}

#ifdef MOONDREAM_GEMM_BOUND
// Multiply-adds per second of the register tile alone, every thread together: each thread
// runs K::kMr rows past one 64-column panel of k = 256 (16 KiB of weights and the rows:
// L1-resident), in RunTile's passes, for `seconds`. No quantization, epilogue, thread
// hand-out or traffic beyond L1: an upper bound on what the GEMM can reach on this CPU.
template <class K>
double MicroKernelBoundWith(double seconds) {
  constexpr int64_t k4 = 64;
  constexpr int mr = K::kMr, per_pass = K::Groups(K::kMr);
  double macs_per_second = 0;
#pragma omp parallel reduction(+ : macs_per_second)
  {
    alignas(64) int8_t a[mr * k4 * 4];
    alignas(64) int8_t b[kPanel * k4 * 4];
    alignas(64) int32_t acc[mr * kPanel];
    for (size_t i = 0; i < sizeof(a); ++i) a[i] = static_cast<int8_t>(i * 37 % 255 - 127);
    for (size_t i = 0; i < sizeof(b); ++i) b[i] = static_cast<int8_t>(i * 7919 % 255 - 127);
    const auto t0 = std::chrono::steady_clock::now();
    int64_t panels = 0;
    double elapsed = 0;
    do {
      for (int rep = 0; rep < 256; ++rep, ++panels) {
        for (int64_t c = 0; c < kMaxGroups; c += per_pass) {
          kMicro<K>[mr - 1][per_pass - 1](a, k4 * 4, b + c * kGroupCols * 4, kPanel * 4, k4,
                                          acc + c * kGroupCols);
        }
        asm volatile("" : : "r"(acc) : "memory");  // every pass's sums are kept
      }
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } while (elapsed < seconds);
    macs_per_second += static_cast<double>(panels) * mr * kPanel * k4 * 4 / elapsed;
  }
  return macs_per_second;
}
#define MOONDREAM_GEMM_BOUND_ENTRY(K) \
  double MicroKernelBound(double seconds) { return MicroKernelBoundWith<K>(seconds); }
#else
#define MOONDREAM_GEMM_BOUND_ENTRY(K)
#endif

}  // namespace
}  // namespace moondream::kernels

// The two entry points of gemm/<isa>.cc, in namespace moondream::kernels::<ns> (a third,
// MicroKernelBound, where MOONDREAM_GEMM_BOUND is set).
#define MOONDREAM_DEFINE_GEMM(ns, K)                                                        \
  namespace moondream::kernels::ns {                                                        \
  void QuantizeRows(const float* x, int64_t m, int64_t k, int64_t ldx, int8_t* q,           \
                    int64_t ldq, float* scale) {                                            \
    QuantizeRowsWith<K>(x, m, k, ldx, q, ldq, scale);                                       \
  }                                                                                         \
  void Int8Gemm(const Int8GemmArgs& args, void* workspace) { Int8GemmWith<K>(args, workspace); } \
  MOONDREAM_GEMM_BOUND_ENTRY(K)                                                             \
  }
