#include "engine/model/plan.h"

#include "absl/strings/str_cat.h"
#include "engine/log.h"

namespace moondream {

ExecutionPlan ChoosePlan(Precision precision, bool cuda, const kernels::KernelSet* cpu_kernels) {
  ExecutionPlan plan;
  if (cuda) return plan;
  plan.kernels = cpu_kernels != nullptr ? cpu_kernels : &kernels::DefaultKernels();
  plan.kernel_decode_attention = true;
  if (precision == Precision::kINT8) {
    plan.crop_by_crop_vision = true;
    plan.kernel_self_attention = true;
    plan.fused_mlp = true;
  }
  return plan;
}

absl::StatusOr<const kernels::KernelSet*> ResolveCpuKernels(const std::string& cpu_isa) {
  const std::string requested = cpu_isa.empty() ? kernels::DefaultIsaName() : cpu_isa;
  std::string error;
  const kernels::KernelSet* ks = kernels::ResolveKernels(requested, &error);
  if (ks == nullptr) {
    return absl::InvalidArgumentError(cpu_isa.empty() ? absl::StrCat("MOONDREAM_CPU_ISA: ", error)
                                                      : error);
  }
  Log(LogLevel::kInfo, "cpu_kernels",
      {{"cpu_isa", ks->name}, {"requested", requested},
       {"best", kernels::IsaName(kernels::BestIsa(kernels::HostCpu()))}});
  return ks;
}

std::string ExecutionPlan::Describe(Precision precision) const {
  std::string text = std::string(PrecisionName(precision)) +
                     (kernels != nullptr ? std::string(" cpu ") + kernels->name : " cuda");
  std::string parts;
  auto add = [&parts](bool on, const char* what) {
    if (!on) return;
    parts += parts.empty() ? ": " : ", ";
    parts += what;
  };
  add(crop_by_crop_vision, "crop-by-crop vision");
  add(kernel_self_attention, "kernel self-attention");
  add(kernel_decode_attention, "kernel decode attention");
  add(fused_mlp, "fused MLP");
  return text + parts;
}

}  // namespace moondream
