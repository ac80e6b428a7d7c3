// The ISA-independent packed INT8 weight layout (kernels.h). Plain C++: packing runs once
// per weight at load time.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/kernels.h"

namespace moondream::kernels {
namespace {

constexpr int64_t kGroup = 16;  // panel widths are multiples of 16 columns (one F16)

int64_t K4(int64_t k) { return (k + 3) / 4; }
int64_t Panels(int64_t n) { return (n + kPanel - 1) / kPanel; }

}  // namespace

int64_t PanelWidth(int64_t n, int64_t panel) {
  const int64_t rest = std::min(kPanel, n - panel * kPanel);
  return (rest + kGroup - 1) / kGroup * kGroup;
}

int64_t PackedInt8Bytes(int64_t n, int64_t k) {
  if (n <= 0) return 0;
  const int64_t last = Panels(n) - 1;
  return (last * kPanel + PanelWidth(n, last)) * K4(k) * 4;
}

bool PackableInPlace(int64_t n, int64_t k) { return n % kGroup == 0 && k % 4 == 0; }

void PackInt8Weights(const int8_t* q, int64_t n, int64_t k, int8_t* packed, int32_t* row_sum) {
  const int64_t k4 = K4(k);
  const int64_t panels = Panels(n);
  const bool in_place = q == packed;  // PackableInPlace: panel p covers exactly its rows
#pragma omp parallel
  {
    // In place, a panel's rows are read from a copy (at most 64 rows, this thread's buffer
    // for all its panels) as the panel is rewritten.
    std::vector<int8_t> copy;
#pragma omp for schedule(dynamic, 1)
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t width = PanelWidth(n, p), rows = std::min(width, n - p * kPanel);
      int8_t* panel = packed + p * kPanel * k4 * 4;
      const int8_t* src = q + p * kPanel * k;
      if (in_place) {
        copy.assign(src, src + rows * k);
        src = copy.data();
      }
      // Padding columns and the k padding are 0 (zeroed first where there are any).
      if (rows < width || k % 4 != 0) std::memset(panel, 0, static_cast<size_t>(width * k4 * 4));
      for (int64_t c = 0; c < rows; ++c) {
        const int8_t* row = src + c * k;
        int32_t sum = 0;
        for (int64_t i = 0; i < k; ++i) sum += row[i];
        row_sum[p * kPanel + c] = 128 * sum;
        int8_t* out = panel + c * 4;  // byte (kg, c, i) at kg * width * 4 + c * 4 + i
        for (int64_t kg = 0; kg < k / 4; ++kg) std::memcpy(out + kg * width * 4, row + kg * 4, 4);
        if (k % 4 != 0) std::memcpy(out + (k / 4) * width * 4, row + k / 4 * 4, k % 4);
      }
    }
  }
}

}  // namespace moondream::kernels
