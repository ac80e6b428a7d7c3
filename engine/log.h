// Structured logging: one logfmt line per event on stderr, e.g.
//   ts=2026-11-26T06:01:02.123Z level=info event=model_loaded model=moondream2 seconds=3.2
// Quiet by default: debug lines appear only with MOONDREAM_LOG_LEVEL=debug (or
// SetLogLevel). Thread-safe; a line is written with a single write().
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace moondream {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Parses "debug", "info", "warn", "error"; false on anything else.
bool ParseLogLevel(std::string_view text, LogLevel* level);
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

// A field value rendered as logfmt: numbers bare, strings quoted when needed.
class LogValue {
 public:
  LogValue(std::string_view v) : text_(Quote(v)) {}
  LogValue(const std::string& v) : text_(Quote(v)) {}
  LogValue(const char* v) : text_(Quote(v)) {}
  LogValue(bool v) : text_(v ? "true" : "false") {}
  LogValue(int v) : text_(std::to_string(v)) {}
  LogValue(long v) : text_(std::to_string(v)) {}
  LogValue(long long v) : text_(std::to_string(v)) {}
  LogValue(unsigned v) : text_(std::to_string(v)) {}
  LogValue(unsigned long v) : text_(std::to_string(v)) {}
  LogValue(unsigned long long v) : text_(std::to_string(v)) {}
  LogValue(double v);
  const std::string& text() const { return text_; }

 private:
  static std::string Quote(std::string_view v);
  std::string text_;
};

using LogField = std::pair<std::string_view, LogValue>;

void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields = {});

}  // namespace moondream
