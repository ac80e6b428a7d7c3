// CPU feature detection and the instruction-set names of the kernel layer. Plain C++17:
// no LibTorch, no abseil (the layer also builds for arm64 tests under qemu).
#pragma once

#include <string>
#include <string_view>

namespace moondream::kernels {

// Kernel families, fastest last within each architecture. kAvxVnni is the 256-bit VNNI
// kernel: VEX `avxvnni` where the CPU has it, else its EVEX-256 twin (avx512vl+avx512vnni,
// the same semantics).
enum class Isa { kScalar, kNeon, kNeonDot, kAvx2, kAvxVnni, kAvx512Vnni };

struct CpuFeatures {
  // x86-64
  bool avx2 = false, fma = false, avx512f = false, avx512bw = false, avx512vl = false,
       avx512vnni = false, avx512bf16 = false, avxvnni = false;
  // arm64 (getauxval(AT_HWCAP)): asimd = NEON, asimddp = sdot/udot
  bool neon = false, dotprod = false;
};

// This process's CPU, detected once (CPUID via __builtin_cpu_supports; AT_HWCAP on arm64).
const CpuFeatures& HostCpu();

// "scalar", "neon", "neon-dot", "avx2", "avxvnni", "avx512vnni".
const char* IsaName(Isa isa);
// Accepts the names above; false for anything else ("auto" is handled by the caller).
bool ParseIsa(std::string_view name, Isa* isa);
// The fastest ISA the features run.
Isa BestIsa(const CpuFeatures& cpu);
// "auto|avx512vnni|avxvnni|avx2|neon-dot|neon|scalar": the accepted values, for messages.
std::string IsaChoices();

}  // namespace moondream::kernels
