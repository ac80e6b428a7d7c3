// PixelBudget: bounds the pixels being decoded at once across threads, so that the decode
// term of the memory budget (docs/memory.md, D) is one image at the pixel limit however
// many workers run (--max-concurrency). No ATen here.
//
//   PixelBudget budget(max_image_pixels);                       // one per process
//   MD_ASSIGN(RgbImage rgb, DecodeImage(bytes, max_pixels, false, check, &budget));
//   // rgb holds its width × height pixels of the budget until it is destroyed
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include "absl/status/statusor.h"

namespace moondream {

class PixelBudget {
 public:
  // Released when the last copy is destroyed.
  using Lease = std::shared_ptr<const void>;

  explicit PixelBudget(uint64_t capacity) : capacity_(capacity) {}
  PixelBudget(const PixelBudget&) = delete;
  PixelBudget& operator=(const PixelBudget&) = delete;

  // Waits until `pixels` (clamped to the capacity: an image at the limit runs alone) are
  // free and takes them. While waiting, `check` (when set) runs every 50 ms and its error
  // ends the wait and is returned (the engine's deadline and cancellation check).
  absl::StatusOr<Lease> Acquire(uint64_t pixels, const std::function<absl::Status()>& check);

  uint64_t in_use() const;

 private:
  void Release(uint64_t pixels);

  const uint64_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable freed_;
  uint64_t in_use_ = 0;
};

}  // namespace moondream
