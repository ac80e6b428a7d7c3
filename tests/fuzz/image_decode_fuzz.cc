// libFuzzer target: DecodeImage (engine/image: format sniffing, the libvips JPEG/PNG/WebP/GIF
// loaders, the GIF first-frame header parse, Pillow's convert("RGB") rules) with a 4 M
// pixel limit so decompression bombs stay cheap, then OverlapCrops on small decodes.
// Errors must be INVALID_ARGUMENT; a decode must hold width x height x 3 bytes within the
// limit; crops must hold (rows x cols + 1) crops of 378 x 378 x 3. Half the inputs are
// decoded with a DecodeCheck that stops the decode before its second strip of rows (the
// engine's deadline and cancellation check): the decode must stop with that error.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "engine/image/image.h"

namespace {

constexpr uint64_t kMaxPixels = 4'000'000;
constexpr uint64_t kMaxCropPixels = 512 * 512;  // OverlapCrops only below this

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "image_decode_fuzz: invariant violated: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // One libvips worker thread: deterministic, and cheaper per input (before EnsureInit).
  setenv("VIPS_CONCURRENCY", "1", /*overwrite=*/0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // The last byte picks the transparency mode (both conversions get inputs) and whether the
  // decode is stopped, as a deadline would, before its second strip of rows.
  const bool flatten = size > 0 && (data[size - 1] & 1);
  const bool stop = size > 0 && (data[size - 1] & 2);
  int strips = 0;
  const moondream::DecodeCheck check = [&]() -> absl::Status {
    if (++strips >= 2) return absl::DeadlineExceededError("stopped by the fuzzer");
    return absl::OkStatus();
  };
  absl::StatusOr<moondream::RgbImage> image =
      moondream::DecodeImage(bytes, kMaxPixels, flatten, stop ? check : nullptr);
  if (!image.ok()) {
    const absl::StatusCode code = image.status().code();
    Check(code == absl::StatusCode::kInvalidArgument ||
              (stop && strips >= 2 && code == absl::StatusCode::kDeadlineExceeded),
          "a decode error is neither INVALID_ARGUMENT nor the check's own");
    return 0;
  }
  Check(!stop || strips < 2, "the decode went on after its check failed");
  const uint64_t pixels = uint64_t(image->width) * uint64_t(image->height);
  Check(image->width > 0 && image->height > 0, "an empty image decoded");
  Check(pixels <= kMaxPixels, "the pixel limit let a larger image through");
  Check(image->pixels.size() == pixels * 3, "pixels.size() != width x height x 3");
  if (pixels > kMaxCropPixels) return 0;
  const moondream::CropConfig config;
  absl::StatusOr<moondream::Crops> crops = moondream::OverlapCrops(*image, config);
  Check(crops.ok(), "OverlapCrops failed on a decoded image");
  const int tiles = crops->tiling.rows * crops->tiling.cols;
  Check(crops->tiling.rows >= 1 && crops->tiling.cols >= 1 && tiles <= config.max_crops,
        "the tiling is outside 1..max_crops");
  Check(crops->count == tiles + 1 && crops->size == config.crop_size, "crop count or size");
  Check(crops->pixels.size() == size_t(crops->count) * config.crop_size * config.crop_size * 3,
        "crop bytes != count x size x size x 3");
  return 0;
}
