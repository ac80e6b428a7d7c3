// The dispatch: ISA names, CPU detection, --cpu-isa resolution and its refusals.
#include <cstdlib>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "kernels/kernels.h"

namespace moondream::kernels {
namespace {

TEST(Dispatch, NamesRoundTrip) {
  for (Isa isa : {Isa::kScalar, Isa::kNeon, Isa::kNeonDot, Isa::kAvx2, Isa::kAvxVnni,
                  Isa::kAvx512Vnni}) {
    Isa parsed;
    ASSERT_TRUE(ParseIsa(IsaName(isa), &parsed)) << IsaName(isa);
    EXPECT_EQ(parsed, isa);
    EXPECT_NE(IsaChoices().find(IsaName(isa)), std::string::npos);
  }
  Isa unused;
  EXPECT_FALSE(ParseIsa("sse4", &unused));
  EXPECT_FALSE(ParseIsa("auto", &unused));  // the callers' word, not an ISA
}

TEST(Dispatch, AutoPicksTheBestIsaAndEveryRunnableIsaResolves) {
  std::string error;
  const KernelSet* best = ResolveKernels("auto", &error);
  ASSERT_NE(best, nullptr) << error;
  EXPECT_EQ(best->isa, BestIsa(HostCpu()));
  EXPECT_TRUE(best->runs(HostCpu()));
  std::set<std::string> names;
  for (const KernelSet* ks : AllKernelSets()) {
    EXPECT_TRUE(names.insert(ks->name).second) << "duplicate variant " << ks->name;
    if (!ks->runs(HostCpu())) continue;
    const KernelSet* resolved = ResolveKernels(IsaName(ks->isa), &error);
    ASSERT_NE(resolved, nullptr) << error;
    EXPECT_EQ(resolved->isa, ks->isa);
  }
  EXPECT_EQ(ResolveKernels("scalar", &error)->name, std::string("scalar"));
}

TEST(Dispatch, RefusesAnIsaTheCpuLacksOrAnUnknownName) {
  std::string error;
  EXPECT_EQ(ResolveKernels("avx9000", &error), nullptr);
  EXPECT_NE(error.find("unknown"), std::string::npos) << error;
  EXPECT_NE(error.find(IsaChoices()), std::string::npos) << error;
#if defined(__x86_64__)
  const char* foreign = "neon-dot";  // another architecture's ISA: never runnable here
#else
  const char* foreign = "avx2";
#endif
  error.clear();
  EXPECT_EQ(ResolveKernels(foreign, &error), nullptr);
  EXPECT_NE(error.find("this CPU lacks"), std::string::npos) << error;
  EXPECT_NE(error.find("scalar"), std::string::npos) << "lists what runs: " << error;
}

#if defined(__x86_64__)
// avxvnni is the VEX form where the CPU has it, else the EVEX-256 twin.
TEST(Dispatch, AvxVnniPicksTheFormTheCpuRuns) {
  std::string error;
  const KernelSet* ks = ResolveKernels("avxvnni", &error);
  const CpuFeatures& cpu = HostCpu();
  if (cpu.avx2 && cpu.fma && cpu.avxvnni) {
    ASSERT_NE(ks, nullptr) << error;
    EXPECT_EQ(ks->name, std::string("avxvnni"));
  } else if (cpu.avx2 && cpu.fma && cpu.avx512vl && cpu.avx512vnni) {
    ASSERT_NE(ks, nullptr) << error;
    EXPECT_EQ(ks->name, std::string("avxvnni-evex256"));
  } else {
    EXPECT_EQ(ks, nullptr);
  }
}
#endif

// Under qemu (tests/kernels/arm64) the runner names the ISA the emulated CPU model must
// select, so a dot-product model that silently fell back to plain NEON fails here.
TEST(Dispatch, SelectsTheIsaTheRunnerExpects) {
  const char* expected = std::getenv("MOONDREAM_EXPECT_ISA");
  if (expected == nullptr) GTEST_SKIP() << "MOONDREAM_EXPECT_ISA unset (native run)";
  std::string error;
  const KernelSet* ks = ResolveKernels("auto", &error);
  ASSERT_NE(ks, nullptr) << error;
  EXPECT_EQ(std::string(IsaName(ks->isa)), expected);
}

}  // namespace
}  // namespace moondream::kernels
