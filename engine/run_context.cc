#include "absl/status/status.h"
#include "engine/model.h"

namespace moondream {

absl::Status RunContext::CheckAlive() const {
  if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
    return absl::CancelledError("request cancelled");
  }
  if (Clock::now() >= deadline) {
    return absl::DeadlineExceededError("deadline exceeded while running");
  }
  return absl::OkStatus();
}

}  // namespace moondream
