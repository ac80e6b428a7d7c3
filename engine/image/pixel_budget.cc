#include "engine/image/pixel_budget.h"

#include <algorithm>
#include <chrono>

namespace moondream {

absl::StatusOr<PixelBudget::Lease> PixelBudget::Acquire(
    uint64_t pixels, const std::function<absl::Status()>& check) {
  pixels = std::min(pixels, capacity_);
  std::unique_lock<std::mutex> lock(mu_);
  while (capacity_ - in_use_ < pixels) {
    if (!check) {
      freed_.wait(lock);
      continue;
    }
    if (freed_.wait_for(lock, std::chrono::milliseconds(50)) == std::cv_status::timeout) {
      lock.unlock();  // check() may take its own locks
      if (absl::Status alive = check(); !alive.ok()) return alive;
      lock.lock();
    }
  }
  in_use_ += pixels;
  // The lease owns no object: its deleter gives the pixels back.
  return Lease(static_cast<const void*>(this), [this, pixels](const void*) { Release(pixels); });
}

uint64_t PixelBudget::in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_use_;
}

void PixelBudget::Release(uint64_t pixels) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ -= pixels;
  }
  freed_.notify_all();
}

}  // namespace moondream
