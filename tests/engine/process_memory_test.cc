// HeapTrimmer: memory freed into the malloc arenas goes back to the OS on its own.
#include "engine/process_memory.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace moondream {
namespace {

TEST(HeapTrimmer, ReleasesFreedArenaMemory) {
  HeapTrimmer trimmer(std::chrono::milliseconds(50), 32ull << 20);
  // 192 MiB in 64 KiB blocks (below glibc's mmap threshold, so freed blocks stay in the
  // arena), then one more block that pins the heap top: nothing is returned on free.
  constexpr size_t kBlock = 64 << 10;
  std::vector<char*> blocks;
  for (int i = 0; i < 3072; ++i) {
    blocks.push_back(static_cast<char*>(std::malloc(kBlock)));
    std::memset(blocks.back(), 1, kBlock);
  }
  char* pin = static_cast<char*>(std::malloc(kBlock));
  std::memset(pin, 1, kBlock);
  const uint64_t used = ResidentBytes();
  const int releases_before = trimmer.releases();
  for (char* block : blocks) std::free(block);
  uint64_t resident = ResidentBytes();
  for (int i = 0; i < 100 && used - resident < (128ull << 20); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    resident = ResidentBytes();
  }
  EXPECT_GT(trimmer.releases(), releases_before);
  EXPECT_GE(used - resident, 128ull << 20) << "resident " << used << " -> " << resident;
  std::free(pin);
}

}  // namespace
}  // namespace moondream
