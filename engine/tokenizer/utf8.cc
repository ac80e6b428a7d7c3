// UTF-8 validation with U+FFFD replacement (Unicode "maximal subpart" practice, as in
// Python's errors="replace" and WHATWG TextDecoder), plus the streaming decoder.
#include <string>
#include <string_view>

#include "engine/tokenizer/tokenizer.h"

namespace moondream {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

enum class SeqKind { kValid, kInvalid, kTruncated };
struct Seq {
  size_t len;  // bytes of the valid character, or of the maximal invalid/truncated subpart
  SeqKind kind;
};

// Classifies the sequence starting at s[0] (n >= 1 bytes available).
Seq ScanSequence(const unsigned char* s, size_t n) {
  const unsigned char c = s[0];
  if (c < 0x80) return {1, SeqKind::kValid};
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlongs
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;  // no overlongs
    if (c == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return {1, SeqKind::kInvalid};
  }
  for (size_t i = 1; i < need; ++i) {
    if (i == n) return {i, SeqKind::kTruncated};
    const unsigned char lo_i = i == 1 ? lo : 0x80, hi_i = i == 1 ? hi : 0xBF;
    if (s[i] < lo_i || s[i] > hi_i) return {i, SeqKind::kInvalid};
  }
  return {need, SeqKind::kValid};
}

// Appends the valid form of `bytes` to `out`; if `hold_tail`, a truncated sequence at the end
// is not emitted and its length is returned (otherwise it becomes U+FFFD and 0 is returned).
size_t AppendValid(std::string_view bytes, bool hold_tail, std::string* out) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t i = 0;
  while (i < bytes.size()) {
    const Seq seq = ScanSequence(s + i, bytes.size() - i);
    if (seq.kind == SeqKind::kTruncated && hold_tail) return bytes.size() - i;
    if (seq.kind == SeqKind::kValid) {
      out->append(bytes.data() + i, seq.len);
    } else {
      out->append(kReplacement);
    }
    i += seq.len;
  }
  return 0;
}

}  // namespace

std::string ToValidUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  AppendValid(bytes, /*hold_tail=*/false, &out);
  return out;
}

std::string Utf8StreamDecoder::Push(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  const size_t held = AppendValid(pending_, /*hold_tail=*/true, &out);
  pending_.erase(0, pending_.size() - held);
  return out;
}

std::string Utf8StreamDecoder::Finish() {
  std::string out = ToValidUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace moondream
