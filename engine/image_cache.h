// LRU cache of encoded images behind EncodeImage handles: a byte budget and a TTL.
//
// A handle is 40 hex digits: 8 of a hash of the issuing model's name, then 32 from the
// kernel's CSPRNG (getrandom, 128 bits). The prefix lets a handle used with another model be told apart from an
// unknown or expired one, even after the entry is gone.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "engine/api.h"
#include "engine/model.h"

namespace moondream {

class ImageCache {
 public:
  using NowFn = std::function<Clock::time_point()>;

  // `ttl` counts from insertion. `now` is injectable for tests.
  ImageCache(uint64_t budget_bytes, Clock::duration ttl, NowFn now = &Clock::now);

  // Stores `image` for `model` and returns its handle, evicting least recently used
  // entries to stay within the budget. RESOURCE_EXHAUSTED if the image alone is larger
  // than the whole budget.
  absl::StatusOr<std::string> Insert(const std::string& model,
                                     std::shared_ptr<const EncodedImage> image);

  // The image behind `handle` (and marks it recently used). NOT_FOUND for an unknown or
  // expired handle; INVALID_ARGUMENT for a handle issued for another model.
  absl::StatusOr<std::shared_ptr<const EncodedImage>> Lookup(const std::string& model,
                                                             const std::string& handle);

  struct Usage {
    uint64_t bytes = 0;
    int entries = 0;
  };
  struct Stats : Usage {
    std::map<std::string, Usage> by_model;
  };
  // Current usage, after dropping expired entries.
  Stats GetStats();

 private:
  struct Entry {
    std::string handle;
    std::string model;
    std::shared_ptr<const EncodedImage> image;
    uint64_t bytes = 0;
    Clock::time_point expires;
  };
  using Lru = std::list<Entry>;  // front = most recently used

  static std::string ModelPrefix(const std::string& model);
  std::string NewHandleLocked(const std::string& model);
  void EraseLocked(Lru::iterator it);
  void ExpireLocked(Clock::time_point now);

  const uint64_t budget_bytes_;
  const Clock::duration ttl_;
  const NowFn now_;

  std::mutex mu_;
  Lru lru_;
  std::unordered_map<std::string, Lru::iterator> by_handle_;
  std::map<std::string, std::string> issuers_;  // handle prefix -> model name
  uint64_t bytes_ = 0;
};

}  // namespace moondream
