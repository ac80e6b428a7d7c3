// KernelSelfAttention (engine/model/attention.h, the INT8 plan's attention over
// kernels::SelfAttention) against softmax(q·kᵀ/√hd)·v in fp64, on every kernel variant this
// CPU runs: shapes of the vision tower (729 tokens, 16 heads of 72), key panel and query
// block tails, head dims across one and two value tiles, strided qkv rows, peaked scores.
// (tests/kernels proves the variants bit-identical to each other.)
#include <algorithm>
#include <cmath>
#include <tuple>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "engine/model/attention.h"
#include "kernels/kernels.h"

namespace moondream {
namespace {

// qkv: [T, 3·H·hd] -> [T, H·hd] in fp64.
at::Tensor Reference(const at::Tensor& qkv, int64_t heads) {
  const int64_t t = qkv.size(0), hd = qkv.size(1) / (3 * heads);
  const at::Tensor x = qkv.to(at::kDouble).view({t, 3, heads, hd}).permute({1, 2, 0, 3});
  const at::Tensor scores = at::matmul(x[0], x[1].transpose(-2, -1)) / std::sqrt(double(hd));
  return at::matmul(at::softmax(scores, -1), x[2]).transpose(0, 1).reshape({t, heads * hd});
}

// Within 2e-6 of the inputs' scale, or twice the error of ATen's fp32 evaluation where the
// problem itself is worse conditioned (peaked softmax of scores in the hundreds).
void ExpectClose(const kernels::KernelSet& ks, const at::Tensor& qkv, int64_t heads) {
  SCOPED_TRACE(ks.name);
  const at::Tensor out = KernelSelfAttention(ks, qkv, heads);
  const at::Tensor ref = Reference(qkv, heads);
  ASSERT_EQ(out.sizes(), ref.sizes());
  ASSERT_EQ(out.scalar_type(), at::kFloat);
  const int64_t t = qkv.size(0), hd = qkv.size(1) / (3 * heads);
  const at::Tensor x = qkv.view({t, 3, heads, hd}).permute({1, 2, 0, 3});
  const at::Tensor aten =
      at::matmul(at::softmax(at::matmul(x[0], x[1].transpose(-2, -1)) / std::sqrt(double(hd)), -1),
                 x[2]).transpose(0, 1).reshape({t, heads * hd});
  const double aten_err = (aten.to(at::kDouble) - ref).abs().max().item<double>();
  const double err = (out.to(at::kDouble) - ref).abs().max().item<double>();
  const double scale = qkv.abs().max().item<double>();  // outputs are averages of v
  EXPECT_LE(err, std::max(2e-6 * scale, 2 * aten_err))
      << "T " << t << " heads " << heads << " (ATen fp32 error " << aten_err << ")";
}

class FusedAttention
    : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

// Every variant this CPU runs.
void ExpectCloseOnEveryIsa(const at::Tensor& qkv, int64_t heads) {
  for (const kernels::KernelSet* ks : kernels::AllKernelSets()) {
    if (ks->runs(kernels::HostCpu())) ExpectClose(*ks, qkv, heads);
  }
}

TEST_P(FusedAttention, MatchesFp64Softmax) {
  const auto [t, heads, hd] = GetParam();
  at::manual_seed(t * 131 + heads * 7 + hd);
  ExpectCloseOnEveryIsa(at::randn({t, 3 * heads * hd}) * 2, heads);
}

// T: vision (729 = 7 full key panels + 57, 182 query blocks + 1), one token, a block tail,
// exactly one panel; hd: vision 72 (5 zmm, masked), 16, 8 (< one zmm), 100 (two value tiles).
INSTANTIATE_TEST_SUITE_P(Shapes, FusedAttention,
                         ::testing::Values(std::make_tuple(729, 16, 72), std::make_tuple(1, 1, 8),
                                           std::make_tuple(5, 2, 16), std::make_tuple(96, 3, 72),
                                           std::make_tuple(97, 2, 100),
                                           std::make_tuple(200, 4, 64)));

TEST(FusedAttentionInputs, StridedRowsAndPeakedScores) {
  at::manual_seed(3);
  // Rows of a wider buffer (row stride != 3·H·hd).
  const at::Tensor wide = at::randn({150, 3 * 4 * 24 + 40});
  ExpectCloseOnEveryIsa(wide.narrow(1, 0, 3 * 4 * 24), 4);
  // Scores in the hundreds: softmax close to one-hot, exp arguments far below -87.
  ExpectCloseOnEveryIsa(at::randn({150, 3 * 2 * 32}) * 12, 2);
}

TEST(FusedAttentionInputs, ThreadCountDoesNotChangeResult) {
  const kernels::KernelSet& ks = kernels::DefaultKernels();
  const at::Tensor qkv = at::randn({100, 3 * 5 * 40});
  const int saved = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor a = KernelSelfAttention(ks, qkv, 5);
  at::set_num_threads(2);
  const at::Tensor b = KernelSelfAttention(ks, qkv, 5);
  at::set_num_threads(saved);
  EXPECT_TRUE(at::equal(a, b));
}

TEST(FusedAttentionInputs, RejectsBadShapes) {
  const kernels::KernelSet& ks = kernels::DefaultKernels();
  EXPECT_THROW(KernelSelfAttention(ks, at::randn({10, 3 * 4 * 8 + 1}), 4), c10::Error);
  EXPECT_THROW(KernelSelfAttention(ks, at::randn({10, 96}).to(at::kBFloat16), 4), c10::Error);
  EXPECT_THROW(KernelSelfAttention(ks, at::randn({96, 10}).t(), 4), c10::Error);
}

}  // namespace
}  // namespace moondream
