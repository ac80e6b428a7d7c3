// DecodeImage (spec §3.1) against Pillow's convert("RGB"): real/ goldens, generated format
// samples (tests/image/data, expectations from make_test_images.py), and error handling.
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <zlib.h>

#include <vips/vips.h>

#include "engine/image/image.h"
#include "tests/image/image_test_util.h"

namespace moondream {
namespace {

using moondream::testing::FixturesDir;
using moondream::testing::ReadFile;
using moondream::testing::ReadJson;
using moondream::testing::Sha256Hex;
using moondream::testing::TestDataDir;

constexpr uint64_t kLimit = 50'000'000;

std::string RgbSha(const RgbImage& image) {
  return Sha256Hex(image.pixels.data(), image.pixels.size());
}

TEST(DecodeImage, RealFilesMatchPillowDecode) {
  const auto golden = ReadJson(FixturesDir() + "/real/golden/golden.json");
  const auto index = ReadJson(FixturesDir() + "/real/images/images.json");
  ASSERT_EQ(index["images"].size(), 4u);
  for (const auto& entry : index["images"]) {
    const std::string name = entry["name"];
    SCOPED_TRACE(name);
    const auto& decode = golden["images"][name]["decode"];
    auto image = DecodeImage(ReadFile(FixturesDir() + "/real/images/" + std::string(entry["file"])),
                             kLimit);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->height, decode["rgb_shape"][0].get<int>());
    EXPECT_EQ(image->width, decode["rgb_shape"][1].get<int>());
    EXPECT_EQ(RgbSha(*image), decode["rgb_sha256"].get<std::string>());
  }
}

TEST(DecodeImage, FixturePngsMatchPixelHashes) {
  const auto index = ReadJson(FixturesDir() + "/images/images.json");
  for (const auto& entry : index["images"]) {
    SCOPED_TRACE(entry["name"].get<std::string>());
    auto image = DecodeImage(ReadFile(FixturesDir() + "/images/" + std::string(entry["file"])),
                             kLimit);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, entry["width"].get<int>());
    EXPECT_EQ(image->height, entry["height"].get<int>());
    if (entry["mode"] == "RGB") {  // pixels_sha256 is of the file's own mode (L for grey)
      EXPECT_EQ(RgbSha(*image), entry["pixels_sha256"].get<std::string>());
    }
  }
}

// JPEG (4:2:0, 4:4:4, progressive, grey, CMYK, EXIF-rotated), PNG (RGBA, grey, grey+alpha,
// 1-bit, palette, palette+tRNS, 16-bit grey/RGB/RGBA/grey+alpha), WebP (lossy, lossless,
// alpha), GIF (still, animated: first frame).
TEST(DecodeImage, GeneratedFormatsMatchPillowConvertRgb) {
  const auto expected = ReadJson(TestDataDir() + "/expected.json");
  ASSERT_GE(expected.size(), 20u);
  for (const auto& [file, want] : expected.items()) {
    SCOPED_TRACE(file);
    auto image = DecodeImage(ReadFile(TestDataDir() + "/" + file), kLimit);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, want["width"].get<int>());
    EXPECT_EQ(image->height, want["height"].get<int>());
    EXPECT_EQ(RgbSha(*image), want["rgb_sha256"].get<std::string>());
  }
}

void ExpectInvalid(std::string_view bytes, const std::string& message_prefix) {
  auto image = DecodeImage(bytes, kLimit);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(image.status().message()).rfind(message_prefix, 0), 0u)
      << image.status();
}

TEST(DecodeImage, EmptyAndNonImageBytes) {
  ExpectInvalid("", "image is empty");
  ExpectInvalid("hello, this is not an image", "not a supported image format (JPEG, PNG, WebP, GIF)");
  ExpectInvalid("\x49\x49\x2A\x00 tiff header", "not a supported image format");
  ExpectInvalid("<svg xmlns='http://www.w3.org/2000/svg'/>", "not a supported image format");
}

TEST(DecodeImage, TruncatedFilesAreRejected) {
  const std::string jpeg = ReadFile(FixturesDir() + "/real/images/p0_hubble_1000x872.jpg");
  const std::string prog = ReadFile(FixturesDir() + "/real/images/p1_astronaut_prog_512x512.jpg");
  const std::string png = ReadFile(FixturesDir() + "/images/img1_640x480.png");
  const std::string gif = ReadFile(FixturesDir() + "/real/images/p2_meme_anim.gif");
  const std::string webp = ReadFile(TestDataDir() + "/lossy.webp");
  ExpectInvalid(jpeg.substr(0, jpeg.size() / 2), "corrupt or truncated JPEG: ");
  ExpectInvalid(prog.substr(0, prog.size() / 2), "corrupt or truncated JPEG: ");
  ExpectInvalid(jpeg.substr(0, 100), "corrupt or truncated JPEG: ");
  ExpectInvalid(png.substr(0, png.size() / 2), "corrupt or truncated PNG: ");
  ExpectInvalid(png.substr(0, 40), "corrupt or truncated PNG: ");
  ExpectInvalid(gif.substr(0, 300), "corrupt or truncated GIF: ");
  ExpectInvalid(webp.substr(0, webp.size() / 2), "corrupt or truncated WebP: ");
}

TEST(DecodeImage, CorruptFilesAreRejected) {
  ExpectInvalid(std::string("\xFF\xD8\xFF\xE0") + std::string(500, 'x'), "corrupt or truncated JPEG: ");
  std::string png = ReadFile(FixturesDir() + "/images/img1_640x480.png");
  const size_t idat = png.find("IDAT");
  ASSERT_NE(idat, std::string::npos);
  for (size_t i = idat + 4; i < idat + 64; ++i) png[i] ^= 0x5A;  // zlib stream + CRC now wrong
  ExpectInvalid(png, "corrupt or truncated PNG: ");
}

// Every prefix of small files of each format: a clean result or InvalidArgument, never a
// crash or another code (under ASan + UBSan too: scripts/test --asan).
TEST(DecodeImage, EveryTruncationFailsCleanly) {
  for (const char* file : {"trns_small_frame.gif", "anim.gif", "palette_trns.png", "gray16.png",
                           "progressive.jpg", "cmyk.jpg", "alpha.webp"}) {
    SCOPED_TRACE(file);
    const std::string bytes = ReadFile(TestDataDir() + "/" + file);
    for (size_t n = 0; n < bytes.size(); n += 1 + n / 64) {
      auto image = DecodeImage(std::string_view(bytes).substr(0, n), kLimit);
      if (!image.ok()) {
        EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << n;
      } else {
        EXPECT_EQ(image->pixels.size(), size_t(image->width) * image->height * 3);
      }
    }
  }
}

TEST(DecodeImage, ErrorBufferIsClearedBetweenCalls) {
  auto first = DecodeImage(std::string("\xFF\xD8\xFF\xE0") + std::string(64, 'x'), kLimit);
  ASSERT_FALSE(first.ok());
  const std::string png = ReadFile(FixturesDir() + "/images/img0_378x378.png");
  auto second = DecodeImage(png.substr(0, png.size() / 3), kLimit);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(std::string(second.status().message()).find("JPEG"), std::string::npos)
      << second.status();
  EXPECT_TRUE(DecodeImage(png, kLimit).ok());
}

std::string PngChunk(const char* tag, const std::string& data) {
  std::string chunk;
  for (int s = 24; s >= 0; s -= 8) chunk += char((data.size() >> s) & 0xFF);
  std::string body = std::string(tag, 4) + data;
  const uint32_t crc = crc32(0, reinterpret_cast<const Bytef*>(body.data()), body.size());
  chunk += body;
  for (int s = 24; s >= 0; s -= 8) chunk += char((crc >> s) & 0xFF);
  return chunk;
}

std::string Be32(uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

TEST(DecodeImage, PixelBombIsRejectedFromTheHeader) {
  // A valid PNG header claiming 30000x30000 RGB (2.7 GB decoded) and a tiny IDAT.
  const std::string ihdr = Be32(30000) + Be32(30000) + std::string("\x08\x02\x00\x00\x00", 5);
  const std::string bomb = std::string("\x89PNG\r\n\x1A\n", 8) + PngChunk("IHDR", ihdr) +
                           PngChunk("IDAT", std::string("\x78\x9C\x03\x00\x00\x00\x00\x01", 8)) +
                           PngChunk("IEND", "");
  const auto start = std::chrono::steady_clock::now();
  ExpectInvalid(bomb, "image is 30000x30000 = 900000000 pixels, over the limit of 50000000 "
                      "(--max-image-pixels)");
  // A JPEG whose SOF claims 60000x60000.
  std::string jpeg = ReadFile(TestDataDir() + "/baseline_420.jpg");
  const size_t sof = jpeg.find("\xFF\xC0");
  ASSERT_NE(sof, std::string::npos);
  jpeg.replace(sof + 5, 4, std::string("\xEA\x60\xEA\x60", 4));
  ExpectInvalid(jpeg, "image is 60000x60000 = 3600000000 pixels, over the limit of 50000000");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(DecodeImage, LimitIsInclusive) {
  const std::string png = ReadFile(TestDataDir() + "/rgb.png");  // 23x17 = 391 pixels
  EXPECT_TRUE(DecodeImage(png, 391).ok());
  auto over = DecodeImage(png, 390);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().message(),
            "image is 23x17 = 391 pixels, over the limit of 390 (--max-image-pixels)");
}

TEST(DecodeImage, ConcurrentDecodesAgree) {
  const std::string jpeg = ReadFile(FixturesDir() + "/real/images/p1_astronaut_prog_512x512.jpg");
  const std::string bad = jpeg.substr(0, jpeg.size() / 2);
  std::vector<std::string> shas(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) {
        EXPECT_FALSE(DecodeImage(bad, kLimit).ok());
        auto image = DecodeImage(jpeg, kLimit);
        if (image.ok()) shas[t] = RgbSha(*image);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& sha : shas) EXPECT_EQ(sha, shas[0]);
  EXPECT_FALSE(shas[0].empty());
}

// A progressive JPEG whose scans each repeat over the whole image: refused by counting its
// start-of-scan markers before anything is decoded.
TEST(DecodeImage, JpegScanBombIsRejectedBeforeDecoding) {
  const std::string jpeg = ReadFile(TestDataDir() + "/progressive.jpg");
  ASSERT_TRUE(DecodeImage(jpeg, kLimit).ok());
  const size_t first_scan = jpeg.find("\xFF\xDA");
  const size_t second_scan = jpeg.find("\xFF\xDA", first_scan + 2);
  ASSERT_NE(second_scan, std::string::npos);
  const std::string scan = jpeg.substr(first_scan, second_scan - first_scan);
  std::string bomb = jpeg.substr(0, first_scan);
  for (int i = 0; i <= kMaxJpegScans; ++i) bomb += scan;
  bomb += "\xFF\xD9";
  const auto image = DecodeImage(bomb, kLimit);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(image.status().message()).find("scans"), std::string::npos);
}

// The check runs between strips of rows and its error stops the decode (deadlines and
// cancellation reach into a large decode).
TEST(DecodeImage, CheckRunsBetweenStripsAndStopsTheDecode) {
  const std::string jpeg = ReadFile(FixturesDir() + "/real/images/p0_hubble_1000x872.jpg");
  int calls = 0;
  auto counted = DecodeImage(jpeg, kLimit, false, [&] {
    ++calls;
    return absl::OkStatus();
  });
  ASSERT_TRUE(counted.ok());
  EXPECT_GE(calls, 2);
  EXPECT_EQ(counted->pixels, DecodeImage(jpeg, kLimit)->pixels);
  calls = 0;
  auto stopped = DecodeImage(jpeg, kLimit, false, [&] {
    return ++calls < 2 ? absl::OkStatus() : absl::DeadlineExceededError("deadline");
  });
  ASSERT_FALSE(stopped.ok());
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(calls, 2);
}

// With a budget, the decoded image holds its pixels until destroyed, and a decode waits
// while others hold the budget (one image at the limit decodes alone whatever the number
// of workers): its check ends the wait.
TEST(DecodeImage, BudgetHoldsPixelsUntilTheImageIsGoneAndDecodesWait) {
  const std::string jpeg = ReadFile(FixturesDir() + "/real/images/p0_hubble_1000x872.jpg");
  constexpr uint64_t kPixels = 1000 * 872;
  PixelBudget budget(kPixels);  // room for exactly one of these images
  {
    auto image = DecodeImage(jpeg, kLimit, false, nullptr, &budget);
    ASSERT_TRUE(image.ok());
    EXPECT_EQ(budget.in_use(), kPixels);
    EXPECT_EQ(image->pixels, DecodeImage(jpeg, kLimit)->pixels);
    int checks = 0;
    const auto start = std::chrono::steady_clock::now();
    auto waiting = DecodeImage(jpeg, kLimit, false, [&] {
      return ++checks < 3 ? absl::OkStatus() : absl::CancelledError("cancelled");
    }, &budget);
    ASSERT_FALSE(waiting.ok());
    EXPECT_EQ(waiting.status().code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(checks, 3);  // every 50 ms while waiting, none yet between strips
    EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(100));
    EXPECT_EQ(budget.in_use(), kPixels);
  }
  EXPECT_EQ(budget.in_use(), 0u);

  // A second decode blocked on the first proceeds as soon as the first image is destroyed.
  auto first = std::make_unique<RgbImage>(*DecodeImage(jpeg, kLimit, false, nullptr, &budget));
  std::atomic<bool> done{false};
  std::thread second([&] {
    auto image = DecodeImage(jpeg, kLimit, false, nullptr, &budget);
    EXPECT_TRUE(image.ok());
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(done);
  first.reset();
  second.join();
  EXPECT_TRUE(done);
  EXPECT_EQ(budget.in_use(), 0u);

  // An image over the budget's capacity takes all of it (the limit is checked before).
  PixelBudget small(1000);
  auto big = DecodeImage(jpeg, kLimit, false, nullptr, &small);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(small.in_use(), 1000u);
}

namespace flatten_test {

// The bands libvips decodes (alpha last), for checking the compositing rule per pixel.
std::vector<uint8_t> RawBands(const std::string& bytes, int* bands) {
  VipsImage* image = vips_image_new_from_buffer(bytes.data(), bytes.size(), "", nullptr);
  EXPECT_NE(image, nullptr);
  *bands = vips_image_get_bands(image);
  size_t size = 0;
  void* data = vips_image_write_to_memory(image, &size);
  std::vector<uint8_t> out(static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  g_free(data);
  g_object_unref(image);
  return out;
}

// --flatten-transparency: c' = (c·a + 255·(255 − a) + 127) / 255 for grey+alpha and RGBA;
// opaque images are unchanged; without it alpha is dropped (the reference).
TEST(DecodeImage, FlattenOntoWhiteCompositesAlphaAndLeavesOpaqueImagesAlone) {
  for (const char* file : {"rgba.png", "gray_alpha.png", "alpha.webp"}) {
    SCOPED_TRACE(file);
    const std::string bytes = ReadFile(TestDataDir() + "/" + file);
    auto dropped = DecodeImage(bytes, kLimit);
    auto flat = DecodeImage(bytes, kLimit, /*flatten_onto_white=*/true);
    ASSERT_TRUE(dropped.ok() && flat.ok());
    int bands = 0;
    const std::vector<uint8_t> raw = RawBands(bytes, &bands);
    ASSERT_TRUE(bands == 2 || bands == 4);
    int translucent = 0;
    for (size_t i = 0; i < flat->pixels.size() / 3; ++i) {
      const int a = raw[i * bands + bands - 1];
      translucent += a < 255;
      for (int c = 0; c < 3; ++c) {
        const int v = raw[i * bands + (bands == 2 ? 0 : c)];
        ASSERT_EQ(flat->pixels[3 * i + c], (v * a + 255 * (255 - a) + 127) / 255) << i;
        ASSERT_EQ(dropped->pixels[3 * i + c], v) << i;
      }
    }
    EXPECT_GT(translucent, 0) << "the sample must have transparent pixels";
  }
  for (const char* file : {"rgb.png", "baseline_420.jpg", "cmyk.jpg"}) {
    SCOPED_TRACE(file);
    const std::string bytes = ReadFile(TestDataDir() + "/" + file);
    EXPECT_EQ(DecodeImage(bytes, kLimit)->pixels,
              DecodeImage(bytes, kLimit, /*flatten_onto_white=*/true)->pixels);
  }
}

}  // namespace flatten_test
}  // namespace
}  // namespace moondream
