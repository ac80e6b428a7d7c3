// Internal building blocks of the byte-level BPE tokenizer (spec §7): the vocabulary/merge
// tables, the GPT-2 pre-tokenizer and the merge loop. Not part of the public API.
#ifndef MOONDREAM_ENGINE_TOKENIZER_BPE_H_
#define MOONDREAM_ENGINE_TOKENIZER_BPE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"

struct pcre2_real_code_8;  // PCRE2 compiled pattern (pcre2.h)

namespace moondream {

// One entry of tokenizer.json `added_tokens` (content is plain text, not byte-level).
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
};

// Tokenizer inputs as read from a file: byte-level vocab strings and merge pairs.
struct BpeSource {
  std::vector<std::pair<std::string, int32_t>> vocab;       // byte-level string -> id
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<AddedToken> added_tokens;
};

// GPT-2 pre-tokenization regex (PCRE2, UTF + Unicode properties, JIT when available):
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
class PreTokenizer {
 public:
  static absl::StatusOr<std::shared_ptr<const PreTokenizer>> Create();
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;
  // Calls `piece(begin, end)` (byte offsets) for each consecutive piece of `text`, which must
  // be valid UTF-8. The pieces cover the text exactly.
  void Split(std::string_view text, absl::FunctionRef<void(size_t, size_t)> piece) const;

 private:
  explicit PreTokenizer(pcre2_real_code_8* code) : code_(code) {}
  pcre2_real_code_8* code_;
};

struct TokenizerData {
  std::array<int32_t, 256> byte_ids{};  // id of each single-byte token
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (a,b) -> (rank, id)
  std::vector<std::string> id_bytes;                    // raw bytes per id ("" if none/special)
  std::vector<AddedToken> matchable;                    // non-special added tokens
  absl::flat_hash_map<std::string, int32_t> added_ids;  // content -> id (all added tokens)
  std::shared_ptr<const PreTokenizer> pre_tokenizer;

  // Validates `source` and builds the tables; errors name the offending field.
  static absl::StatusOr<std::shared_ptr<const TokenizerData>> Build(BpeSource source);
  // Appends the BPE ids of one pre-tokenized piece (raw bytes) to `out`.
  void EncodeWord(std::string_view piece, std::vector<int32_t>* out) const;
};

// GPT-2 byte -> unicode table: the code point that stands for each byte in vocab strings.
const std::array<char32_t, 256>& ByteToUnicode();

}  // namespace moondream

#endif  // MOONDREAM_ENGINE_TOKENIZER_BPE_H_
