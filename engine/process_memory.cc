#include "engine/process_memory.h"

#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <algorithm>
#include <fstream>

namespace moondream {

uint64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size_pages = 0, resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

void ReleaseFreeHeap() {
#ifdef __GLIBC__
  ::malloc_trim(0);
#endif
}

HeapTrimmer::HeapTrimmer(std::chrono::milliseconds period, uint64_t growth)
    : period_(period), growth_(growth), thread_([this] { Run(); }) {}

HeapTrimmer::~HeapTrimmer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

uint64_t FreeHeapBytes() {
#ifdef __GLIBC__
  return ::mallinfo2().fordblks;
#else
  return 0;
#endif
}

void HeapTrimmer::Run() {
  uint64_t low = FreeHeapBytes();
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, period_, [this] { return stopping_; })) {
    const uint64_t free_bytes = FreeHeapBytes();
    low = std::min(low, free_bytes);
    if (free_bytes - low < growth_) continue;
    ReleaseFreeHeap();
    ++releases_;
    low = FreeHeapBytes();
  }
}

}  // namespace moondream
