#include "engine/model/sampling.h"

#include <c10/util/Exception.h>

namespace moondream {

int32_t Argmax(const at::Tensor& logits) {
  return static_cast<int32_t>(logits.argmax().item<int64_t>());
}

Sampler::Sampler(const GenerationSettings& settings)
    : temperature_(settings.temperature), top_p_(settings.top_p), rng_(settings.seed) {}

at::Tensor Sampler::Distribution(const at::Tensor& logits) const {
  const at::Tensor probs = at::softmax(logits.to(at::kCPU, at::kDouble) / temperature_, -1);  // [V]
  const auto sorted = probs.sort(/*dim=*/-1, /*descending=*/true);
  const at::Tensor& values = std::get<0>(sorted);
  const at::Tensor& order = std::get<1>(sorted);
  // Keep a token unless the mass strictly before it already exceeds top_p (the top token
  // always stays).
  const at::Tensor drop = (values.cumsum(-1) - values).gt(top_p_);
  at::Tensor kept = values.masked_fill(drop, 0.0);
  kept = kept / kept.sum();
  return at::zeros_like(probs).scatter(-1, order, kept);
}

int32_t Sampler::Next(const at::Tensor& logits) {
  if (temperature_ <= 0.0f) return Argmax(logits);
  const at::Tensor dist = Distribution(logits).contiguous();
  const double* p = dist.data_ptr<double>();
  const int64_t n = dist.numel();
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  double cum = 0.0;
  int64_t last_nonzero = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (p[i] <= 0.0) continue;
    last_nonzero = i;
    cum += p[i];
    if (u < cum) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last_nonzero);  // rounding left u above the total mass
}

}  // namespace moondream
