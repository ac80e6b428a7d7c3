// Internal libvips helpers shared by decode.cc and crops.cc (not part of the module API).
#pragma once

#include <memory>
#include <string>

#include <vips/vips.h>

namespace moondream::vips_util {

// Initialises libvips once per process (thread-safe): operation cache disabled (it would
// pin decoded images in memory), untrusted loaders blocked. Returns false when libvips
// could not start.
bool EnsureInit();

// Returns libvips' error buffer as one line and clears it.
std::string TakeError();

struct Unref {
  void operator()(VipsImage* image) const { g_object_unref(image); }
};
using ImagePtr = std::unique_ptr<VipsImage, Unref>;

}  // namespace moondream::vips_util
