// Image decoding and overlap cropping (spec §3), on libvips. No ATen here.
//
//   MD_ASSIGN(RgbImage rgb, DecodeImage(bytes, max_pixels));   // §3.1
//   MD_ASSIGN(Crops crops, OverlapCrops(rgb, CropConfig{}));     // §3.2 + §3.3
//
// All functions are thread-safe; libvips is initialised once on first use.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/image/pixel_budget.h"

namespace moondream {

// 8-bit RGB, row-major H×W×3 (R, G, B).
struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;
  PixelBudget::Lease budget_lease;  // DecodeImage's budget: held until the image is destroyed
};

// Decodes JPEG, PNG, WebP or GIF (first frame) to RGB exactly as Pillow's convert("RGB"):
// alpha dropped without compositing, palette / grey expanded, 16-bit reduced to 8-bit the
// way Pillow does it, no EXIF rotation. The pixel count is checked against `max_pixels`
// from the header, before any pixel is decoded (decompression bombs). With
// `flatten_onto_white`, an alpha channel (grey+alpha, RGBA, and GIF transparency, which
// otherwise shows the frame's fill colour) is composited onto white instead:
// c' = (c·a + 255·(255 − a) + 127) / 255.
// Errors: InvalidArgument naming the problem ("image is empty", "not a supported image
// format (JPEG, PNG, WebP, GIF)", "corrupt or truncated JPEG: <libvips message>",
// "image is WxH = N pixels, over the limit of M (--max-image-pixels)").
//
// Stopping early: a JPEG with more than kMaxJpegScans scans is refused before decoding
// (progressive scans each pass over the whole image: a few KB can cost minutes of CPU), and
// `check` (when set) runs between strips of rows; its error stops the decode and is
// returned (the engine passes its deadline and cancellation check).
//
// With `budget`, the image's width × height pixels are taken from it after the header is
// read and before any pixel buffer exists (waiting, with `check`, while other decodes hold
// it), and the returned RgbImage holds them until it is destroyed.
inline constexpr int kMaxJpegScans = 100;
using DecodeCheck = std::function<absl::Status()>;
absl::StatusOr<RgbImage> DecodeImage(std::string_view bytes, uint64_t max_pixels,
                                     bool flatten_onto_white = false,
                                     const DecodeCheck& check = nullptr,
                                     PixelBudget* budget = nullptr);

struct Tiling {
  int rows = 1, cols = 1;
};

// Spec §3.2: h = H − 2·margin_px, w = W − 2·margin_px, crop_window = usable window in pixels
// (266), max_crops = maximum number of local crops (12).
Tiling SelectTiling(double h, double w, double crop_window, int max_crops);

struct CropConfig {
  int crop_size = 378;
  int patch_size = 14;
  int overlap_margin = 4;  // in patches
  int max_crops = 12;
};

// Crop stack [count, size, size, 3] uint8: index 0 = global crop, then the local crops of
// `tiling` in row-major order (count = rows·cols + 1).
struct Crops {
  Tiling tiling;
  int count = 0;
  int size = 0;
  std::vector<uint8_t> pixels;
};

// Spec §3.3: libvips resize of the original image to the tiled canvas (local crops) and
// straight to size×size (global crop).
absl::StatusOr<Crops> OverlapCrops(const RgbImage& image, const CropConfig& config);

}  // namespace moondream
