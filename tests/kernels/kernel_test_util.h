// Helpers shared by the kernel tests (LibTorch-free: they also run under qemu).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/kernels.h"

namespace moondream::kernels::test_util {

// Deterministic uniform floats in [-amp, amp].
inline std::vector<float> Random(size_t n, uint64_t seed, float amp) {
  std::vector<float> x(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& v : x) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    v = amp * (static_cast<float>(s >> 40) / static_cast<float>(1ull << 23) - 1.f);
  }
  return x;
}

inline uint16_t ToBf16(float f) {  // round to nearest even (finite inputs)
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7FFF + ((b >> 16) & 1);
  return static_cast<uint16_t>(b >> 16);
}

inline float FromBf16(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// Every variant's name, for parameterized tests, and a gtest-safe test name for it.
inline std::vector<std::string> VariantNames() {
  std::vector<std::string> names;
  for (const KernelSet* ks : AllKernelSets()) names.push_back(ks->name);
  return names;
}

inline std::string TestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

inline const KernelSet& Scalar() {
  for (const KernelSet* ks : AllKernelSets()) {
    if (std::string(ks->name) == "scalar") return *ks;
  }
  std::abort();
}

inline const KernelSet* Find(const std::string& name) {
  for (const KernelSet* ks : AllKernelSets()) {
    if (name == ks->name) return ks;
  }
  return nullptr;
}

// The last variant listed after ks (AllKernelSets: fastest first, so the most basic one)
// that this CPU runs and for which same(*it) holds (it shares ks's kernels), or null:
// avxvnni reuses avx2's attention and GEMV, neon-dot neon's, and that variant's tests
// cover them.
template <typename Same>
const KernelSet* SharedWith(const KernelSet& ks, Same same) {
  const std::vector<const KernelSet*>& all = AllKernelSets();
  const KernelSet* found = nullptr;
  for (auto it = std::find(all.begin(), all.end(), &ks) + 1; it < all.end(); ++it) {
    if (same(**it) && (*it)->runs(HostCpu())) found = *it;
  }
  return found;
}

}  // namespace moondream::kernels::test_util
