// Internal: blocked INT8 weights and the AVX-512 VNNI GEMM over them (u8 x s8 -> s32).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "quantization/linear.h"

namespace moondream::quant::internal {

// Weights [n, k] reordered for _mm512_dpbusd_epi32: columns (output rows) are cut into
// panels of up to kPanel = 64 (the last one rounded up to a multiple of 16, zero padded);
// inside a panel, for every group of 4 k (k padded to a multiple of 4 with zeros) the
// panel's columns lie side by side, 4 bytes each: one 64-byte load = 16 columns x 4 k.
struct PackedWeight {
  at::Tensor data;       // int8, blocked as above
  at::Tensor row_sum;    // int32 [n]: 128 * sum_k q[n, k] (undoes the +128 activation offset)
  int64_t n = 0, k = 0;  // logical sizes
  int64_t k4 = 0;        // k rounded up to a multiple of 4, divided by 4
};

// True when this CPU runs the VNNI kernel (AVX-512 F/BW/VL/VNNI).
bool CpuHasVnni();

// q: int8 [n, k] contiguous on CPU.
PackedWeight PackWeight(const at::Tensor& q);

// y[m, n] = sum_k qa[m, k] * q[n, k] * a_scale[m] * w_scale[n] + bias[n], with x quantized per
// row: a_scale = max|x_row| / 127, qa = clamp(round(x * (127 / max|x_row|)), -127, 127).
// x: fp32 [m, k] contiguous; w_scale: fp32 [n]; bias: fp32 [n] or undefined -> fp32 [m, n].
// act kGeluTanh: y = GELU(y) in the epilogue (simd_math.h). Requires CpuHasVnni().
at::Tensor Int8Gemm(const PackedWeight& w, const at::Tensor& w_scale, const at::Tensor& bias,
                    const at::Tensor& x, Activation act = Activation::kNone);

}  // namespace moondream::quant::internal
