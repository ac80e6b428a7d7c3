// The dense GEMV (bf16 / fp32 weights): every variant this CPU runs is bit-identical to the
// scalar reference (kernels.h's exactness contract) on the text decoder's shapes and on
// odd tails, with and without bias, and the reference is accurate against fp64.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/kernels.h"
#include "tests/kernels/kernel_test_util.h"

namespace moondream::kernels {
namespace {

using test_util::Find;
using test_util::FromBf16;
using test_util::Random;
using test_util::Scalar;
using test_util::TestName;
using test_util::ToBf16;
using test_util::VariantNames;





// The last variant listed after ks that this CPU runs with the same GEMV, or null: avxvnni
// reuses avx2's, neon-dot neon's, and that variant's tests cover them.
const KernelSet* SameGemvAs(const KernelSet& ks) {
  return test_util::SharedWith(ks, [&](const KernelSet& o) { return o.gemv == ks.gemv; });
}

#define MD_VARIANT_OR_SKIP(ks)                                                           \
  const KernelSet* ks = Find(GetParam());                                                \
  ASSERT_NE(ks, nullptr) << GetParam();                                                  \
  if (!ks->runs(HostCpu())) GTEST_SKIP() << GetParam() << ": this CPU can't run it";     \
  if (const KernelSet* same = SameGemvAs(*ks)) {                                         \
    GTEST_SKIP() << GetParam() << ": the GEMV of " << same->name << " (tested there)";   \
  }


// ---- problems ------------------------------------------------------------------------------

struct Problem {
  GemvWeights type;
  int64_t n, k, ldw;
  std::vector<float> w32;    // fp32 weights [n][ldw] (padding: NaN, must never be read)
  std::vector<uint16_t> w16;  // bf16 weights [n][ldw] (padding: NaN)
  std::vector<float> x, bias;

  const void* w() const {
    return type == GemvWeights::kBFloat16 ? static_cast<const void*>(w16.data())
                                           : static_cast<const void*>(w32.data());
  }
  double W(int64_t r, int64_t c) const {
    return type == GemvWeights::kBFloat16 ? FromBf16(w16[r * ldw + c]) : w32[r * ldw + c];
  }
};

Problem Make(GemvWeights type, int64_t n, int64_t k, int64_t ldw) {
  Problem p{type, n, k, ldw, {}, {}, {}, {}};
  const std::vector<float> w = Random(static_cast<size_t>(n * ldw), n * 7 + k, 0.05f);
  if (type == GemvWeights::kBFloat16) {
    p.w16.resize(w.size());
    for (size_t i = 0; i < w.size(); ++i) {
      p.w16[i] = static_cast<int64_t>(i) % ldw < k ? ToBf16(w[i]) : uint16_t{0x7FC0};
    }
  } else {
    p.w32 = w;
    for (size_t i = 0; i < w.size(); ++i) {
      if (static_cast<int64_t>(i) % ldw >= k) p.w32[i] = NAN;
    }
  }
  p.x = Random(static_cast<size_t>(k), k * 3 + 1, 2.f);
  p.bias = Random(static_cast<size_t>(n), n + 5, 1.f);
  return p;
}

// y [n] followed by 16 guard floats that must stay untouched.
constexpr int64_t kGuard = 16;
constexpr float kGuardValue = -12345.f;

std::vector<float> RunGemv(const KernelSet& ks, const Problem& p, bool bias) {
  std::vector<float> y(static_cast<size_t>(p.n + kGuard), kGuardValue);
  GemvArgs a;
  a.type = p.type;
  a.w = p.w();
  a.n = p.n;
  a.k = p.k;
  a.ldw = p.ldw;
  a.x = p.x.data();
  a.bias = bias ? p.bias.data() : nullptr;
  a.y = y.data();
  Gemv(ks, a);
  return y;
}

std::string Describe(const Problem& p, bool bias) {
  return std::string(p.type == GemvWeights::kBFloat16 ? "bf16" : "fp32") +
         " n=" + std::to_string(p.n) + " k=" + std::to_string(p.k) +
         " ldw=" + std::to_string(p.ldw) + (bias ? " bias" : "");
}

void ExpectSame(const std::vector<float>& got, const std::vector<float>& want,
                const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
      ADD_FAILURE() << what << ": element " << i << ": " << got[i] << " vs " << want[i];
      return;
    }
  }
}

// ---- tests ---------------------------------------------------------------------------------

class GemvTest : public testing::TestWithParam<std::string> {};

// The text decoder's decode shapes (in x out), bf16 and fp32, with and without bias. One
// scalar reference per shape and type (without bias); with bias the contract's result is
// that reference + bias[r] in fp32.
TEST_P(GemvTest, ModelShapes) {
  MD_VARIANT_OR_SKIP(ks);
  if (ks == &Scalar()) GTEST_SKIP() << "scalar: the reference itself";
  for (GemvWeights type : {GemvWeights::kBFloat16, GemvWeights::kFloat32}) {
    for (const auto& [k, n] : std::vector<std::pair<int64_t, int64_t>>{
             {2048, 6144}, {2048, 2048}, {2048, 8192}, {8192, 2048}, {2048, 51200}}) {
      const Problem p = Make(type, n, k, k);
      std::vector<float> want = RunGemv(Scalar(), p, false);
      ExpectSame(RunGemv(*ks, p, false), want, std::string(ks->name) + " " + Describe(p, false));
      for (int64_t r = 0; r < n; ++r) want[r] = want[r] + p.bias[r];
      ExpectSame(RunGemv(*ks, p, true), want, std::string(ks->name) + " " + Describe(p, true));
    }
  }
}

// Odd n (row tails of every block size) and k (chunk tails, k < 16), row strides > k.
TEST_P(GemvTest, Tails) {
  MD_VARIANT_OR_SKIP(ks);
  for (GemvWeights type : {GemvWeights::kBFloat16, GemvWeights::kFloat32}) {
    for (const auto& [n, k, ldw] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {1, 1, 1}, {1, 16, 16}, {3, 5, 7}, {7, 17, 17}, {9, 31, 40}, {13, 33, 33},
             {17, 15, 16}, {63, 100, 101}, {65, 129, 130}, {257, 257, 300}, {1001, 77, 80},
             {511, 1000, 1000}, {37, 4099, 4100}}) {
      const Problem p = Make(type, n, k, ldw);
      for (bool bias : {false, true}) {
        const std::vector<float> got = RunGemv(*ks, p, bias), want = RunGemv(Scalar(), p, bias);
        ExpectSame(got, want, std::string(ks->name) + " " + Describe(p, bias));
        for (int64_t i = 0; i < kGuard; ++i) {
          EXPECT_EQ(got[p.n + i], kGuardValue) << "wrote past y: " << Describe(p, bias);
        }
      }
    }
  }
}

TEST_P(GemvTest, EmptyIsANoOp) {
  MD_VARIANT_OR_SKIP(ks);
  const Problem p = Make(GemvWeights::kBFloat16, 0, 64, 64);
  EXPECT_EQ(RunGemv(*ks, p, true), std::vector<float>(kGuard, kGuardValue));
}

INSTANTIATE_TEST_SUITE_P(Variants, GemvTest, testing::ValuesIn(VariantNames()), TestName);

// The reference against fp64 sums of the same (bf16-rounded) weights: an fp32 chain of
// k / 16 fmas per lane plus a 16-lane tree, so the error is bounded by about
// (k / 16 + 4) * 2^-24 * sum_k |w x| (plus the bias add's half ulp).
TEST(GemvAccuracy, ScalarNearFp64) {
  for (GemvWeights type : {GemvWeights::kBFloat16, GemvWeights::kFloat32}) {
    for (const auto& [n, k] : std::vector<std::pair<int64_t, int64_t>>{
             {64, 2048}, {32, 8192}, {50, 77}}) {
      const Problem p = Make(type, n, k, k);
      const std::vector<float> y = RunGemv(Scalar(), p, true);
      for (int64_t r = 0; r < n; ++r) {
        double exact = p.bias[r], mag = std::fabs(p.bias[r]);
        for (int64_t c = 0; c < k; ++c) {
          exact += p.W(r, c) * p.x[c];
          mag += std::fabs(p.W(r, c) * p.x[c]);
        }
        const double bound = (static_cast<double>(k) / 16 + 5) * std::ldexp(1.0, -24) * mag;
        ASSERT_NEAR(y[r], exact, bound) << Describe(p, true) << " row " << r;
      }
    }
  }
}

}  // namespace
}  // namespace moondream::kernels
