// CachedAttention (engine/model/attention.h) against Sdpa over the joined cache: the fused
// one-row kernel (fp32, bf16 and int8 caches, head_dim not a multiple of 16, a shared prefix plus
// own positions) and the head-chunked path with a mask; plus KvCache::Extend sharing.
#include <gtest/gtest.h>

#include "engine/model/attention.h"
#include "engine/model/torch_compat.h"

namespace moondream {
namespace {

TextConfig SmallConfig(int heads, int head_dim) {
  TextConfig c;
  c.dim = heads * head_dim;
  c.n_heads = heads;
  c.n_layers = 2;
  c.max_context = 4096;
  return c;
}

// A prefix cache of `prefix` random positions and a request cache extending it with `own`.
KvCache Filled(const TextConfig& c, int64_t prefix, int64_t own, at::ScalarType dtype) {
  KvCache image = KvCache::Allocate(c, prefix, dtype, at::kCPU);
  for (int l = 0; l < c.n_layers; ++l) {
    image.Write(l, 0, at::randn({c.n_heads, prefix, c.head_dim()}),
                at::randn({c.n_heads, prefix, c.head_dim()}));
  }
  KvCache request = KvCache::Extend(image, prefix + own + 3);
  for (int l = 0; l < c.n_layers; ++l) {
    request.Write(l, prefix, at::randn({c.n_heads, own, c.head_dim()}),
                  at::randn({c.n_heads, own, c.head_dim()}));
  }
  return request;
}

at::Tensor Reference(const at::Tensor& q, const std::vector<KvSegment>& kv, const at::Tensor& mask) {
  std::vector<at::Tensor> k, v;
  auto fp32 = [](const at::Tensor& rows, const at::Tensor& scales) {
    return scales.defined() ? rows.to(at::kFloat) * scales.unsqueeze(-1) : rows.to(at::kFloat);
  };
  for (const KvSegment& s : kv) {
    k.push_back(fp32(s.keys, s.key_scales));
    v.push_back(fp32(s.values, s.value_scales));
  }
  return Sdpa(q.to(at::kFloat), at::cat(k, 1), at::cat(v, 1), mask);
}

class FusedDecode : public ::testing::TestWithParam<std::tuple<at::ScalarType, int64_t>> {};

TEST_P(FusedDecode, MatchesSdpaOverTheJoinedCache) {
  const auto [dtype, head_dim] = GetParam();
  at::manual_seed(3);
  const TextConfig c = SmallConfig(5, head_dim);
  const KvCache cache = Filled(c, 37, 4, dtype);
  ASSERT_EQ(cache.Segments(1, 41).size(), 2u);
  const at::Tensor q = at::randn({5, 1, head_dim});
  const kernels::KernelSet* ks = &kernels::DefaultKernels();
  const at::Tensor out = CachedAttention(q, cache.Segments(1, 41), at::Tensor(), ks);
  EXPECT_EQ(out.sizes(), q.sizes());
  EXPECT_TRUE(at::allclose(out, Reference(q, cache.Segments(1, 41), at::Tensor()), 1e-5, 1e-6));
  // Fewer positions than written: only the prefix.
  EXPECT_TRUE(at::allclose(CachedAttention(q, cache.Segments(0, 20), at::Tensor(), ks),
                           Reference(q, cache.Segments(0, 20), at::Tensor()), 1e-5, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, FusedDecode,
                         ::testing::Combine(::testing::Values(at::kFloat, at::kBFloat16, at::kChar),
                                            ::testing::Values(int64_t{64}, int64_t{128}, int64_t{72}, int64_t{8})));

TEST(CachedAttention, ChunkedPrefillMatchesOneCallWithMask) {
  at::manual_seed(4);
  // 4 heads x 700 x 800 fp32 scores = 9 MB > the 8 MiB budget: attended in head groups.
  const TextConfig c = SmallConfig(4, 16);
  const KvCache cache = Filled(c, 730, 70, at::kFloat);
  const at::Tensor q = at::randn({4, 700, 16});
  const at::Tensor rows = at::arange(100, 800).unsqueeze(1), cols = at::arange(800).unsqueeze(0);
  const at::Tensor mask = cols.le(rows);
  const auto kv = cache.Segments(0, 800);
  const at::Tensor chunked = CachedAttention(q, kv, mask, &kernels::DefaultKernels());
#if defined(__aarch64__)
  // OpenBLAS's threaded SVE sgemm (qemu -cpu max, Graviton 3) splits a batched product by
  // its batch of heads, so a head group's last bits can differ from one call's; a wrong
  // mask offset or head order errs by O(1). Bit for bit under NEON-only models and on x86.
  EXPECT_TRUE(at::allclose(chunked, Reference(q, kv, mask), 0, 1e-5));
#else
  EXPECT_TRUE(at::equal(chunked, Reference(q, kv, mask)));
#endif
}

TEST(KvCache, ExtendSharesThePrefixAndWritesOnlyItsOwnPositions) {
  const TextConfig c = SmallConfig(2, 8);
  KvCache image = KvCache::Allocate(c, 10, at::kFloat, at::kCPU);
  image.Write(0, 0, at::ones({2, 10, 8}), at::ones({2, 10, 8}));
  KvCache request = KvCache::Extend(image, 16);
  EXPECT_EQ(request.length(), 10);
  EXPECT_EQ(request.capacity(), 16);
  EXPECT_EQ(request.bytes(), 4u * 2 * 2 * 2 * 6 * 8);  // own 6 positions only
  EXPECT_EQ(request.Segments(0, 10).front().keys.data_ptr(), image.data().data_ptr());
  EXPECT_THROW(request.Write(0, 9, at::zeros({2, 1, 8}), at::zeros({2, 1, 8})), c10::Error);
  request.Write(0, 10, at::zeros({2, 1, 8}), at::zeros({2, 1, 8}));
  EXPECT_EQ(request.length(), 11);
  EXPECT_TRUE(at::equal(image.data(), at::cat({at::ones({1, 2, 1, 2, 10, 8}), at::zeros({1, 2, 1, 2, 10, 8})})));
  EXPECT_THROW(KvCache::Extend(request, 20), c10::Error);
}

TEST(KvCache, Int8RowsRoundTripWithinHalfAStepAndShareTheirScales) {
  at::manual_seed(5);
  const TextConfig c = SmallConfig(3, 16);
  KvCache image = KvCache::Allocate(c, 12, at::kChar, at::kCPU);
  const at::Tensor k = at::randn({3, 12, 16}) * 4, v = at::randn({3, 12, 16});
  image.Write(1, 0, k, v);
  image.Write(0, 0, at::zeros({3, 12, 16}), at::zeros({3, 12, 16}));  // zero rows: scale 0
  const KvSegment seg = image.Segments(1, 12).front();
  ASSERT_EQ(seg.keys.scalar_type(), at::kChar);
  const at::Tensor step = k.abs().amax(-1, true) / 127;  // per row
  const at::Tensor back = seg.keys.to(at::kFloat) * seg.key_scales.unsqueeze(-1);
  EXPECT_TRUE((back - k).abs().le(step / 2 + 1e-6).all().item<bool>());
  EXPECT_TRUE(image.Segments(0, 12).front().key_scales.eq(0).all().item<bool>());
  KvCache request = KvCache::Extend(image, 14);
  EXPECT_EQ(request.Segments(1, 12).front().key_scales.data_ptr(), seg.key_scales.data_ptr());
  EXPECT_EQ(request.bytes(), 2u * 2 * 3 * 2 * 16 + 4u * 2 * 2 * 3 * 2);  // own q + scales
}

}  // namespace
}  // namespace moondream
