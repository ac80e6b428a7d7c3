// Resident memory of this process: measured for metrics and benchmarks (Linux /proc), and
// released after the stages that free hundreds of MB at once.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

namespace moondream {

// Current resident set size in bytes (/proc/self/statm); 0 if unavailable.
uint64_t ResidentBytes();

// Hands the free heap of every malloc arena back to the OS (glibc malloc_trim; a no-op
// elsewhere). glibc keeps freed blocks below its dynamic mmap threshold (up to 32 MB) in
// the arenas of the threads that freed them, so without this a stage's activations stay
// resident into the next stage. Cost: ~1 ms, plus page faults when memory is reused.
void ReleaseFreeHeap();

// Free bytes the malloc arenas hold (glibc mallinfo2 fordblks; 0 elsewhere): resident or
// already released, glibc does not tell.
uint64_t FreeHeapBytes();

// Checks the arenas every `period` and calls ReleaseFreeHeap once `growth` bytes or more
// have been freed since the low point (FreeHeapBytes rose by that much). Freed request
// buffers (gRPC's slices of large messages, decoded images) otherwise stay resident:
// repeated floods of 18 MiB images ratcheted an idle server from 0.2 to 4.3 GiB, all of it
// free heap (docs/reliability.md).
class HeapTrimmer {
 public:
  HeapTrimmer(std::chrono::milliseconds period, uint64_t growth);
  ~HeapTrimmer();  // stops and joins the thread
  int releases() const { return releases_; }

 private:
  void Run();

  const std::chrono::milliseconds period_;
  const uint64_t growth_;
  std::atomic<int> releases_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace moondream
