// torch_compat.h: Sdpa against an explicit softmax(QK^T/sqrt(d))V with a boolean mask, and
// RunGuarded's exception -> status mapping.
#include <new>
#include <stdexcept>

#include <gtest/gtest.h>

#include "engine/model/torch_compat.h"

namespace moondream {
namespace {

TEST(Sdpa, MatchesExplicitAttentionWithMask) {
  at::manual_seed(1);
  const at::Tensor q = at::randn({2, 3, 8}), k = at::randn({2, 5, 8}), v = at::randn({2, 5, 8});
  const at::Tensor mask = at::rand({3, 5}).gt(0.4).index_fill_(1, at::tensor({0L}), true);
  const at::Tensor out = Sdpa(q, k, v, mask);
  at::Tensor expected = at::empty_like(out);
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 3; ++i) {
      at::Tensor s = (k[h].matmul(q[h][i]) / std::sqrt(8.0)).masked_fill(mask[i].logical_not(), -1e30);
      expected[h][i] = s.softmax(0).matmul(v[h]);
    }
  }
  EXPECT_TRUE(at::allclose(out, expected, 1e-5, 1e-6));
  // Undefined mask = attend everywhere.
  EXPECT_TRUE(at::allclose(Sdpa(q, k, v, at::Tensor()),
                           Sdpa(q, k, v, at::ones({3, 5}, at::kBool)), 1e-6, 1e-7));
}

TEST(Sdpa, KeepsTheInputDtype) {
  const at::Tensor q = at::randn({1, 2, 4}).to(at::kBFloat16);
  EXPECT_EQ(Sdpa(q, q, q, at::Tensor()).scalar_type(), at::kBFloat16);
}

TEST(RunGuarded, PassesResultsThrough) {
  EXPECT_TRUE(RunGuarded([] { return absl::OkStatus(); }).ok());
  absl::StatusOr<int> v = RunGuarded([]() -> absl::StatusOr<int> { return 7; });
  EXPECT_EQ(*v, 7);
  EXPECT_EQ(RunGuarded([] { return absl::NotFoundError("x"); }).code(),
            absl::StatusCode::kNotFound);
}

TEST(RunGuarded, ConvertsExceptions) {
  absl::Status torch = RunGuarded([] {
    at::ones({2}).view({3});  // shape mismatch -> c10::Error
    return absl::OkStatus();
  });
  EXPECT_EQ(torch.code(), absl::StatusCode::kInternal) << torch;
  absl::StatusOr<int> std_error = RunGuarded([]() -> absl::StatusOr<int> {
    throw std::runtime_error("boom");
  });
  EXPECT_EQ(std_error.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(RunGuarded([]() -> absl::Status { throw std::bad_alloc(); }).code(),
            absl::StatusCode::kResourceExhausted);
  absl::Status huge = RunGuarded([] {
    at::empty({int64_t{1} << 60});  // DefaultCPUAllocator refuses
    return absl::OkStatus();
  });
  EXPECT_EQ(huge.code(), absl::StatusCode::kResourceExhausted) << huge;
}

}  // namespace
}  // namespace moondream
