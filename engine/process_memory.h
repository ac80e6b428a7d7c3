// Resident memory of this process, for metrics and benchmarks (Linux /proc).
#pragma once

#include <cstdint>

namespace moondream {

// Current resident set size in bytes (/proc/self/statm); 0 if unavailable.
uint64_t ResidentBytes();

}  // namespace moondream
