// DecodeImage (spec §3.1): libvips loaders for JPEG/PNG/WebP/GIF, then Pillow's
// convert("RGB") rules applied to the decoded bands.
#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/image/decode_internal.h"
#include "engine/image/image.h"
#include "engine/image/vips_util.h"

namespace moondream {
namespace image_internal {

absl::Status CheckPixelLimit(int width, int height, uint64_t max_pixels) {
  const uint64_t pixels = uint64_t(width) * uint64_t(height);
  if (pixels <= max_pixels) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("image is ", width, "x", height, " = ", pixels,
                                                 " pixels, over the limit of ", max_pixels,
                                                 " (--max-image-pixels)"));
}

}  // namespace image_internal
namespace {

enum class Format { kUnknown, kJpeg, kPng, kWebp, kGif };

bool StartsWith(std::string_view bytes, std::string_view magic, size_t at = 0) {
  return bytes.size() >= at + magic.size() && bytes.compare(at, magic.size(), magic) == 0;
}

// By magic bytes only: libvips' own sniffing would also accept TIFF, PDF, SVG, ...
Format Sniff(std::string_view b) {
  if (StartsWith(b, "\xFF\xD8\xFF")) return Format::kJpeg;
  if (StartsWith(b, "\x89PNG\r\n\x1A\n")) return Format::kPng;
  if (StartsWith(b, "GIF87a") || StartsWith(b, "GIF89a")) return Format::kGif;
  if (StartsWith(b, "RIFF") && StartsWith(b, "WEBP", 8)) return Format::kWebp;
  return Format::kUnknown;
}

const char* FormatName(Format format) {
  switch (format) {
    case Format::kJpeg: return "JPEG";
    case Format::kPng: return "PNG";
    case Format::kWebp: return "WebP";
    case Format::kGif: return "GIF";
    default: return "image";
  }
}

// Lazy load: only the header is read here; pixels are decoded on write_to_memory.
// fail_on=error turns truncation and decoder errors into failures (Pillow raises on
// truncated files) while tolerating libjpeg's recoverable warnings (Pillow ignores them).
VipsImage* OpenHeader(Format format, std::string_view bytes) {
  void* data = const_cast<char*>(bytes.data());
  VipsImage* out = nullptr;
  int rc = -1;
  switch (format) {
    case Format::kJpeg:  // autorotate defaults to false: no EXIF rotation
      rc = vips_jpegload_buffer(data, bytes.size(), &out, "access", VIPS_ACCESS_SEQUENTIAL,
                                "fail_on", VIPS_FAIL_ON_ERROR, nullptr);
      break;
    case Format::kPng:
      rc = vips_pngload_buffer(data, bytes.size(), &out, "access", VIPS_ACCESS_SEQUENTIAL,
                               "fail_on", VIPS_FAIL_ON_ERROR, nullptr);
      break;
    case Format::kWebp:
      rc = vips_webpload_buffer(data, bytes.size(), &out, "access", VIPS_ACCESS_SEQUENTIAL,
                                "fail_on", VIPS_FAIL_ON_ERROR, nullptr);
      break;
    case Format::kGif:  // defaults page=0, n=1: the first frame
      rc = vips_gifload_buffer(data, bytes.size(), &out, "access", VIPS_ACCESS_SEQUENTIAL,
                               "fail_on", VIPS_FAIL_ON_ERROR, nullptr);
      break;
    default:
      break;
  }
  return rc == 0 ? out : nullptr;
}

// Start-of-scan markers of a JPEG, walking its segments (and skipping entropy-coded data,
// where 0xFF is followed by 0x00 or a restart marker). Stops counting past `limit`.
int CountJpegScans(std::string_view b, int limit) {
  int scans = 0;
  size_t i = 2;  // after SOI
  while (i + 4 <= b.size() && scans <= limit) {
    if (uint8_t(b[i]) != 0xFF) return scans;  // not a marker: corrupt, left to the decoder
    const uint8_t marker = uint8_t(b[i + 1]);
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (marker == 0xD9) return scans;  // EOI
    const size_t length = (size_t(uint8_t(b[i + 2])) << 8) | uint8_t(b[i + 3]);
    i += 2 + length;
    if (marker != 0xDA) continue;
    ++scans;
    // Entropy-coded data runs to the next marker that is not a stuffed byte or RSTn.
    while (i + 1 < b.size() &&
           !(uint8_t(b[i]) == 0xFF && uint8_t(b[i + 1]) != 0x00 &&
             (uint8_t(b[i + 1]) < 0xD0 || uint8_t(b[i + 1]) > 0xD7))) {
      ++i;
    }
  }
  return scans;
}

// PNG colour type 0 (grey, no alpha channel) at 16 bits: Pillow opens it as mode "I" and
// convert("RGB") clips to 255. Every other 16-bit PNG keeps the high byte.
bool IsPngGrey16(std::string_view b) {
  // signature (8) + IHDR length (4) + "IHDR" (4) + width (4) + height (4) = 24: bit depth, colour type.
  return b.size() > 25 && StartsWith(b, "IHDR", 12) && uint8_t(b[24]) == 16 && uint8_t(b[25]) == 0;
}

// Pillow 9.4 cmyk2rgb (Convert.c), applied to Adobe-inverted CMYK as libvips delivers it.
uint8_t CmykChannel(int c, int k) {
  int nk = 255 - k;
  int t = c * nk + 128;
  int v = nk - (((t >> 8) + t) >> 8);
  return uint8_t(v < 0 ? 0 : v);
}

// Alpha composited onto white, rounded to nearest.
uint8_t OntoWhite(int c, int alpha) {
  return uint8_t((c * alpha + 255 * (255 - alpha) + 127) / 255);
}

// Decoded bands (uchar or ushort) -> RGB following Pillow's convert("RGB"), or with
// `flatten` onto white where the image has alpha. gif: the first frame's geometry and
// fill colour (null for other formats). Converts one row at a time.
class RgbConverter {
 public:
  RgbConverter(VipsImage* header, bool grey16_clip, const image_internal::GifFrameInfo* gif,
               bool flatten)
      : bands_(vips_image_get_bands(header)),
        cmyk_(vips_image_get_interpretation(header) == VIPS_INTERPRETATION_CMYK),
        u16_(vips_image_get_format(header) == VIPS_FORMAT_USHORT),
        grey16_clip_(grey16_clip),
        gif_(gif),
        flatten_(flatten),
        // Alpha is the last band of grey+alpha and of (non-CMYK) RGBA.
        composite_(flatten && (bands_ == 2 || (bands_ == 4 && !cmyk_))) {}

  void Row(const void* data, int y, int width, uint8_t* out) const {
    auto sample = [&](int x, int band) -> int {
      if (!u16_) return static_cast<const uint8_t*>(data)[x * bands_ + band];
      int v = static_cast<const uint16_t*>(data)[x * bands_ + band];
      return grey16_clip_ ? (v > 255 ? 255 : v) : v >> 8;
    };
    for (int x = 0; x < width; ++x) {
      uint8_t* px = out + 3 * x;
      const bool outside_gif_frame = gif_ != nullptr && !gif_->Inside(x, y);
      if (flatten_ && outside_gif_frame) {
        px[0] = px[1] = px[2] = 255;  // the canvas around a GIF's first frame is transparent
      } else if (composite_) {
        const int a = sample(x, bands_ - 1);
        for (int c = 0; c < 3; ++c) px[c] = OntoWhite(sample(x, bands_ < 3 ? 0 : c), a);
      } else if (gif_ != nullptr && ((bands_ == 4 && sample(x, 3) == 0) || outside_gif_frame)) {
        for (int c = 0; c < 3; ++c) px[c] = gif_->fill[c];
      } else if (cmyk_ && bands_ == 4) {
        for (int c = 0; c < 3; ++c) px[c] = CmykChannel(sample(x, c), sample(x, 3));
      } else if (bands_ < 3) {  // grey or grey+alpha: replicate, alpha dropped
        px[0] = px[1] = px[2] = uint8_t(sample(x, 0));
      } else {  // RGB or RGBA: alpha dropped without compositing
        for (int c = 0; c < 3; ++c) px[c] = uint8_t(sample(x, c));
      }
    }
  }

 private:
  const int bands_;
  const bool cmyk_, u16_, grey16_clip_;
  const image_internal::GifFrameInfo* gif_;
  const bool flatten_, composite_;
};

// Pixels decoded per step (whole rows, at most 64): the decoder's own buffer is this strip,
// at most 8 MiB (16-bit RGBA), never the whole image (at the pixel limit a full 16-bit RGBA
// buffer beside the RGB result would be 400 MB more). A single row wider than this is one
// strip.
constexpr int kStripPixels = 1 << 20;
constexpr int kMaxStripRows = 64;

// Pulls the image top to bottom (the loaders are sequential) through a region and
// converts each strip into out->pixels. DATA_LOSS when the decoder fails (corrupt,
// truncated); `check`'s error when it stops the decode.
absl::Status DecodeStrips(VipsImage* image, const RgbConverter& converter,
                          const DecodeCheck& check, RgbImage* out) {
  std::unique_ptr<VipsRegion, void (*)(VipsRegion*)> region(
      vips_region_new(image), [](VipsRegion* r) { g_object_unref(r); });
  if (!region) return absl::InternalError("libvips: cannot create a region");
  out->pixels.resize(size_t(out->width) * out->height * 3);
  const int rows = std::clamp(kStripPixels / out->width, 1, kMaxStripRows);
  for (int top = 0; top < out->height; top += rows) {
    if (check) {
      if (absl::Status alive = check(); !alive.ok()) return alive;
    }
    VipsRect strip{0, top, out->width, std::min(rows, out->height - top)};
    if (vips_region_prepare(region.get(), &strip) != 0) {
      return absl::DataLossError("decoder failed");  // mapped to Corrupt() by the caller
    }
    for (int y = top; y < top + strip.height; ++y) {
      converter.Row(VIPS_REGION_ADDR(region.get(), 0, y), y, out->width,
                    &out->pixels[size_t(y) * out->width * 3]);
    }
  }
  return absl::OkStatus();
}

absl::Status Corrupt(Format format) {
  return absl::InvalidArgumentError(
      absl::StrCat("corrupt or truncated ", FormatName(format), ": ", vips_util::TakeError()));
}

}  // namespace

absl::StatusOr<RgbImage> DecodeImage(std::string_view bytes, uint64_t max_pixels,
                                     bool flatten_onto_white, const DecodeCheck& check,
                                     PixelBudget* budget) {
  if (bytes.empty()) return absl::InvalidArgumentError("image is empty");
  const Format format = Sniff(bytes);
  if (format == Format::kUnknown) {
    return absl::InvalidArgumentError("not a supported image format (JPEG, PNG, WebP, GIF)");
  }
  if (format == Format::kJpeg) {
    if (const int scans = CountJpegScans(bytes, kMaxJpegScans); scans > kMaxJpegScans) {
      return absl::InvalidArgumentError(absl::StrCat("JPEG has more than ", kMaxJpegScans,
                                                     " scans (a progressive-JPEG CPU bomb)"));
    }
  }
  if (!vips_util::EnsureInit()) return absl::InternalError("libvips failed to initialise");
  vips_util::ImagePtr image(OpenHeader(format, bytes));
  if (!image) return Corrupt(format);
  const int width = vips_image_get_width(image.get());
  const int height = vips_image_get_height(image.get());
  if (absl::Status limit = image_internal::CheckPixelLimit(width, height, max_pixels);
      !limit.ok()) {
    return limit;
  }
  const VipsBandFormat band_format = vips_image_get_format(image.get());
  if (band_format != VIPS_FORMAT_UCHAR && band_format != VIPS_FORMAT_USHORT) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported ", FormatName(format),
                                                   " sample format"));
  }
  RgbImage out;
  if (budget != nullptr) {
    absl::StatusOr<PixelBudget::Lease> lease = budget->Acquire(uint64_t(width) * height, check);
    if (!lease.ok()) return lease.status();
    out.budget_lease = std::move(*lease);
  }
  out.width = width;
  out.height = height;
  image_internal::GifFrameInfo gif;
  if (format == Format::kGif) gif = image_internal::FirstGifFrame(bytes);
  const RgbConverter converter(image.get(), format == Format::kPng && IsPngGrey16(bytes),
                               format == Format::kGif ? &gif : nullptr, flatten_onto_white);
  if (absl::Status decoded = DecodeStrips(image.get(), converter, check, &out); !decoded.ok()) {
    return decoded.code() == absl::StatusCode::kDataLoss ? Corrupt(format) : decoded;
  }
  return out;
}

}  // namespace moondream
