// The kernel layer: model-agnostic CPU kernels behind one dispatch. Raw pointers only; the
// ATen wrappers live above it (quantization/, engine/model/). One file per ISA and kernel
// family in gemm/, gemv/ and attention/ (the generic code in gemm/driver.h, gemv/impl.h,
// attention/impl.h,
// written once on simd/vec16_<isa>.h); the scalar files are the reference
// every other ISA is tested against bit for bit (tests/kernels). Threads: the kernels
// split their work with OpenMP (`#pragma omp parallel`), the pool that ATen's
// at::set_num_threads sizes; they must not be called from inside an OpenMP parallel region.
//
// Exactness contract (every ISA, every shape):
//  - activation quantization and the int32 GEMM accumulations are bit-identical;
//  - float epilogues, the dense GEMV and the attention kernels evaluate the same operations in the same
//    order per output element (fused multiply-adds where the reference says fma, sums
//    over 16 logical lanes reduced by one fixed tree), so their results are bit-identical
//    too. The model's tokens therefore do not depend on the ISA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/cpu.h"

namespace moondream::kernels {

enum class Epilogue { kNone, kGeluTanh };

// ---- INT8 GEMM --------------------------------------------------------------------------
//
// Packed weights (ISA-independent; PackInt8Weights writes it): the n output rows
// ("columns" of y) are cut into panels of up to kPanel = 64, the last rounded up to a
// multiple of 16 and zero padded; k is padded to a multiple of 4 with zeros. Inside a
// panel, for each group of 4 k the panel's columns lie side by side, 4 bytes each:
// byte (kg, c, i) = q[p*64 + c][4*kg + i] at offset p*64*k4*4 + kg*width*4 + c*4 + i.
// One 64-byte load is 16 columns x 4 k (zmm), 32 bytes 8 columns (ymm), 16 bytes 4 (NEON).
constexpr int64_t kPanel = 64;
int64_t PanelWidth(int64_t n, int64_t panel);  // columns stored in that panel (16 | width)
int64_t PackedInt8Bytes(int64_t n, int64_t k);
// q: int8 [n, k] row-major (values in [-127, 127]). packed: PackedInt8Bytes(n, k) bytes;
// row_sum[n] = 128 * sum_k q[r, k] (the VNNI kernels' u8 offset correction). packed may be
// q itself where PackableInPlace(n, k): each panel then lies exactly over its own rows of q.
void PackInt8Weights(const int8_t* q, int64_t n, int64_t k, int8_t* packed, int32_t* row_sum);
// n % 16 == 0 and k % 4 == 0: no padding, PackedInt8Bytes(n, k) == n * k.
bool PackableInPlace(int64_t n, int64_t k);

struct Int8GemmArgs {
  const float* x = nullptr;  // fp32 activations [m, k], row stride ldx
  int64_t m = 0, ldx = 0;
  const int8_t* w = nullptr;  // packed [n, k] (above)
  const int32_t* w_row_sum = nullptr;
  int64_t n = 0, k = 0;
  const float* w_scale = nullptr;  // [n]
  const float* bias = nullptr;     // [n] or null
  float* y = nullptr;              // [m, n], row stride ldy
  int64_t ldy = 0;
  Epilogue epilogue = Epilogue::kNone;
};

// Row quantization (the reference semantics every ISA reproduces): amax = max|x[0..k)|;
// a row holding NaN/Inf gets scale NaN and q = 0; inv = 127.f / amax; when inv is +inf
// (amax < ~3.7e-38, or 0) scale = 0 and q = 0; else scale = amax / 127.f and
// q[i] = clamp(round-half-even(x[i] * inv), -127, 127). q[k..ldq) = 0.
//
// GEMM: acc[i][j] = sum_k qa[i][k] * qw[j][k] (int32, exact);
// y[i][j] = fma(float(acc), a_scale[i] * w_scale[j], bias ? bias[j] : 0.f), then
// GeluTanh(y) for kGeluTanh (simd/vec16_math.h).

// ---- dense GEMV (bf16 / fp32 weights) --------------------------------------------------
//
// Decode's matrix-vector product with full-precision weights: y[r] = sum_k w[r][k] * x[k]
// (+ bias[r]). Memory-bound: threads take contiguous chunks of ~128 KiB of rows.
// Semantics (every ISA): a row's sum is one F16 fma chain over the 16-wide chunks of k in
// order (bf16 weights widened exactly to fp32; the tail chunk's missing lanes are 0 in
// both w and x), then ReduceAdd (the fixed tree of simd/README.md), then + bias[r] in fp32.
enum class GemvWeights { kFloat32, kBFloat16 };

struct GemvArgs {
  GemvWeights type = GemvWeights::kBFloat16;
  const void* w = nullptr;  // [n, k]: fp32, or bf16 as uint16 (the fp32 high halves)
  int64_t n = 0, k = 0, ldw = 0;  // ldw: w's row stride in elements (>= k)
  const float* x = nullptr;       // [k]
  const float* bias = nullptr;    // [n] or null
  float* y = nullptr;             // [n]
};

// ---- attention (fp32) ------------------------------------------------------------------

// Self-attention of one sequence, no mask: every row attends to every row.
// qkv: [t] rows of stride ld, row = q | k | v, each heads*hd floats; out: [t, heads*hd]
// (row stride heads*hd): softmax(q.k^T / sqrt(hd)) . v per head.
struct SelfAttentionArgs {
  const float* qkv = nullptr;
  int64_t t = 0, ld = 0, heads = 0, hd = 0;
  float* out = nullptr;
};

enum class KvType { kFloat32, kBFloat16, kInt8 };

// One segment of one layer's KV cache: row j of head h starts at
// keys/values + h * head_stride + j * row_stride elements; int8 rows have a scale each at
// key_scales/value_scales[h * scale_head_stride + j].
struct KvSegment {
  KvType type = KvType::kFloat32;
  const void* keys = nullptr;
  const void* values = nullptr;
  int64_t n = 0, head_stride = 0, row_stride = 0;
  const float* key_scales = nullptr;
  const float* value_scales = nullptr;
  int64_t scale_head_stride = 0;
};

// One query row per head against every position of the segments, in order (decode).
// q: [heads, hd] fp32; out: [heads, hd] fp32.
struct DecodeAttentionArgs {
  const float* q = nullptr;
  int64_t heads = 0, hd = 0;
  const KvSegment* segments = nullptr;
  int64_t n_segments = 0;
  float* out = nullptr;
};

// ---- dispatch --------------------------------------------------------------------------

// One ISA's kernels. Workspaces are allocated by the dispatch layer (kernels.cc), never in
// an ISA file.
struct KernelSet {
  Isa isa;
  const char* name;  // "avx512vnni", "avxvnni", "avxvnni-evex256", "avx2", "neon-dot", ...
  bool (*runs)(const CpuFeatures&);  // this CPU can execute this variant
  // [m, k] -> q [m, ldq] (ldq >= k, multiple of 4), scale [m]. Serial.
  void (*quantize_rows)(const float* x, int64_t m, int64_t k, int64_t ldx, int8_t* q,
                        int64_t ldq, float* scale);
  // workspace: Int8GemmWorkspaceBytes(m, k) bytes, 64-byte aligned.
  void (*int8_gemm)(const Int8GemmArgs& args, void* workspace);
  // No workspace; OpenMP-parallel over chunks of rows.
  void (*gemv)(const GemvArgs& args);
  // workspace: SelfAttentionWorkspaceBytes(t, hd, threads) bytes, 64-byte aligned.
  void (*self_attention)(const SelfAttentionArgs& args, void* workspace);
  // workspace: DecodeAttentionWorkspaceBytes(heads, positions) bytes, 64-byte aligned.
  void (*decode_attention)(const DecodeAttentionArgs& args, void* workspace);
};

size_t Int8GemmWorkspaceBytes(int64_t m, int64_t k);
size_t SelfAttentionWorkspaceBytes(int64_t t, int64_t hd, int threads);
size_t DecodeAttentionWorkspaceBytes(int64_t heads, int64_t positions);

// Every variant compiled into this binary (both forms of avxvnni on x86), whether or not
// this CPU runs it: the tests iterate over them.
const std::vector<const KernelSet*>& AllKernelSets();

// "auto" or an IsaName. The variant of that ISA this CPU runs (avxvnni: VEX, else
// EVEX-256); nullptr and *error set ("--cpu-isa=avx512vnni: this CPU lacks AVX-512 VNNI
// (it runs: avx2, scalar)") when it runs none, or the name is unknown.
const KernelSet* ResolveKernels(std::string_view name, std::string* error);

// The process default's name: MOONDREAM_CPU_ISA when set, else "auto".
std::string DefaultIsaName();
// ResolveKernels(DefaultIsaName()), once. Aborts with the error when MOONDREAM_CPU_ISA
// names an ISA the CPU lacks (the server and the CLI resolve the name first and fail with
// a clear error instead).
const KernelSet& DefaultKernels();

// Convenience entry points: allocate the workspace and call ks's kernel.
void Int8Gemm(const KernelSet& ks, const Int8GemmArgs& args);
inline void Gemv(const KernelSet& ks, const GemvArgs& args) { ks.gemv(args); }
void SelfAttention(const KernelSet& ks, const SelfAttentionArgs& args);
void DecodeAttention(const KernelSet& ks, const DecodeAttentionArgs& args);

}  // namespace moondream::kernels
