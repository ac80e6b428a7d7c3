// SelectTiling (spec §3.2) and OverlapCrops (spec §3.3).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/image/image.h"
#include "engine/image/vips_util.h"

namespace moondream {
namespace {

// libvips resize of `image` to (about) width×height with independent axis scales, as the
// reference's pyvips `resize(tw / W, vscale=th / H)`. Returns the H×W×3 result; libvips'
// own output-size rounding decides its exact size (callers clip / zero-pad).
// UNVERIFIED (spec §3.3): libvips' output-size rounding; exact for every size tested here.
absl::StatusOr<RgbImage> Resize(const RgbImage& image, int width, int height) {
  if (!vips_util::EnsureInit()) return absl::InternalError("libvips failed to initialise");
  vips_util::ImagePtr in(vips_image_new_from_memory(image.pixels.data(), image.pixels.size(),
                                                    image.width, image.height, 3,
                                                    VIPS_FORMAT_UCHAR));
  VipsImage* resized = nullptr;
  if (!in || vips_resize(in.get(), &resized, double(width) / image.width, "vscale",
                         double(height) / image.height, nullptr) != 0) {
    return absl::InternalError(absl::StrCat("image resize failed: ", vips_util::TakeError()));
  }
  vips_util::ImagePtr out(resized);
  if (vips_image_get_bands(out.get()) != 3 ||
      vips_image_get_format(out.get()) != VIPS_FORMAT_UCHAR) {
    return absl::InternalError("image resize changed the pixel format");
  }
  size_t size = 0;
  void* data = vips_image_write_to_memory(out.get(), &size);
  if (data == nullptr) {
    return absl::InternalError(absl::StrCat("image resize failed: ", vips_util::TakeError()));
  }
  RgbImage result;
  result.width = vips_image_get_width(out.get());
  result.height = vips_image_get_height(out.get());
  const uint8_t* bytes = static_cast<const uint8_t*>(data);
  result.pixels.assign(bytes, bytes + size);
  g_free(data);
  return result;
}

// Copies src[y0 : y0+size, x0 : x0+size] into the zero-initialised size×size crop `dst`,
// clipping at the source edge.
void CopyWindow(const RgbImage& src, int y0, int x0, int size, uint8_t* dst) {
  const int rows = std::max(0, std::min(size, src.height - y0));
  const int cols = std::max(0, std::min(size, src.width - x0));
  for (int y = 0; y < rows; ++y) {
    std::memcpy(dst + size_t(y) * size * 3, &src.pixels[(size_t(y0 + y) * src.width + x0) * 3],
                size_t(cols) * 3);
  }
}

}  // namespace

Tiling SelectTiling(double h, double w, double crop_window, int max_crops) {
  const double m = max_crops;
  if (h <= crop_window || w <= crop_window) return {1, 1};
  const double min_h = std::ceil(h / crop_window), min_w = std::ceil(w / crop_window);
  if (min_h * min_w > m) {
    const double r = std::sqrt(m / (min_h * min_w));
    return {std::max(1, int(std::floor(min_h * r))), std::max(1, int(std::floor(min_w * r)))};
  }
  int rows = int(std::floor(std::sqrt(m * h / w)));
  int cols = int(std::floor(std::sqrt(m * w / h)));
  rows = std::max(rows, int(min_h));
  cols = std::max(cols, int(min_w));
  if (rows * cols > max_crops) {
    if (cols > rows) {
      cols = max_crops / rows;
    } else {
      rows = max_crops / cols;
    }
  }
  return {std::max(1, rows), std::max(1, cols)};
}

absl::StatusOr<Crops> OverlapCrops(const RgbImage& image, const CropConfig& config) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != size_t(image.width) * image.height * 3) {
    return absl::InvalidArgumentError("OverlapCrops: malformed RGB image");
  }
  const int margin_px = config.overlap_margin * config.patch_size;  // 56
  const int window = config.crop_size - 2 * margin_px;               // 266
  const int size = config.crop_size;
  Crops crops;
  crops.tiling = SelectTiling(image.height - 2 * margin_px, image.width - 2 * margin_px, window,
                              config.max_crops);
  const Tiling& t = crops.tiling;
  crops.count = t.rows * t.cols + 1;
  crops.size = size;
  const size_t crop_bytes = size_t(size) * size * 3;
  crops.pixels.assign(crop_bytes * crops.count, 0);

  auto global = Resize(image, size, size);
  if (!global.ok()) return global.status();
  CopyWindow(*global, 0, 0, size, crops.pixels.data());
  // Canvas T_h×T_w; for a 1×1 tiling it is the same resize as the global crop.
  const int canvas_h = t.rows * window + 2 * margin_px, canvas_w = t.cols * window + 2 * margin_px;
  auto canvas = (t.rows == 1 && t.cols == 1) ? global : Resize(image, canvas_w, canvas_h);
  if (!canvas.ok()) return canvas.status();
  for (int i = 0; i < t.rows; ++i) {
    for (int j = 0; j < t.cols; ++j) {
      uint8_t* dst = crops.pixels.data() + crop_bytes * (1 + i * t.cols + j);
      CopyWindow(*canvas, window * i, window * j, size, dst);
    }
  }
  return crops;
}

}  // namespace moondream
