// FirstGifFrame: where and how Pillow 9.4's first GIF frame differs from libvips'.
//
// Pillow decodes frame 0 into an index canvas pre-filled with the frame's transparent
// index (else index 0), writes every frame index (the transparent one included), then
// convert("RGB") looks each index up in the frame's palette (local, else global; none =
// greyscale). libvips instead makes transparent pixels RGBA (0, 0, 0, 0) and leaves the
// canvas outside the frame black (or transparent). So those pixels take the fill colour.
#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

#include "engine/image/decode_internal.h"

namespace moondream::image_internal {
namespace {

// Parses the header blocks up to the first image descriptor (no pixel data).
class GifHeader {
 public:
  explicit GifHeader(std::string_view b) : b_(b) {}

  bool Parse() {
    if (!Has(13)) return false;
    const uint8_t flags = Byte(10);
    pos_ = 13;
    if (flags & 0x80) palette_ = Palette(flags);
    while (Has(1)) {
      const uint8_t tag = Byte(pos_++);
      if (tag == 0x2C) return ImageDescriptor();
      if (tag != 0x21 || !Has(1)) return false;
      const uint8_t label = Byte(pos_++);
      for (bool first = true; Has(1); first = false) {  // data sub-blocks
        const uint8_t len = Byte(pos_++);
        if (len == 0) break;
        if (!Has(len)) return false;
        if (label == 0xF9 && first && len >= 4) {  // graphic control extension
          transparency_ = (Byte(pos_) & 1) ? Byte(pos_ + 3) : -1;
        }
        pos_ += len;
      }
    }
    return false;
  }

  GifFrameInfo Info() const {
    GifFrameInfo info;
    info.fill = FillColour();
    info.left = left_, info.top = top_, info.width = width_, info.height = height_;
    return info;
  }

 private:
  std::array<uint8_t, 3> FillColour() const {
    const int index = transparency_ >= 0 ? transparency_ : 0;
    if (!palette_) return {uint8_t(index), uint8_t(index), uint8_t(index)};
    if (size_t(index) * 3 + 3 > palette_->size()) return {0, 0, 0};
    const char* rgb = palette_->data() + index * 3;
    return {uint8_t(rgb[0]), uint8_t(rgb[1]), uint8_t(rgb[2])};
  }

  bool Has(size_t n) const { return pos_ + n <= b_.size(); }
  uint8_t Byte(size_t at) const { return uint8_t(b_[at]); }

  std::optional<std::string_view> Palette(uint8_t flags) {
    const size_t size = size_t(3) << ((flags & 7) + 1);
    if (!Has(size)) return std::nullopt;
    std::string_view palette = b_.substr(pos_, size);
    pos_ += size;
    return palette;
  }

  bool ImageDescriptor() {
    if (!Has(9)) return false;
    const uint8_t flags = Byte(pos_ + 8);
    auto u16 = [&](size_t at) { return int(Byte(pos_ + at)) | int(Byte(pos_ + at + 1)) << 8; };
    left_ = u16(0), top_ = u16(2), width_ = u16(4), height_ = u16(6);
    pos_ += 9;
    if (flags & 0x80) palette_ = Palette(flags);  // the local palette wins
    return true;
  }

  std::string_view b_;
  size_t pos_ = 0;
  std::optional<std::string_view> palette_;
  int transparency_ = -1;
  int left_ = 0, top_ = 0, width_ = 0xFFFF, height_ = 0xFFFF;
};

}  // namespace

GifFrameInfo FirstGifFrame(std::string_view bytes) {
  GifHeader header(bytes);
  header.Parse();  // a malformed header fails in libvips first; defaults are harmless
  return header.Info();
}

}  // namespace moondream::image_internal
