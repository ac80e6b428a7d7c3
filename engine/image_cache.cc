#include "engine/image_cache.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moondream {
namespace {

constexpr size_t kPrefixDigits = 8;
constexpr size_t kHandleDigits = kPrefixDigits + 32;

// 128 bits from the kernel's CSPRNG (getrandom(2)): handles are bearer tokens for cached
// images, so they must not be predictable from earlier ones.
std::string RandomHex128() {
  unsigned char bytes[16];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) std::abort();  // no entropy source: never hand out a guessable handle
    got += static_cast<size_t>(n);
  }
  static const char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char b : bytes) {
    hex += kDigits[b >> 4];
    hex += kDigits[b & 15];
  }
  return hex;
}

std::string Hex(uint64_t value, int digits) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%0*llx", digits, static_cast<unsigned long long>(value));
  return std::string(buf, digits);
}

}  // namespace

ImageCache::ImageCache(uint64_t budget_bytes, Clock::duration ttl, NowFn now)
    : budget_bytes_(budget_bytes), ttl_(ttl), now_(std::move(now)) {}

// FNV-1a, 32 bits: stable across runs and platforms.
std::string ImageCache::ModelPrefix(const std::string& model) {
  uint32_t hash = 2166136261u;
  for (unsigned char c : model) hash = (hash ^ c) * 16777619u;
  return Hex(hash, kPrefixDigits);
}

std::string ImageCache::NewHandleLocked(const std::string& model) {
  std::string prefix = ModelPrefix(model);
  issuers_.emplace(prefix, model);
  while (true) {
    std::string handle = prefix + RandomHex128();
    if (by_handle_.count(handle) == 0) return handle;
  }
}

void ImageCache::EraseLocked(Lru::iterator it) {
  bytes_ -= it->bytes;
  by_handle_.erase(it->handle);
  lru_.erase(it);
}

void ImageCache::ExpireLocked(Clock::time_point now) {
  for (auto it = lru_.begin(); it != lru_.end();) {
    auto next = std::next(it);
    if (it->expires <= now) EraseLocked(it);
    it = next;
  }
}

absl::StatusOr<std::string> ImageCache::Insert(const std::string& model,
                                               std::shared_ptr<const EncodedImage> image) {
  const uint64_t size = image->bytes();
  if (size > budget_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat("encoded image needs ", size,
                                                     " bytes, more than the image cache budget (",
                                                     "--image-cache-bytes=", budget_bytes_, ")"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  const Clock::time_point now = now_();
  ExpireLocked(now);
  while (bytes_ + size > budget_bytes_) EraseLocked(std::prev(lru_.end()));
  std::string handle = NewHandleLocked(model);
  lru_.push_front(Entry{handle, model, std::move(image), size, now + ttl_});
  by_handle_[handle] = lru_.begin();
  bytes_ += size;
  return handle;
}

absl::StatusOr<std::shared_ptr<const EncodedImage>> ImageCache::Lookup(const std::string& model,
                                                                       const std::string& handle) {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLocked(now_());
  auto found = by_handle_.find(handle);
  std::string owner;
  if (found != by_handle_.end()) {
    owner = found->second->model;
  } else if (handle.size() == kHandleDigits) {
    auto issuer = issuers_.find(handle.substr(0, kPrefixDigits));
    if (issuer != issuers_.end()) owner = issuer->second;
  }
  if (!owner.empty() && owner != model) {
    return absl::InvalidArgumentError(
        absl::StrCat("image handle was issued for model \"", owner, "\", not \"", model, "\""));
  }
  if (found == by_handle_.end()) {
    return absl::NotFoundError("unknown or expired image handle");
  }
  lru_.splice(lru_.begin(), lru_, found->second);  // iterators stay valid
  return found->second->image;
}

ImageCache::Stats ImageCache::GetStats() {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLocked(now_());
  Stats stats;
  stats.bytes = bytes_;
  stats.entries = static_cast<int>(lru_.size());
  for (const Entry& e : lru_) {
    Usage& usage = stats.by_model[e.model];
    usage.bytes += e.bytes;
    ++usage.entries;
  }
  return stats;
}

}  // namespace moondream
