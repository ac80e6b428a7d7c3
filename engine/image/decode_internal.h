// Internal pieces of DecodeImage shared between decode.cc and gif.cc.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/image/image.h"

namespace moondream::image_internal {

// InvalidArgument "image is WxH = N pixels, over the limit of M (--max-image-pixels)".
absl::Status CheckPixelLimit(int width, int height, uint64_t max_pixels);

// The first GIF frame's rectangle on the canvas and the RGB colour Pillow gives the pixels
// outside it and the transparent ones inside (see gif.cc).
struct GifFrameInfo {
  std::array<uint8_t, 3> fill{};
  int left = 0, top = 0, width = 0, height = 0;
  bool Inside(int x, int y) const {
    return x >= left && x < left + width && y >= top && y < top + height;
  }
};
GifFrameInfo FirstGifFrame(std::string_view bytes);

}  // namespace moondream::image_internal
