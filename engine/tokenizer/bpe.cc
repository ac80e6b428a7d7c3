#include "engine/tokenizer/bpe.h"

#include <queue>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace moondream {
namespace {

// The GPT-2 pattern with `\s` spelled out as the Unicode White_Space property (what Python's
// `regex` and HF tokenizers use); PCRE2's own UCP `\s` would also match U+180E.
#define MD_WS \
  R"(\t-\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})"
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^)" MD_WS R"(\p{L}\p{N}]+|[)" MD_WS
    R"(]+(?![^)" MD_WS R"(])|[)" MD_WS R"(]+)";
#undef MD_WS

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// UTF-8 of a byte-table code point (all are below U+0144, so one or two bytes).
void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Inverse of ByteToUnicode over UTF-8 text: code point -> byte, -1 if not in the table.
int UnicodeToByte(char32_t cp) {
  static const auto* table = [] {
    auto* t = new absl::flat_hash_map<char32_t, int>();
    for (int b = 0; b < 256; ++b) (*t)[ByteToUnicode()[b]] = b;
    return t;
  }();
  const auto it = table->find(cp);
  return it == table->end() ? -1 : it->second;
}

// Raw bytes of a byte-level string (HF ByteLevel decoder): each character maps back through
// the byte table; a string with any character outside the table stands for its own UTF-8.
std::string ByteLevelToBytes(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    char32_t cp = c;
    size_t len = 1;
    if (c >= 0xC0 && c < 0xE0 && i + 1 < s.size()) {
      cp = ((c & 0x1F) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3F);
      len = 2;
    }
    const int b = (c < 0x80 || len == 2) ? UnicodeToByte(cp) : -1;
    if (b < 0) return s;
    out.push_back(static_cast<char>(b));
    i += len;
  }
  return out;
}

absl::Status AddVocab(const BpeSource& source, TokenizerData* data,
                      absl::flat_hash_map<std::string, int32_t>* ids) {
  constexpr int32_t kMaxId = 1 << 24;  // far above any real vocabulary; bounds id_bytes
  int32_t max_id = -1;
  for (const auto& [token, id] : source.vocab) {
    if (id < 0 || id >= kMaxId)
      return absl::InvalidArgumentError(absl::StrCat("model.vocab: id out of range for ", token));
    (*ids)[token] = id;
    max_id = std::max(max_id, id);
  }
  for (const AddedToken& t : source.added_tokens) {
    if (t.id < 0 || t.id >= kMaxId)
      return absl::InvalidArgumentError(
          absl::StrCat("added_tokens: id out of range for ", t.content));
    max_id = std::max(max_id, t.id);
  }
  data->id_bytes.assign(static_cast<size_t>(max_id) + 1, std::string());
  for (const auto& [token, id] : source.vocab) data->id_bytes[id] = ByteLevelToBytes(token);
  for (int b = 0; b < 256; ++b) {
    std::string s;
    AppendUtf8(ByteToUnicode()[b], &s);
    const auto it = ids->find(s);
    if (it == ids->end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocab: missing the token for byte ", b));
    }
    data->byte_ids[b] = it->second;
  }
  return absl::OkStatus();
}

absl::Status AddMerges(const BpeSource& source,
                       const absl::flat_hash_map<std::string, int32_t>& ids, TokenizerData* data) {
  for (size_t rank = 0; rank < source.merges.size(); ++rank) {
    const auto& [a, b] = source.merges[rank];
    const auto ia = ids.find(a), ib = ids.find(b), iab = ids.find(a + b);
    if (ia == ids.end() || ib == ids.end() || iab == ids.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model.merges[", rank, "]: \"", a, " ", b,
                                                     "\" uses a token missing from model.vocab"));
    }
    // The first occurrence of a pair wins, like HF tokenizers.
    data->merges.try_emplace(PairKey(ia->second, ib->second), static_cast<int32_t>(rank),
                             iab->second);
  }
  return absl::OkStatus();
}

}  // namespace

const std::array<char32_t, 256>& ByteToUnicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

absl::StatusOr<std::shared_ptr<const PreTokenizer>> PreTokenizer::Create() {
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED,
                    PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InternalError(absl::StrCat("pre_tokenizer: PCRE2 compile failed: ",
                                            reinterpret_cast<const char*>(message)));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if unsupported
  return std::shared_ptr<const PreTokenizer>(new PreTokenizer(code));
}

PreTokenizer::~PreTokenizer() { pcre2_code_free(code_); }

void PreTokenizer::Split(std::string_view text,
                         absl::FunctionRef<void(size_t, size_t)> piece) const {
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  size_t offset = 0;
  while (offset < text.size()) {
    const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                               offset, PCRE2_NO_UTF_CHECK, md, nullptr);
    // The pattern matches any character, so a failure can only be a resource limit: the rest
    // of the text then becomes one piece.
    const size_t end = rc > 0 ? pcre2_get_ovector_pointer(md)[1] : text.size();
    piece(offset, end);
    offset = end;
  }
  pcre2_match_data_free(md);
}

absl::StatusOr<std::shared_ptr<const TokenizerData>> TokenizerData::Build(BpeSource source) {
  auto data = std::make_shared<TokenizerData>();
  absl::flat_hash_map<std::string, int32_t> ids;
  if (absl::Status s = AddVocab(source, data.get(), &ids); !s.ok()) return s;
  if (absl::Status s = AddMerges(source, ids, data.get()); !s.ok()) return s;
  for (AddedToken& t : source.added_tokens) {
    if (t.content.empty()) return absl::InvalidArgumentError("added_tokens: empty content");
    data->id_bytes[t.id] = t.special ? std::string() : ByteLevelToBytes(t.content);
    data->added_ids[t.content] = t.id;
    if (!t.special) data->matchable.push_back(std::move(t));
  }
  auto pre = PreTokenizer::Create();
  if (!pre.ok()) return pre.status();
  data->pre_tokenizer = *std::move(pre);
  return std::shared_ptr<const TokenizerData>(std::move(data));
}

void TokenizerData::EncodeWord(std::string_view piece, std::vector<int32_t>* out) const {
  // Doubly linked symbols merged through a min-heap of (rank, position): equivalent to GPT-2's
  // "merge the lowest-ranked pair everywhere, left to right" and O(n log n) in the piece length.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank, pos, id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const int32_t n = static_cast<int32_t>(piece.size());
  std::vector<Symbol> sym(n);
  for (int32_t i = 0; i < n; ++i) {
    sym[i] = {byte_ids[static_cast<unsigned char>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push_pair = [&](int32_t pos) {
    if (pos < 0 || sym[pos].next < 0) return;
    const auto it = merges.find(PairKey(sym[pos].id, sym[sym[pos].next].id));
    if (it != merges.end()) heap.push({it->second.first, pos, it->second.second});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int32_t right = sym[c.pos].next;
    if (!sym[c.pos].alive || right < 0) continue;
    const auto it = merges.find(PairKey(sym[c.pos].id, sym[right].id));
    if (it == merges.end() || it->second.first != c.rank) continue;  // stale candidate
    sym[c.pos].id = c.id;
    sym[right].alive = false;
    sym[c.pos].next = sym[right].next;
    if (sym[right].next >= 0) sym[sym[right].next].prev = c.pos;
    push_pair(sym[c.pos].prev);
    push_pair(c.pos);
  }
  for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = sym[i].next) out->push_back(sym[i].id);
}

}  // namespace moondream
