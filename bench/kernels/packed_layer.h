// A text-decoder-shaped INT8 layer for the kernel benchmarks: `copies` packed copies of the
// same [n, k] weights, so that a benchmark can call each GEMV on a copy no call touched since
// the last lap (the weights then stream from memory, as in decode, not from the LLC).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/kernels.h"

namespace moondream::bench {

struct PackedLayer {
  int64_t copies, n, k;
  std::vector<std::vector<int8_t>> packed;
  std::vector<int32_t> row_sum;
  std::vector<float> scale, bias;
  // Enough copies for min_bytes in all (at least one).
  PackedLayer(int64_t k_, int64_t n_, int64_t min_bytes) : n(n_), k(k_) {
    const int64_t bytes = kernels::PackedInt8Bytes(n, k);
    copies = std::max<int64_t>(1, (min_bytes + bytes - 1) / bytes);
    std::vector<int8_t> q(static_cast<size_t>(n * k));
    for (size_t i = 0; i < q.size(); ++i)
      q[i] = static_cast<int8_t>(static_cast<int>(i * 7919 % 255) - 127);
    row_sum.resize(static_cast<size_t>(n));
    for (int64_t c = 0; c < copies; ++c) {
      packed.emplace_back(static_cast<size_t>(bytes));
      kernels::PackInt8Weights(q.data(), n, k, packed.back().data(), row_sum.data());
    }
    scale.assign(static_cast<size_t>(n), 1e-3f);
    bias.assign(static_cast<size_t>(n), 0.5f);
  }
  // GEMM arguments for m rows of x into y, on copy `copy`.
  kernels::Int8GemmArgs Args(const float* x, int64_t m, float* y, int64_t copy) const {
    kernels::Int8GemmArgs a;
    a.x = x;
    a.m = m;
    a.ldx = k;
    a.w = packed[static_cast<size_t>(copy % copies)].data();
    a.w_row_sum = row_sum.data();
    a.n = n;
    a.k = k;
    a.w_scale = scale.data();
    a.bias = bias.data();
    a.y = y;
    a.ldy = n;
    return a;
  }
};

}  // namespace moondream::bench
