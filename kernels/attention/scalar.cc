// The reference attention kernels: F16 as float[16] (kernels/simd/vec16_scalar.h).
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/kernels.h"
#include "kernels/variants.h"

#include "kernels/simd/vec16_scalar.h"
#include "kernels/attention/impl.h"

namespace moondream::kernels::scalar {
namespace {
// Any tiles give the same results; these keep the reference's tests quick.
using Tiles = attention::Tiles<4, 2, 2, 2>;
}  // namespace

void SelfAttention(const SelfAttentionArgs& args, void* workspace) {
  attention::SelfAttentionImpl<Tiles>(args, workspace);
}

void DecodeAttention(const DecodeAttentionArgs& args, void* workspace) {
  attention::DecodeAttentionImpl<Tiles>(args, workspace);
}

}  // namespace moondream::kernels::scalar
