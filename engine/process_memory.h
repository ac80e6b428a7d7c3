// Resident memory of this process: measured for metrics and benchmarks (Linux /proc), and
// released after the stages that free hundreds of MB at once.
#pragma once

#include <cstdint>

namespace moondream {

// Current resident set size in bytes (/proc/self/statm); 0 if unavailable.
uint64_t ResidentBytes();

// Hands the free heap of every malloc arena back to the OS (glibc malloc_trim; a no-op
// elsewhere). glibc keeps freed blocks below its dynamic mmap threshold (up to 32 MB) in
// the arenas of the threads that freed them, so without this a stage's activations stay
// resident into the next stage. Cost: ~1 ms, plus page faults when memory is reused.
void ReleaseFreeHeap();

}  // namespace moondream
