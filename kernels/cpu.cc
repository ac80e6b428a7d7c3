#include "kernels/cpu.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace moondream::kernels {
namespace {

CpuFeatures Detect() {
  CpuFeatures f;
#if defined(__x86_64__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#if defined(__clang__)
  // clang 14 (the TSan build, scripts/test --tsan) does not know "avxvnni" here: read
  // CPUID.(EAX=7,ECX=1):EAX bit 4 ourselves. The OS saves the ymm state if avx2 is usable.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  f.avxvnni = f.avx2 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 4));
#else
  f.avxvnni = __builtin_cpu_supports("avxvnni");
#endif
#elif defined(__aarch64__)
  const unsigned long hwcap = getauxval(AT_HWCAP);
  f.neon = (hwcap & HWCAP_ASIMD) != 0;
  f.dotprod = (hwcap & HWCAP_ASIMDDP) != 0;
#endif
  return f;
}

struct Named {
  Isa isa;
  const char* name;
};
constexpr Named kNames[] = {{Isa::kScalar, "scalar"},   {Isa::kNeon, "neon"},
                            {Isa::kNeonDot, "neon-dot"}, {Isa::kAvx2, "avx2"},
                            {Isa::kAvxVnni, "avxvnni"},  {Isa::kAvx512Vnni, "avx512vnni"}};

}  // namespace

const CpuFeatures& HostCpu() {
  static const CpuFeatures features = Detect();
  return features;
}

const char* IsaName(Isa isa) {
  for (const Named& n : kNames) {
    if (n.isa == isa) return n.name;
  }
  return "unknown";
}

bool ParseIsa(std::string_view name, Isa* isa) {
  for (const Named& n : kNames) {
    if (name == n.name) {
      *isa = n.isa;
      return true;
    }
  }
  return false;
}

Isa BestIsa(const CpuFeatures& cpu) {
  if (cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512vnni) return Isa::kAvx512Vnni;
  if (cpu.avx2 && cpu.fma && cpu.avxvnni) return Isa::kAvxVnni;
  if (cpu.avx2 && cpu.fma) return Isa::kAvx2;
  if (cpu.dotprod) return Isa::kNeonDot;
  if (cpu.neon) return Isa::kNeon;
  return Isa::kScalar;
}

std::string IsaChoices() { return "auto|avx512vnni|avxvnni|avx2|neon-dot|neon|scalar"; }

}  // namespace moondream::kernels
