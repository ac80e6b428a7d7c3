// Next-token choice: greedy argmax by default (the reference, spec §6.2), or temperature +
// top-p sampling (the rule of later revisions, spec §8) with a seeded generator.
#pragma once

#include <cstdint>
#include <random>

#include <ATen/ATen.h>

#include "engine/api.h"

namespace moondream {

// Index of the largest logit; the lowest index wins exact ties (PyTorch argmax).
int32_t Argmax(const at::Tensor& logits /*[vocab]*/);

class Sampler {
 public:
  // temperature <= 0 => greedy; otherwise deterministic for a given seed.
  explicit Sampler(const GenerationSettings& settings);

  int32_t Next(const at::Tensor& logits /*fp32 [vocab]*/);

  // Probabilities the sampler draws from (fp64 [vocab], zero outside the top-p set):
  // softmax(logits / T); sort descending; drop every token whose preceding cumulative
  // mass already exceeds top_p (cum - p > top_p); renormalise. Exposed for tests.
  at::Tensor Distribution(const at::Tensor& logits) const;

 private:
  float temperature_ = 0.0f;
  float top_p_ = 1.0f;
  std::mt19937_64 rng_;
};

}  // namespace moondream
