// The attention kernels: every variant this CPU runs is bit-identical to the scalar
// reference (kernels.h's exactness contract), and the reference is accurate against a
// naive fp64 implementation.
#include <omp.h>

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

// ---- data --------------------------------------------------------------------------------




// The last variant listed after ks (AllKernelSets: fastest first, so the most basic one)
// that this CPU runs with the same attention kernels, or null: avxvnni reuses avx2's,
// neon-dot neon's, and that variant's tests cover them.
const KernelSet* SameKernelsAs(const KernelSet& ks) {
  return test_util::SharedWith(ks, [&](const KernelSet& o) {
    return o.self_attention == ks.self_attention && o.decode_attention == ks.decode_attention;
  });
}

// The parameterized tests' variant; skipped when this CPU can't run it or when its
// attention kernels are another runnable variant's.
#define MD_VARIANT_OR_SKIP(ks)                                                           \
  const KernelSet* ks = Find(GetParam());                                                \
  ASSERT_NE(ks, nullptr) << GetParam();                                                  \
  if (!ks->runs(HostCpu())) GTEST_SKIP() << GetParam() << ": this CPU can't run it";     \
  if (const KernelSet* same = SameKernelsAs(*ks)) {                                      \
    GTEST_SKIP() << GetParam() << ": the attention kernels of " << same->name            \
                 << " (tested there)";                                                   \
  }


// Outputs are compared as bytes: the contract is bit-identity, NaN payloads included.
bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// First differing element, for the failure message.
std::string FirstDiff(const std::vector<float>& a, const std::vector<float>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      return "element " + std::to_string(i) + ": " + std::to_string(a[i]) + " vs " +
             std::to_string(b[i]);
    }
  }
  return "sizes " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
}

// ---- self-attention ----------------------------------------------------------------------

struct SelfCase {
  int64_t t, heads, hd, ld;  // ld >= 3 * heads * hd
};

std::string Describe(const SelfCase& c) {
  return "t=" + std::to_string(c.t) + " heads=" + std::to_string(c.heads) +
         " hd=" + std::to_string(c.hd) + " ld=" + std::to_string(c.ld);
}

std::vector<float> SelfInput(const SelfCase& c) {
  // q scaled up so that softmax rows are far from uniform.
  std::vector<float> qkv = Random(static_cast<size_t>(c.t * c.ld), c.t * 131 + c.hd, 1.f);
  for (int64_t i = 0; i < c.t; ++i) {
    for (int64_t j = 0; j < c.heads * c.hd; ++j) qkv[i * c.ld + j] *= 4.f;
  }
  return qkv;
}

// out [t, heads * hd] followed by 16 guard floats that must stay untouched.
constexpr int64_t kGuard = 16;
constexpr float kGuardValue = -12345.f;

std::vector<float> RunSelf(const KernelSet& ks, const SelfCase& c, const std::vector<float>& qkv) {
  std::vector<float> out(static_cast<size_t>(c.t * c.heads * c.hd + kGuard), kGuardValue);
  SelfAttentionArgs a;
  a.qkv = qkv.data();
  a.t = c.t;
  a.ld = c.ld;
  a.heads = c.heads;
  a.hd = c.hd;
  a.out = out.data();
  SelfAttention(ks, a);
  return out;
}

// Heads are independent, so the reference for some heads of a case is the scalar kernel on
// a problem of just those heads (rows packed: ld = 3 * their width). Returns [t][heads.size()
// * hd] without guard. Cached: the tests of all variants share it within one process.
const std::vector<float>& SelfReference(const SelfCase& c, const std::vector<float>& qkv,
                                        const std::vector<int64_t>& heads) {
  static std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, std::vector<int64_t>>,
                  std::vector<float>>
      cache;
  const auto key = std::make_tuple(c.t, c.heads, c.hd, c.ld, heads);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const int64_t n = static_cast<int64_t>(heads.size());
  const SelfCase sub{c.t, n, c.hd, 3 * n * c.hd};
  std::vector<float> sub_qkv(static_cast<size_t>(c.t * sub.ld));
  for (int64_t i = 0; i < c.t; ++i) {
    for (int64_t part = 0; part < 3; ++part) {  // q, k, v
      for (int64_t k = 0; k < n; ++k) {
        const float* from = &qkv[i * c.ld + (part * c.heads + heads[k]) * c.hd];
        std::copy(from, from + c.hd, &sub_qkv[i * sub.ld + (part * n + k) * c.hd]);
      }
    }
  }
  std::vector<float> want = RunSelf(Scalar(), sub, sub_qkv);
  want.resize(want.size() - kGuard);
  return cache.emplace(key, std::move(want)).first->second;
}

// The variant on the whole case; the given heads of its output compared with the reference.
void ExpectSelfMatchesScalar(const KernelSet& ks, const SelfCase& c,
                             const std::vector<int64_t>& heads) {
  const std::vector<float> qkv = SelfInput(c);
  const std::vector<float>& want = SelfReference(c, qkv, heads);
  const std::vector<float> out = RunSelf(ks, c, qkv);
  std::vector<float> got;
  for (int64_t i = 0; i < c.t; ++i) {
    for (int64_t h : heads) {
      const float* from = &out[(i * c.heads + h) * c.hd];
      got.insert(got.end(), from, from + c.hd);
    }
  }
  EXPECT_TRUE(SameBits(got, want)) << ks.name << " " << Describe(c) << ": " << FirstDiff(got, want);
  for (int64_t i = 0; i < kGuard; ++i) {
    EXPECT_EQ(out[out.size() - kGuard + i], kGuardValue) << "wrote past out: " << Describe(c);
  }
}

std::vector<int64_t> AllHeads(int64_t heads) {
  std::vector<int64_t> all(static_cast<size_t>(heads));
  for (int64_t h = 0; h < heads; ++h) all[h] = h;
  return all;
}

class SelfAttentionTest : public testing::TestWithParam<std::string> {};

// Vision (1152 wide, 16 heads of 72; packed rows and rows inside a wider buffer) and the
// text prefix (2048 wide, 32 heads of 64). The variant runs the whole shape; its first and
// last heads (the last ends each row's v) are checked: the scalar reference of every head
// would cost ~4.6e9 fmaf calls, and ctest runs each variant's test in its own process.
TEST_P(SelfAttentionTest, ModelShapes) {
  MD_VARIANT_OR_SKIP(ks);
  if (ks == &Scalar()) GTEST_SKIP() << "scalar: the reference itself (~4.6e9 fmaf calls here)";
  for (const SelfCase& c : {SelfCase{729, 16, 72, 3 * 1152}, SelfCase{729, 16, 72, 3 * 1152 + 24},
                            SelfCase{730, 32, 64, 3 * 2048}}) {
    ExpectSelfMatchesScalar(*ks, c, {0, c.heads - 1});
  }
}

// Every tail: query row blocks, key panels, 16-wide chunks of hd.
TEST_P(SelfAttentionTest, SmallShapes) {
  MD_VARIANT_OR_SKIP(ks);
  for (int64_t t : {1, 2, 5, 97, 129}) {
    for (int64_t hd : {1, 8, 17, 64, 72, 80}) {
      const int64_t heads = 3;
      ExpectSelfMatchesScalar(*ks, SelfCase{t, heads, hd, 3 * heads * hd + 5}, AllHeads(heads));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, SelfAttentionTest, testing::ValuesIn(VariantNames()),
                         TestName);

// ---- decode ------------------------------------------------------------------------------


// One segment's storage, laid out like a KV cache: [heads][capacity][row_stride], int8
// scales [heads][capacity]; rows [0, n) are used.
struct Segment {
  KvType type;
  int64_t n, capacity, row_stride;
  std::vector<float> f32_k, f32_v;
  std::vector<uint16_t> bf16_k, bf16_v;
  std::vector<int8_t> i8_k, i8_v;
  std::vector<float> k_scale, v_scale;

  // Element d of row j of head h as the kernel sees it (dequantized: bf16 exactly, int8
  // times its row scale in fp64).
  double Key(int64_t h, int64_t j, int64_t d) const { return At(h, j, d, f32_k, bf16_k, i8_k, k_scale); }
  double Value(int64_t h, int64_t j, int64_t d) const { return At(h, j, d, f32_v, bf16_v, i8_v, v_scale); }

  KvSegment View() const {
    KvSegment s;
    s.type = type;
    s.n = n;
    s.head_stride = capacity * row_stride;
    s.row_stride = row_stride;
    switch (type) {
      case KvType::kFloat32: s.keys = f32_k.data(); s.values = f32_v.data(); break;
      case KvType::kBFloat16: s.keys = bf16_k.data(); s.values = bf16_v.data(); break;
      case KvType::kInt8:
        s.keys = i8_k.data();
        s.values = i8_v.data();
        s.key_scales = k_scale.data();
        s.value_scales = v_scale.data();
        s.scale_head_stride = capacity;
        break;
    }
    return s;
  }

 private:
  double At(int64_t h, int64_t j, int64_t d, const std::vector<float>& f,
            const std::vector<uint16_t>& b, const std::vector<int8_t>& q,
            const std::vector<float>& scale) const {
    const int64_t i = (h * capacity + j) * row_stride + d;
    switch (type) {
      case KvType::kFloat32: return f[i];
      case KvType::kBFloat16: return FromBf16(b[i]);
      case KvType::kInt8: return static_cast<double>(q[i]) * scale[h * capacity + j];
    }
    return 0;
  }
};

Segment MakeSegment(KvType type, int64_t heads, int64_t hd, int64_t n, uint64_t seed) {
  Segment s;
  s.type = type;
  s.n = n;
  s.capacity = n + 7;       // rows past n: cache slots not yet written
  s.row_stride = hd + 3;    // a padded row, so row_stride != hd
  const size_t size = static_cast<size_t>(heads * s.capacity * s.row_stride);
  const std::vector<float> k = Random(size, seed, 1.f), v = Random(size, seed + 1, 1.f);
  switch (type) {
    case KvType::kFloat32: s.f32_k = k; s.f32_v = v; break;
    case KvType::kBFloat16:
      for (size_t i = 0; i < size; ++i) {
        s.bf16_k.push_back(ToBf16(k[i]));
        s.bf16_v.push_back(ToBf16(v[i]));
      }
      break;
    case KvType::kInt8: {
      for (size_t i = 0; i < size; ++i) {
        s.i8_k.push_back(static_cast<int8_t>(std::lrint(k[i] * 127.f)));
        s.i8_v.push_back(static_cast<int8_t>(std::lrint(v[i] * 127.f)));
      }
      const std::vector<float> ks = Random(static_cast<size_t>(heads * s.capacity), seed + 2, 1.f);
      for (float x : ks) {
        s.k_scale.push_back((1.5f + x) / 127.f);  // row scales in [0.5, 2.5] / 127
        s.v_scale.push_back((1.5f - x) / 127.f);
      }
      break;
    }
  }
  return s;
}

struct DecodeCase {
  int64_t heads, hd;
  std::vector<Segment> segments;
  std::vector<float> q;  // [heads, hd]

  std::string Describe() const {
    std::string d = "heads=" + std::to_string(heads) + " hd=" + std::to_string(hd) + " segments:";
    for (const Segment& s : segments) {
      d += std::string(" ") +
           (s.type == KvType::kFloat32 ? "f32" : s.type == KvType::kBFloat16 ? "bf16" : "i8") +
           "x" + std::to_string(s.n);
    }
    return d;
  }
};

DecodeCase MakeDecode(int64_t heads, int64_t hd, const std::vector<std::pair<KvType, int64_t>>& segs,
                      uint64_t seed) {
  DecodeCase c{heads, hd, {}, Random(static_cast<size_t>(heads * hd), seed, 4.f)};
  for (const auto& [type, n] : segs) c.segments.push_back(MakeSegment(type, heads, hd, n, seed += 3));
  return c;
}

std::vector<float> RunDecode(const KernelSet& ks, const DecodeCase& c) {
  std::vector<KvSegment> views;
  for (const Segment& s : c.segments) views.push_back(s.View());
  std::vector<float> out(static_cast<size_t>(c.heads * c.hd + kGuard), kGuardValue);
  DecodeAttentionArgs a;
  a.q = c.q.data();
  a.heads = c.heads;
  a.hd = c.hd;
  a.segments = views.data();
  a.n_segments = static_cast<int64_t>(views.size());
  a.out = out.data();
  DecodeAttention(ks, a);
  return out;
}

// Segment mixes (types, lengths): one to three segments of every row type, positions from
// 1 to ~1500, lengths odd and even (the mix's two chains), some not multiples of 4.
std::vector<std::vector<std::pair<KvType, int64_t>>> DecodeSegmentSets() {
  constexpr KvType f = KvType::kFloat32, b = KvType::kBFloat16, i = KvType::kInt8;
  return {{{f, 1}},           {{b, 2}},           {{i, 3}},
          {{f, 757}},         {{b, 1500}},        {{i, 1499}},
          {{i, 730}, {i, 5}}, {{f, 730}, {b, 1}}, {{b, 733}, {i, 17}, {f, 64}},
          {{i, 1}, {f, 2}, {b, 3}}};
}

// Every (hd, segment set) case with the scalar reference's output, built once for all
// variants.
struct DecodeFixture {
  DecodeCase c;
  std::vector<float> want;
};

const std::vector<DecodeFixture>& DecodeFixtures() {
  static const std::vector<DecodeFixture> fixtures = [] {
    std::vector<DecodeFixture> all;
    uint64_t seed = 1;
    for (int64_t hd : {64, 72, 17}) {
      for (const auto& segs : DecodeSegmentSets()) {
        DecodeCase c = MakeDecode(hd == 64 ? 32 : 5, hd, segs, seed += 10);
        std::vector<float> want = RunDecode(Scalar(), c);
        all.push_back({std::move(c), std::move(want)});
      }
    }
    return all;
  }();
  return fixtures;
}

class DecodeAttentionTest : public testing::TestWithParam<std::string> {};

TEST_P(DecodeAttentionTest, MatchesScalar) {
  MD_VARIANT_OR_SKIP(ks);
  for (const DecodeFixture& f : DecodeFixtures()) {
    const std::vector<float> got = RunDecode(*ks, f.c);
    EXPECT_TRUE(SameBits(got, f.want)) << ks->name << " " << f.c.Describe() << ": "
                                       << FirstDiff(got, f.want);
    for (int64_t g = 0; g < kGuard; ++g) {
      EXPECT_EQ(got[got.size() - kGuard + g], kGuardValue) << "wrote past out: " << f.c.Describe();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, DecodeAttentionTest, testing::ValuesIn(VariantNames()),
                         TestName);

// ---- the reference against fp64 -------------------------------------------------------------

// softmax(scores) . rows, in fp64: out[c] = sum_j p_j * value(j, c).
template <typename ValueFn>
std::vector<double> SoftmaxMix(const std::vector<double>& scores, int64_t hd, ValueFn value) {
  const double mx = *std::max_element(scores.begin(), scores.end());
  double sum = 0;
  std::vector<double> out(static_cast<size_t>(hd), 0.0);
  for (size_t j = 0; j < scores.size(); ++j) {
    const double e = std::exp(scores[j] - mx);
    sum += e;
    for (int64_t c = 0; c < hd; ++c) out[c] += e * value(static_cast<int64_t>(j), c);
  }
  for (double& x : out) x /= sum;
  return out;
}

// Tolerance. Each output is a convex combination of values |v| <= 1, so its absolute error
// is at most max_j |relative error of p_j| + the rounding of the fp32 sums. A logit
// s = q.k / sqrt(hd) (|q| <= 4, |k| <= 1) carries an fp32 dot-product error of about
// sqrt(hd) * 2^-24 * |s|-scale terms (< 1e-6 for these shapes, |s| <~ 20), Exp adds ~2 ulp
// (2.4e-7), the sum and the final scaling a few ulp more, and the mix's fma chain over t
// rows of convex weights rounds each step by 2^-24 of a partial sum <= 1 (t * 6e-8 in the
// worst case, ~sqrt(t) * 6e-8 typically). 1e-5 absolute leaves a wide margin over all of it
// while still catching any wrong index, scale or order of operations (errors >= 1e-3).
constexpr double kTolerance = 1e-5;

TEST(AttentionReferenceTest, SelfAttentionMatchesFp64) {
  for (const SelfCase& c : {SelfCase{97, 2, 72, 3 * 2 * 72 + 5}, SelfCase{5, 3, 17, 3 * 3 * 17},
                            SelfCase{130, 2, 64, 3 * 2 * 64}}) {
    const std::vector<float> qkv = SelfInput(c);
    const std::vector<float> got = RunSelf(Scalar(), c, qkv);
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.hd));
    const int64_t width = c.heads * c.hd;
    double worst = 0;
    for (int64_t h = 0; h < c.heads; ++h) {
      auto at = [&](int64_t row, int64_t part, int64_t d) {
        return static_cast<double>(qkv[row * c.ld + part * width + h * c.hd + d]);
      };
      for (int64_t i = 0; i < c.t; ++i) {
        std::vector<double> scores(static_cast<size_t>(c.t));
        for (int64_t j = 0; j < c.t; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < c.hd; ++d) dot += at(i, 0, d) * at(j, 1, d);
          scores[j] = dot * scale;
        }
        const std::vector<double> want =
            SoftmaxMix(scores, c.hd, [&](int64_t j, int64_t d) { return at(j, 2, d); });
        for (int64_t d = 0; d < c.hd; ++d) {
          worst = std::max(worst, std::abs(got[i * width + h * c.hd + d] - want[d]));
        }
      }
    }
    EXPECT_LT(worst, kTolerance) << Describe(c);
  }
}

TEST(AttentionReferenceTest, DecodeMatchesFp64) {
  uint64_t seed = 7;
  for (int64_t hd : {64, 17}) {
    for (const auto& segs : DecodeSegmentSets()) {
      const DecodeCase c = MakeDecode(3, hd, segs, seed += 10);
      const std::vector<float> got = RunDecode(Scalar(), c);
      const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
      double worst = 0;
      for (int64_t h = 0; h < c.heads; ++h) {
        // Positions of all segments in order: (segment, row).
        std::vector<std::pair<const Segment*, int64_t>> rows;
        for (const Segment& s : c.segments) {
          for (int64_t j = 0; j < s.n; ++j) rows.emplace_back(&s, j);
        }
        std::vector<double> scores;
        for (const auto& [s, j] : rows) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) dot += c.q[h * hd + d] * s->Key(h, j, d);
          scores.push_back(dot * scale);
        }
        const std::vector<double> want = SoftmaxMix(scores, hd, [&](int64_t p, int64_t d) {
          return rows[p].first->Value(h, rows[p].second, d);
        });
        for (int64_t d = 0; d < hd; ++d) {
          worst = std::max(worst, std::abs(got[h * hd + d] - want[d]));
        }
      }
      EXPECT_LT(worst, kTolerance) << c.Describe();
    }
  }
}

}  // namespace
}  // namespace moondream::kernels
