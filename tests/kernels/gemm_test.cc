// INT8 GEMM and row quantization: every variant this CPU runs against the scalar reference,
// bit for bit, on the model's layer shapes and on odd tails; the reference against a naive
// int32 definition.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/kernels.h"
#include "tests/kernels/kernel_test_util.h"

namespace moondream::kernels {
namespace {


// Deterministic and fast (the lm_head weight is 100 MiB): xorshift64*.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9e3779b97f4a7c15ull + 1) {}
  uint64_t Next() {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545f4914f6cdd1dull;
  }
  float Uniform() { return static_cast<float>(Next() >> 40) / static_cast<float>(1 << 24); }  // [0, 1)
  float Symmetric() { return 2.f * Uniform() - 1.f; }
  int8_t Int8() { return static_cast<int8_t>(static_cast<int>(Next() % 255) - 127); }

 private:
  uint64_t s_;
};

struct Weights {
  int64_t n, k;
  std::vector<int8_t> packed;
  std::vector<int32_t> row_sum;
  std::vector<float> scale, bias;
};

std::shared_ptr<const Weights> MakeWeights(int64_t k, int64_t n) {
  static std::map<std::pair<int64_t, int64_t>, std::shared_ptr<const Weights>> cache;
  auto& slot = cache[{k, n}];
  if (slot) return slot;
  Rng rng(static_cast<uint64_t>(k * 100003 + n));
  std::vector<int8_t> q(static_cast<size_t>(n * k));
  for (int8_t& v : q) v = rng.Int8();
  auto w = std::make_shared<Weights>();
  w->n = n;
  w->k = k;
  w->packed.resize(static_cast<size_t>(PackedInt8Bytes(n, k)));
  w->row_sum.resize(static_cast<size_t>(n));
  PackInt8Weights(q.data(), n, k, w->packed.data(), w->row_sum.data());
  for (int64_t j = 0; j < n; ++j) {
    w->scale.push_back((0.5f + rng.Uniform()) / 127.f);
    w->bias.push_back(rng.Symmetric());
  }
  slot = w;
  return slot;
}

// m rows of stride ldx: mostly uniform with an outlier per row; row 0 is zero and row 1
// tiny (quantized as zeros) when m >= 4, row 2 holds a NaN when with_nan.
std::vector<float> MakeActivations(int64_t m, int64_t k, int64_t ldx, uint64_t seed, bool with_nan) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(m * ldx), -7.f);
  for (int64_t r = 0; r < m; ++r) {
    float* row = x.data() + r * ldx;
    for (int64_t i = 0; i < k; ++i) row[i] = 3.f * rng.Symmetric();
    row[rng.Next() % k] = 40.f * rng.Symmetric();
  }
  if (m >= 4) {
    std::fill(x.begin(), x.begin() + k, 0.f);
    for (int64_t i = 0; i < k; ++i) x[ldx + i] = 1e-39f;
  }
  if (with_nan && m >= 3) x[2 * ldx + k / 2] = std::numeric_limits<float>::quiet_NaN();
  return x;
}

struct GemmCase {
  int64_t m, k, n;
  bool bias, gelu;
  int64_t ldx_pad = 0, ldy_pad = 0;
  bool with_nan = false;
};

std::string Describe(const GemmCase& c) {
  return "m=" + std::to_string(c.m) + " k=" + std::to_string(c.k) + " n=" + std::to_string(c.n) +
         (c.bias ? " bias" : "") + (c.gelu ? " gelu" : "") + (c.with_nan ? " nan" : "");
}

std::vector<float> RunGemm(const KernelSet& ks, const GemmCase& c) {
  const auto w = MakeWeights(c.k, c.n);
  const int64_t ldx = c.k + c.ldx_pad, ldy = c.n + c.ldy_pad;
  const std::vector<float> x = MakeActivations(c.m, c.k, ldx, static_cast<uint64_t>(c.m * 7 + c.k), c.with_nan);
  std::vector<float> y(static_cast<size_t>(c.m * ldy), 12345.f);
  Int8GemmArgs a;
  a.x = x.data();
  a.m = c.m;
  a.ldx = ldx;
  a.w = w->packed.data();
  a.w_row_sum = w->row_sum.data();
  a.n = c.n;
  a.k = c.k;
  a.w_scale = w->scale.data();
  a.bias = c.bias ? w->bias.data() : nullptr;
  a.y = y.data();
  a.ldy = ldy;
  a.epilogue = c.gelu ? Epilogue::kGeluTanh : Epilogue::kNone;
  Int8Gemm(ks, a);
  return y;
}

// The scalar reference's output for a case, computed once for all variants.
const std::vector<float>& Reference(const GemmCase& c) {
  static std::map<std::string, std::vector<float>> cache;
  const std::string key = Describe(c) + " " + std::to_string(c.ldx_pad) + " " + std::to_string(c.ldy_pad);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, RunGemm(test_util::Scalar(), c)).first;
  return it->second;
}

// Bit-identical floats (NaNs of any payload count as equal: the x86 and arm64 default NaNs
// differ, and no output bit depends on a payload otherwise).
::testing::AssertionResult SameBits(const std::vector<float>& want, const std::vector<float>& got) {
  if (want.size() != got.size()) return ::testing::AssertionFailure() << "size differs";
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i]) && std::isnan(got[i])) continue;
    if (std::memcmp(&want[i], &got[i], sizeof(float)) != 0) {
      return ::testing::AssertionFailure() << "element " << i << ": want " << want[i] << " got " << got[i];
    }
  }
  return ::testing::AssertionSuccess();
}

class GemmTest : public ::testing::TestWithParam<const KernelSet*> {
 protected:
  void SetUp() override {
    if (!GetParam()->runs(HostCpu())) GTEST_SKIP() << "this CPU does not run " << GetParam()->name;
  }
  void ExpectMatchesScalar(const GemmCase& c) {
    EXPECT_TRUE(SameBits(Reference(c), RunGemm(*GetParam(), c))) << GetParam()->name << " " << Describe(c);
  }
};

// The model's layers (k x n): vision, projection, text, lm_head.
TEST_P(GemmTest, Shapes) {
  const std::vector<std::tuple<int64_t, int64_t, std::vector<int64_t>>> shapes = {
      {1152, 3456, {1, 2, 7}},   {1152, 1152, {1, 2, 7, 730}}, {1152, 4304, {1, 7}},
      {4304, 1152, {1, 7}},      {4304, 192, {730}},           {2304, 8192, {1, 7}},
      {8192, 2048, {1, 2, 7}},   {2048, 6144, {1, 2, 7}},      {2048, 2048, {1, 2, 7}},
      {2048, 8192, {1, 7}},      {2048, 51200, {1}},
  };
  int i = 0;
  for (const auto& [k, n, ms] : shapes) {
    for (int64_t m : ms) {
      ++i;
      ExpectMatchesScalar({m, k, n, /*bias=*/i % 2 == 0, /*gelu=*/i % 3 == 0});
    }
  }
}

TEST_P(GemmTest, OddTails) {
  for (int64_t k : {1, 3, 5, 17, 63}) {
    for (int64_t n : {1, 15, 17, 65, 100}) {
      for (int64_t m : {1, 5, 7, 13}) {  // partial tiles of the 4- and 6-row kernels
        for (int flags = 0; flags < 4; ++flags) {
          ExpectMatchesScalar({m, k, n, (flags & 1) != 0, (flags & 2) != 0, /*ldx_pad=*/k % 3,
                               /*ldy_pad=*/n % 2, /*with_nan=*/flags == 3});
        }
      }
    }
  }
}

TEST_P(GemmTest, QuantizeRows) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int64_t k : {1, 3, 4, 15, 16, 17, 31, 100, 2053}) {
    Rng rng(static_cast<uint64_t>(k));
    const int64_t ldx = k + 1, ldq = (k + 3) / 4 * 4 + 4;
    std::vector<std::vector<float>> rows;
    auto random_row = [&](float amp) {
      std::vector<float> r(static_cast<size_t>(k));
      for (float& v : r) v = amp * rng.Symmetric();
      return r;
    };
    rows.push_back(random_row(1.f));
    rows.push_back(random_row(3e38f));
    rows.push_back(random_row(1e-30f));
    rows.push_back(random_row(1e-39f));            // inv = +inf: a zero row
    rows.push_back(std::vector<float>(k, 0.f));
    std::vector<float> ties = random_row(127.f);  // amax 127: inv 1, x * inv = x exactly
    ties[0] = -127.f;
    for (int64_t i = 1; i < k; ++i) ties[i] = static_cast<float>(static_cast<int>(ties[i])) + 0.5f;
    rows.push_back(ties);
    for (float bad : {nan, inf, -inf}) {
      rows.push_back(random_row(2.f));
      rows.back()[rng.Next() % k] = bad;
    }
    const int64_t m = static_cast<int64_t>(rows.size());
    std::vector<float> x(static_cast<size_t>(m * ldx), 99.f);
    for (int64_t r = 0; r < m; ++r) std::copy(rows[r].begin(), rows[r].end(), x.begin() + r * ldx);

    auto run = [&](const KernelSet& ks, std::vector<int8_t>* q, std::vector<float>* scale) {
      q->assign(static_cast<size_t>(m * ldq), 55);
      scale->assign(static_cast<size_t>(m), 55.f);
      ks.quantize_rows(x.data(), m, k, ldx, q->data(), ldq, scale->data());
    };
    std::vector<int8_t> q_ref, q;
    std::vector<float> s_ref, s;
    run(test_util::Scalar(), &q_ref, &s_ref);
    run(*GetParam(), &q, &s);
    EXPECT_EQ(0, std::memcmp(q_ref.data(), q.data(), q.size())) << "q, k=" << k;
    EXPECT_EQ(0, std::memcmp(s_ref.data(), s.data(), s.size() * sizeof(float))) << "scales, k=" << k;
    // The reference semantics themselves, on a few rows.
    EXPECT_EQ(s_ref[3], 0.f);
    EXPECT_EQ(s_ref[4], 0.f);
    for (int64_t r : {6, 7, 8}) EXPECT_TRUE(std::isnan(s_ref[static_cast<size_t>(r)])) << r;
    for (int64_t i = 0; i < ldq; ++i) {
      EXPECT_EQ(q_ref[static_cast<size_t>(6 * ldq + i)], 0);
      if (i >= k) {
        EXPECT_EQ(q_ref[static_cast<size_t>(i)], 0) << "padding";
      }
    }
    EXPECT_EQ(s_ref[5], 1.f);
    for (int64_t i = 0; i < k; ++i) {
      EXPECT_EQ(q_ref[static_cast<size_t>(5 * ldq + i)], static_cast<int8_t>(std::nearbyint(ties[i])));
    }
  }
}

std::vector<const KernelSet*> Variants() {
  std::vector<const KernelSet*> v;
  for (const KernelSet* ks : AllKernelSets()) {
    if (std::string(ks->name) != "scalar") v.push_back(ks);
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(Variants, GemmTest, ::testing::ValuesIn(Variants()),
                         [](const ::testing::TestParamInfo<const KernelSet*>& info) {
                           std::string name = info.param->name;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// The reference against the definition: with activations that quantize to themselves
// (integers, max |x| = 127, so scale 1) and unit weight scales, y = float(sum q_a q_w).
TEST(GemmScalar, MatchesNaiveInt32) {
  const int64_t m = 5, k = 4099, n = 77;
  Rng rng(42);
  std::vector<int8_t> qw(static_cast<size_t>(n * k));
  for (int8_t& v : qw) v = rng.Int8();
  std::vector<float> x(static_cast<size_t>(m * k));
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t i = 0; i < k; ++i) x[r * k + i] = static_cast<float>(rng.Int8());
    x[r * k + r] = r % 2 == 0 ? 127.f : -127.f;
  }
  std::vector<int8_t> packed(static_cast<size_t>(PackedInt8Bytes(n, k)));
  std::vector<int32_t> row_sum(static_cast<size_t>(n));
  PackInt8Weights(qw.data(), n, k, packed.data(), row_sum.data());
  const std::vector<float> ones(static_cast<size_t>(n), 1.f);
  std::vector<float> y(static_cast<size_t>(m * n));
  Int8GemmArgs a;
  a.x = x.data();
  a.m = m;
  a.ldx = k;
  a.w = packed.data();
  a.w_row_sum = row_sum.data();
  a.n = n;
  a.k = k;
  a.w_scale = ones.data();
  a.y = y.data();
  a.ldy = n;
  Int8Gemm(test_util::Scalar(), a);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      int64_t sum = 0, wsum = 0;
      for (int64_t i = 0; i < k; ++i) {
        sum += static_cast<int64_t>(x[r * k + i]) * qw[j * k + i];
        wsum += qw[j * k + i];
      }
      ASSERT_EQ(y[r * n + j], static_cast<float>(sum)) << r << ", " << j;
      ASSERT_EQ(row_sum[j], 128 * wsum) << j;
    }
  }
}

// Packing over q itself (what Linear::Int8 does with a plain copy it owns) writes the same
// bytes and row sums as packing into a separate buffer, on the model's layer shapes and a
// short last panel; shapes with padding are not packable in place.
TEST(PackInt8, InPlaceEqualsSeparate) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {3456, 1152}, {4304, 1152}, {1152, 4304}, {6144, 2048}, {2048, 8192}, {80, 12}, {16, 4}};
  for (const auto& [n, k] : shapes) {
    SCOPED_TRACE(std::to_string(n) + "x" + std::to_string(k));
    ASSERT_TRUE(PackableInPlace(n, k));
    ASSERT_EQ(PackedInt8Bytes(n, k), n * k);
    Rng rng(static_cast<uint64_t>(n * 31 + k));
    std::vector<int8_t> q(static_cast<size_t>(n * k));
    for (int8_t& v : q) v = rng.Int8();
    std::vector<int8_t> packed(q.size()), in_place = q;
    std::vector<int32_t> row_sum(static_cast<size_t>(n)), row_sum_in_place(row_sum.size());
    PackInt8Weights(q.data(), n, k, packed.data(), row_sum.data());
    PackInt8Weights(in_place.data(), n, k, in_place.data(), row_sum_in_place.data());
    EXPECT_EQ(in_place, packed);
    EXPECT_EQ(row_sum_in_place, row_sum);
  }
  EXPECT_FALSE(PackableInPlace(77, 4096));
  EXPECT_FALSE(PackableInPlace(64, 4099));
}

}  // namespace
}  // namespace moondream::kernels
