#include "engine/image_cache.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"

namespace moondream {
namespace {

class FakeImage : public EncodedImage {
 public:
  explicit FakeImage(uint64_t bytes) : bytes_(bytes) {}
  uint64_t bytes() const override { return bytes_; }

 private:
  uint64_t bytes_;
};

std::shared_ptr<const EncodedImage> Image(uint64_t bytes) {
  return std::make_shared<FakeImage>(bytes);
}

class ImageCacheTest : public ::testing::Test {
 protected:
  ImageCache MakeCache(uint64_t budget, int ttl_s = 60) {
    return ImageCache(budget, std::chrono::seconds(ttl_s), [this] { return now_; });
  }
  Clock::time_point now_ = Clock::time_point() + std::chrono::hours(1);
};

TEST_F(ImageCacheTest, HandleIsHexWithModelPrefix) {
  ImageCache cache = MakeCache(1000);
  std::string a = *cache.Insert("test", Image(1));
  std::string b = *cache.Insert("test", Image(1));
  std::string c = *cache.Insert("moondream2", Image(1));
  ASSERT_EQ(a.size(), 40u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos) << a;
  EXPECT_NE(a, b);
  EXPECT_EQ(a.substr(0, 8), b.substr(0, 8));  // same model, same prefix
  EXPECT_NE(a.substr(0, 8), c.substr(0, 8));
}

TEST_F(ImageCacheTest, LookupReturnsTheStoredImage) {
  ImageCache cache = MakeCache(1000);
  auto image = Image(10);
  std::string handle = *cache.Insert("test", image);
  auto found = cache.Lookup("test", handle);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->get(), image.get());
  EXPECT_EQ(cache.GetStats().bytes, 10u);
  EXPECT_EQ(cache.GetStats().entries, 1);
}

TEST_F(ImageCacheTest, EvictsLeastRecentlyUsedToStayWithinBudget) {
  ImageCache cache = MakeCache(100);
  std::string a = *cache.Insert("test", Image(40));
  std::string b = *cache.Insert("test", Image(40));
  ASSERT_TRUE(cache.Lookup("test", a).ok());  // a is now more recent than b
  std::string c = *cache.Insert("test", Image(40));
  EXPECT_TRUE(cache.Lookup("test", a).ok());
  EXPECT_EQ(cache.Lookup("test", b).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(cache.Lookup("test", c).ok());
  EXPECT_EQ(cache.GetStats().bytes, 80u);
  EXPECT_EQ(cache.GetStats().entries, 2);
  // A large image evicts several.
  std::string d = *cache.Insert("test", Image(90));
  EXPECT_EQ(cache.GetStats().entries, 1);
  EXPECT_TRUE(cache.Lookup("test", d).ok());
}

TEST_F(ImageCacheTest, UsageIsAttributedToEachModel) {
  ImageCache cache = MakeCache(1000);
  ASSERT_TRUE(cache.Insert("moondream2", Image(40)).ok());
  ASSERT_TRUE(cache.Insert("moondream2", Image(30)).ok());
  ASSERT_TRUE(cache.Insert("moondream2-int8", Image(20)).ok());
  const ImageCache::Stats stats = cache.GetStats();
  EXPECT_EQ(stats.bytes, 90u);
  ASSERT_EQ(stats.by_model.size(), 2u);
  EXPECT_EQ(stats.by_model.at("moondream2").bytes, 70u);
  EXPECT_EQ(stats.by_model.at("moondream2").entries, 2);
  EXPECT_EQ(stats.by_model.at("moondream2-int8").bytes, 20u);
  EXPECT_EQ(stats.by_model.at("moondream2-int8").entries, 1);
}

TEST_F(ImageCacheTest, ImageLargerThanBudgetIsRejected) {
  ImageCache cache = MakeCache(100);
  std::string a = *cache.Insert("test", Image(60));
  auto too_big = cache.Insert("test", Image(101));
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(too_big.status().message().find("image-cache-bytes"), std::string::npos);
  EXPECT_TRUE(cache.Lookup("test", a).ok());  // nothing evicted for it
}

TEST_F(ImageCacheTest, EntriesExpireAfterTtl) {
  ImageCache cache = MakeCache(1000, /*ttl_s=*/10);
  std::string a = *cache.Insert("test", Image(5));
  now_ += std::chrono::seconds(5);
  std::string b = *cache.Insert("test", Image(5));
  now_ += std::chrono::seconds(4);
  EXPECT_TRUE(cache.Lookup("test", a).ok());  // 9 s old (use does not extend it)
  now_ += std::chrono::seconds(2);
  auto expired = cache.Lookup("test", a);
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(expired.status().message(), "unknown or expired image handle");
  EXPECT_TRUE(cache.Lookup("test", b).ok());  // 6 s old
  EXPECT_EQ(cache.GetStats().entries, 1);
  now_ += std::chrono::seconds(5);
  EXPECT_EQ(cache.GetStats().entries, 0);
  EXPECT_EQ(cache.GetStats().bytes, 0u);
}

TEST_F(ImageCacheTest, ForeignHandleIsInvalidArgumentEvenAfterExpiry) {
  ImageCache cache = MakeCache(1000, /*ttl_s=*/10);
  std::string handle = *cache.Insert("moondream2", Image(5));
  auto foreign = cache.Lookup("moondream2-int8", handle);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(foreign.status().message().find("\"moondream2\""), std::string::npos)
      << foreign.status();
  now_ += std::chrono::seconds(11);
  EXPECT_EQ(cache.Lookup("moondream2-int8", handle).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.Lookup("moondream2", handle).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ImageCacheTest, UnknownHandlesAreNotFound) {
  ImageCache cache = MakeCache(1000);
  ASSERT_TRUE(cache.Insert("test", Image(5)).ok());
  for (const std::string& handle :
       {std::string("nope"), std::string(""), std::string(40, '0'), std::string(40, 'f')}) {
    EXPECT_EQ(cache.Lookup("test", handle).status().code(), absl::StatusCode::kNotFound) << handle;
  }
}

}  // namespace
}  // namespace moondream
