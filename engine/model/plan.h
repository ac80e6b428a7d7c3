// The execution plan of one loaded Moondream2 variant: how each component runs, chosen
// once at load from the precision, the device and the CPU kernels, never re-decided per
// call. Model code asks the plan, not the weights (`is_int8()`), which path to take.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/weights/weight_store.h"
#include "kernels/kernels.h"

namespace moondream {

struct ExecutionPlan {
  // CPU kernel set (kernels/): the INT8 GEMM and the attention kernels run on it. Null on
  // CUDA.
  const kernels::KernelSet* kernels = nullptr;
  // Vision runs crop by crop (each crop's tower end to end, straight into the stitched
  // map) instead of all crops batched layer by layer. INT8: activations are quantized per
  // token, so batching changes nothing but memory.
  bool crop_by_crop_vision = false;
  // Unmasked self-attention (each vision crop, the image-prefix prefill) through
  // kernels::SelfAttention instead of the ATen ops the FP32/BF16 goldens were measured with.
  bool kernel_self_attention = false;
  // One-row decode attention through kernels::DecodeAttention, reading the KV cache in its
  // own dtype (fp32, bf16, int8 rows).
  bool kernel_decode_attention = false;
  // MLPs fuse GELU into fc1's GEMM and run long inputs in row chunks (INT8 GEMM epilogue).
  bool fused_mlp = false;

  // e.g. "int8 cpu avx512vnni: crop-by-crop vision, kernel attention, fused MLP".
  std::string Describe(Precision precision) const;
};

// INT8 on the CPU: everything through the kernel layer. FP32/BF16 on the CPU: the ATen ops
// of the reference, except the decode attention kernel. CUDA: ATen only.
ExecutionPlan ChoosePlan(Precision precision, bool cuda, const kernels::KernelSet* cpu_kernels);

// The CPU kernels `cpu_isa` (--cpu-isa) names; empty: MOONDREAM_CPU_ISA's (default auto).
// INVALID_ARGUMENT naming it (and, when empty, the variable) when no such ISA exists or this
// CPU lacks it; the choice is logged (event=cpu_kernels).
absl::StatusOr<const kernels::KernelSet*> ResolveCpuKernels(const std::string& cpu_isa);

}  // namespace moondream
