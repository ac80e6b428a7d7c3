// The dense GEMV (bf16 or fp32 weights, fp32 x and y), written once against F16
// (kernels/simd/README.md). Each gemv/<isa>.cc includes prelude.h, pushes its target,
// includes its vec16_<isa>.h and then this file, and instantiates the kernel with the
// number of rows it keeps in flight.
//
// Invariant (the exactness contract of kernels.h): row r's result is one F16 fma chain
// acc = Fma(w[r][c..c+16), x[c..c+16), acc) over the chunks c = 0, 16, ... of k in order,
// the last chunk zero-filled past k in w and x; then ReduceAdd(acc), then + bias[r]. How
// many rows run side by side (the latency of one chain is hidden by the others) and how
// the rows are split among threads change nothing in the result.
//
// Needs, included before the target push: <omp.h>, <algorithm>, <cstdint> and
// kernels/kernels.h (gemv/prelude.h).
#pragma once

namespace moondream::kernels {
namespace {
namespace gemv {

constexpr int64_t kL = 16;  // F16 lanes

inline F16 LoadW(const float* p) { return Load(p); }
inline F16 LoadW(const uint16_t* p) { return LoadBf16(p); }
inline F16 LoadWN(const float* p, int64_t n) { return LoadN(p, n); }
inline F16 LoadWN(const uint16_t* p, int64_t n) { return LoadBf16N(p, n); }

// Rows [r0, r0 + R) of y.
template <int R, typename T>
inline void Rows(const GemvArgs& a, const T* w, int64_t r0) {
  const int64_t k = a.k, full = k / kL * kL, ldw = a.ldw;
  const T* wr = w + r0 * ldw;
  F16 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = Zero();
  // bf16: the next block's rows, fetched one block ahead at the same column. A 4 KiB row
  // (k = 2048) starts a new page, where the hardware prefetchers stop; fetching ahead gave
  // bf16 +7-13 % (fp32, 8 KiB rows, lost ~5 %: not done). No effect on the result.
  const T* next = sizeof(T) == 2 && r0 + 2 * R <= a.n ? wr + R * ldw : nullptr;
  for (int64_t c = 0; c < full; c += kL) {
    const F16 xv = Load(a.x + c);
    if (next != nullptr) {
      for (int r = 0; r < R; ++r) __builtin_prefetch(next + r * ldw + c);
    }
    for (int r = 0; r < R; ++r) acc[r] = Fma(LoadW(wr + r * ldw + c), xv, acc[r]);
  }
  if (full < k) {
    const F16 xv = LoadN(a.x + full, k - full);
    for (int r = 0; r < R; ++r) acc[r] = Fma(LoadWN(wr + r * ldw + full, k - full), xv, acc[r]);
  }
  for (int r = 0; r < R; ++r) {
    const float s = ReduceAdd(acc[r]);
    a.y[r0 + r] = a.bias != nullptr ? s + a.bias[r0 + r] : s;
  }
}

// Rows in contiguous chunks of ~128 KiB of weights (whole blocks of R rows), handed to the
// threads dynamically: each chunk is one sequential stream, and a thread the OS deschedules
// (a shared machine) delays only its current chunk, not a fixed half of the matrix.
template <int R, typename T>
void Run(const GemvArgs& a) {
  const T* w = static_cast<const T*>(a.w);
  const int64_t row_bytes = std::max<int64_t>(1, a.k * static_cast<int64_t>(sizeof(T)));
  const int64_t chunk = std::max<int64_t>(1, (int64_t{128} << 10) / row_bytes / R) * R;
  const int64_t chunks = (a.n + chunk - 1) / chunk;
  // Below ~64 K multiply-adds a thread fork costs more than it saves.
#pragma omp parallel for schedule(dynamic, 1) if (a.n * a.k >= (int64_t{1} << 16))
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t r_end = std::min(a.n, (i + 1) * chunk);
    int64_t r = i * chunk;
    for (; r + R <= r_end; r += R) Rows<R>(a, w, r);
    for (; r < r_end; ++r) Rows<1>(a, w, r);
  }
}

template <int R>
void GemvImpl(const GemvArgs& a) {
  if (a.n <= 0) return;
  if (a.type == GemvWeights::kBFloat16) {
    Run<R, uint16_t>(a);
  } else {
    Run<R, float>(a);
  }
}

}  // namespace gemv
}  // namespace
}  // namespace moondream::kernels
