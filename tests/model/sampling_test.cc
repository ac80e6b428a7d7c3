// Sampler: greedy default, seeded determinism, temperature -> 0 equals greedy, top-p
// truncation (spec §8 rule) on constructed distributions.
#include <cmath>
#include <map>
#include <vector>

#include <gtest/gtest.h>

#include "engine/model/sampling.h"

namespace moondream {
namespace {

at::Tensor Logits(const std::vector<float>& values) {
  return at::tensor(values, at::TensorOptions().dtype(at::kFloat));
}

// Logits whose softmax at temperature 1 is exactly `probs`.
at::Tensor FromProbs(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return Logits(logits);
}

GenerationSettings Sampling(float temperature, float top_p, uint64_t seed) {
  GenerationSettings s;
  s.temperature = temperature;
  s.top_p = top_p;
  s.seed = seed;
  return s;
}

TEST(Argmax, LowestIndexWinsTies) {
  EXPECT_EQ(Argmax(Logits({1.0f, 3.0f, 3.0f, 2.0f})), 1);
  EXPECT_EQ(Argmax(Logits({-5.0f, -5.0f})), 0);
}

TEST(Sampler, DefaultSettingsAreGreedy) {
  Sampler sampler{GenerationSettings{}};
  EXPECT_EQ(sampler.Next(Logits({0.1f, 0.5f, 0.5f, 0.2f})), 1);
}

TEST(Sampler, SameSeedSameSequence) {
  const at::Tensor logits = at::randn({1000}, at::TensorOptions().dtype(at::kFloat));
  std::vector<int32_t> a, b, c;
  Sampler sa(Sampling(1.0f, 1.0f, 42)), sb(Sampling(1.0f, 1.0f, 42)), sc(Sampling(1.0f, 1.0f, 43));
  for (int i = 0; i < 50; ++i) {
    a.push_back(sa.Next(logits));
    b.push_back(sb.Next(logits));
    c.push_back(sc.Next(logits));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);  // 50 draws over ~1000 plausible tokens: equal only by a miracle
}

TEST(Sampler, TinyTemperatureEqualsGreedy) {
  const at::Tensor logits = at::randn({51200}, at::TensorOptions().dtype(at::kFloat));
  Sampler sampler(Sampling(1e-4f, 1.0f, 7));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sampler.Next(logits), Argmax(logits));
}

TEST(Sampler, TopPKeepsTokensUntilMassExceeded) {
  // Sorted probs 0.5, 0.3, 0.15, 0.05 (given out of order). top_p = 0.7: cumulative mass
  // before each token is 0, 0.5, 0.8, 0.95 -> keep the first two (0.5 and 0.3), since the
  // mass before the third (0.8) exceeds 0.7. Renormalised: 0.625, 0.375.
  const at::Tensor logits = FromProbs({0.15, 0.5, 0.05, 0.3});
  Sampler sampler(Sampling(1.0f, 0.7f, 1));
  const at::Tensor dist = sampler.Distribution(logits);
  const std::vector<double> expected = {0.0, 0.625, 0.0, 0.375};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(dist[i].item<double>(), expected[i], 1e-6) << i;

  std::map<int32_t, int> counts;
  for (int i = 0; i < 4000; ++i) ++counts[sampler.Next(logits)];
  EXPECT_EQ(counts.count(0), 0u);
  EXPECT_EQ(counts.count(2), 0u);
  // Binomial(4000, 0.625): sd ~ 31; allow 5 sd.
  EXPECT_NEAR(counts[1], 2500, 155);
}

TEST(Sampler, TopPAlwaysKeepsTheTopToken) {
  const at::Tensor logits = FromProbs({0.9, 0.1});
  Sampler sampler(Sampling(1.0f, 0.01f, 3));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(sampler.Next(logits), 0);
}

TEST(Sampler, TemperatureFlattensTheDistribution) {
  const at::Tensor logits = FromProbs({0.8, 0.2});
  const double hot = Sampler(Sampling(2.0f, 1.0f, 0)).Distribution(logits)[0].item<double>();
  // softmax(log p / 2) = sqrt(p) normalised: sqrt(.8) / (sqrt(.8) + sqrt(.2)) = 2/3.
  EXPECT_NEAR(hot, 2.0 / 3.0, 1e-6);
}

}  // namespace
}  // namespace moondream
