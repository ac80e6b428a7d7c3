#include "engine/image/vips_util.h"

#include <mutex>

#if defined(__aarch64__)
#include <vips/vector.h>
#endif

#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "engine/log.h"

namespace moondream::vips_util {
namespace {

// libvips reports per-tile decode failures through GLib warnings on stderr; the failure
// itself reaches the caller as a Status, so the warnings go to the debug log.
void LogVipsMessage(const gchar* domain, GLogLevelFlags, const gchar* message, gpointer) {
  Log(LogLevel::kDebug, "vips_message", {{"domain", domain ? domain : ""}, {"message", message}});
}

}  // namespace

bool EnsureInit() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
    ok = vips_init("moondream") == 0;
    if (!ok) return;
    vips_cache_set_max(0);  // no operation cache: every call here is one-shot
    vips_block_untrusted_set(TRUE);
#if defined(__aarch64__)
    // orc's aarch64 code (Debian 12's orc 0.4.33) corrupts the heap in vips_resize: glibc
    // aborts with "free(): invalid next size" (tests/image OverlapCrops under qemu-aarch64,
    // every CPU model tried). libvips's C path is safe; its crops are a few levels from the
    // x86 orc path's, which the upstream reference matches (docs/arm64.md).
    vips_vector_set_enabled(FALSE);
#endif
    g_log_set_handler("VIPS", GLogLevelFlags(G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE |
                                             G_LOG_LEVEL_INFO | G_LOG_LEVEL_DEBUG),
                      LogVipsMessage, nullptr);
  });
  return ok;
}

std::string TakeError() {
  std::string message = vips_error_buffer();
  vips_error_clear();
  absl::string_view trimmed = absl::StripTrailingAsciiWhitespace(message);
  std::string line = absl::StrReplaceAll(trimmed, {{"\n", "; "}});
  return line.empty() ? "libvips could not read it" : line;
}

}  // namespace moondream::vips_util
