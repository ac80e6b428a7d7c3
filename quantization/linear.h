// INT8 weight quantization and the Linear/Embedding layers that hide FP vs INT8.
// Knows nothing of Moondream: ATen + absl only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "kernels/kernels.h"

namespace moondream::quant {

// Symmetric per-output-row INT8 matrix. q: int8 [out, in]; scale: fp32 [out].
// Dequantized value = q[r, c] * scale[r].
struct Int8Matrix {
  at::Tensor q;
  at::Tensor scale;
};

// Quantization error of one matrix. sqnr_db is +inf when the error is exactly zero
// (values already on the grid); rel_frobenius_error is 0 for an all-zero matrix.
struct QuantStats {
  double max_abs_error = 0, rel_frobenius_error = 0, sqnr_db = 0, clipped_fraction = 0;
  double sum_sq = 0;  // Σw² in fp64: lets a caller that quantizes in chunks combine stats
};

// w: [out, in] fp16/bf16/fp32. Symmetric per output row: scale = max|w_row|/127,
// q = clamp(round(w/scale), -127, 127) (round half to even). NaN/Inf -> InvalidArgument
// naming `name`. Zero row -> scale 0, q 0; a row so small that its scale underflows fp32
// (max|w| < ~1.8e-43) is stored the same way. `stats` may be null.
absl::StatusOr<Int8Matrix> QuantizePerChannel(const at::Tensor& w, std::string_view name,
                                              QuantStats* stats);

// fp32 elements of the row blocks that QuantizePerChannel (and the load-time smoothing
// statistics) convert at a time, per task: 256 KB, stays in L2.
constexpr int64_t kRowBlockElements = 1 << 16;
// Rows of an [out, in] matrix in one such block (at least one).
inline int64_t RowsPerBlock(int64_t in) {
  return std::max<int64_t>(1, kRowBlockElements / std::max<int64_t>(in, 1));
}

// Rows [r0, r1) of a CPU [out, in] fp16/bf16/fp32 matrix as row-major fp32: a pointer into
// `m` when it is contiguous fp32, else converted into `buffer` (resized as needed).
const float* RowsAsFloat(const at::Tensor& m, int64_t r0, int64_t r1, std::vector<float>& buffer);

// [out, in] in `dtype`, on the device of m.q.
at::Tensor Dequantize(const Int8Matrix& m, at::ScalarType dtype);

// Optional elementwise activation applied to a Linear's output.
enum class Activation {
  kNone,
  kGeluTanh,  // GELU, tanh approximation, evaluated in fp32
};

// y = x W^T + b. The only place FP and INT8 differ; a copyable, immutable handle.
// INT8 on the CPU: the weights are packed once into the kernel layer's blocked layout (a
// plain copy moved in is packed where it lies when the shape has no padding; otherwise it is
// copied into a new buffer and dropped) and every call runs the chosen ISA's INT8 GEMM
// (kernels/):
// activations quantized per token (row) to 8 bits, int32 accumulation,
// y = acc * (a_scale * w_scale[row]) + bias, an optional fused GELU. Nothing is dequantized
// per call. CUDA tensors: weight-only dequantization, then an fp16 matmul.
// Makes ATen's CPU bf16 matmul usable, once per process; true when that needed oneDNN turned
// off. LibTorch 1.13 on aarch64 hands bf16 matmuls to oneDNN whenever the CPU has FEAT_BF16
// (Graviton 3, Apple M2 and later, Neoverse V1/N2), and Debian's arm64 oneDNN cannot build
// that primitive ("could not create a primitive descriptor iterator"; seen under qemu's
// `max` CPU, which has FEAT_BF16: cortex-a76, neoverse-n1 and cortex-a72 never take that
// route). A probe matmul that throws turns oneDNN off (at::Context::setUserEnabledMkldnn),
// so ATen runs its own bf16 GEMM there, as on CPUs without bf16. Linear::Dense calls it for
// CPU bf16 weights.
bool EnsureBf16Matmul();

class Linear {
 public:
  Linear() = default;
  // weight: [out, in] in the compute dtype; bias: [out] or undefined. CPU bf16/fp32 weights
  // run decode (x with one row: x.numel() == in) on the kernel layer's GEMV on `kernels`
  // (null: kernels::DefaultKernels()): x rounded to the weight dtype as at::linear does,
  // widened exactly to fp32, fp32 accumulation, + bias in fp32, the result rounded to the
  // weight dtype and returned in x's dtype. Every other call is at::linear (CPU bf16: after
  // EnsureBf16Matmul).
  static Linear Dense(at::Tensor weight, at::Tensor bias,
                      const kernels::KernelSet* kernels = nullptr);
  // bias: fp32 [out] or undefined. CPU weights run on `kernels` (null: the process default,
  // kernels::DefaultKernels()).
  static Linear Int8(Int8Matrix weight, at::Tensor bias,
                     const kernels::KernelSet* kernels = nullptr);

  // x: [..., in] -> [..., out], same dtype and device as x. Throws c10::Error on a
  // shape mismatch or an empty handle.
  at::Tensor Forward(const at::Tensor& x) const;
  // act(x W^T + b). kGeluTanh: on the CPU INT8 path GELU is fused into the GEMM's epilogue
  // (kernels/simd/vec16_math.h: within a few ulp of ATen's); elsewhere it is
  // at::gelu(y.to(fp32), "tanh").to(y's dtype) after Forward(x).
  at::Tensor Forward(const at::Tensor& x, Activation act) const;

  int64_t in_features() const;
  int64_t out_features() const;
  bool is_int8() const;
  // Resident bytes: weights (packed copy for CPU INT8) + scales + per-row sums + bias.
  uint64_t bytes() const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
};

// Token table, per-row INT8 or dense.
class Embedding {
 public:
  Embedding() = default;
  static Embedding Dense(at::Tensor table /*[rows, dim]*/);
  static Embedding Int8(Int8Matrix table);

  // ids: int64 [T] -> [T, dim] in dtype. Throws c10::Error on out-of-range ids.
  at::Tensor Lookup(const at::Tensor& ids, at::ScalarType dtype) const;

  int64_t rows() const;
  int64_t dim() const;
  bool is_int8() const;
  uint64_t bytes() const;

 private:
  at::Tensor table_;  // dense table, or int8 q
  at::Tensor scale_;  // fp32 [rows] when INT8, else undefined
};

}  // namespace moondream::quant
