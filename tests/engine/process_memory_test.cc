// HeapTrimmer: memory freed into the malloc arenas goes back to the OS on its own.
#include "engine/process_memory.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <algorithm>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace moondream {
namespace {

TEST(HeapTrimmer, ReleasesFreedArenaMemory) {
  // glibc gives memory back on its own only from the top of a heap (M_TRIM_THRESHOLD) and for
  // blocks it mmapped (M_MMAP_THRESHOLD): both off here, so only the trimmer can release.
  ASSERT_EQ(mallopt(M_TRIM_THRESHOLD, 1 << 30), 1);
  ASSERT_EQ(mallopt(M_MMAP_THRESHOLD, 32 << 20), 1);
  HeapTrimmer trimmer(std::chrono::milliseconds(50), 32ull << 20);
  constexpr size_t kBlock = 64 << 10;
  std::vector<char*> blocks;
  for (int i = 0; i < 3072; ++i) {  // 192 MiB
    blocks.push_back(static_cast<char*>(std::malloc(kBlock)));
    std::memset(blocks.back(), 1, kBlock);
  }
  const uint64_t used = ResidentBytes();
  const int releases_before = trimmer.releases();
  for (char* block : blocks) std::free(block);
  uint64_t resident = ResidentBytes();
  for (int i = 0; i < 200 && (trimmer.releases() == releases_before ||
                              used - std::min(used, resident) < (128ull << 20));
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    resident = ResidentBytes();
  }
  EXPECT_GT(trimmer.releases(), releases_before);
  EXPECT_GE(used - std::min(used, resident), 128ull << 20) << "resident " << used << " -> " << resident;
}

}  // namespace
}  // namespace moondream
