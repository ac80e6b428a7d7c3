// libFuzzer target: the tokenizer on untrusted text (engine/tokenizer). Each input is used
// twice:
//  - as a question: Encode (UTF-8 repair, the PCRE2 GPT-2 pre-tokenizer, added-token
//    matching, the BPE merge loop), then Decode(Encode(text)) == ToValidUtf8(text);
//  - as token ids (16-bit little-endian, shifted to include negative and unknown ids):
//    TokenBytes through the streaming Utf8StreamDecoder, which must give exactly
//    Decode(ids), every piece valid UTF-8.
// The tokenizer is the GPT-2 vocabulary of the moondream-tiny fixture (tokenizer.json,
// $MOONDREAM_FUZZ_TOKENIZER overrides), with a few non-special added tokens (CodeGen-style
// whitespace runs, one CJK word) so leftmost-longest added-token matching runs too.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/tokenizer.h"

#ifndef MOONDREAM_FUZZ_TOKENIZER_JSON
#define MOONDREAM_FUZZ_TOKENIZER_JSON ""
#endif

namespace {

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "tokenizer_fuzz: invariant violated: %s\n", what);
  std::abort();
}

std::optional<moondream::Tokenizer>& Loaded() {
  static std::optional<moondream::Tokenizer> tokenizer;
  return tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* env = std::getenv("MOONDREAM_FUZZ_TOKENIZER");
  const std::string path = env != nullptr ? env : MOONDREAM_FUZZ_TOKENIZER_JSON;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr,
                 "tokenizer_fuzz: cannot read the tokenizer \"%s\" (the moondream-tiny fixture's "
                 "tokenizer.json; set MOONDREAM_FUZZ_TOKENIZER)\n",
                 path.c_str());
    std::exit(2);
  }
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json root = nlohmann::json::parse(text.str());
  int32_t next_id = 0;
  for (const auto& [token, id] : root["model"]["vocab"].items()) {
    next_id = std::max(next_id, id.get<int32_t>() + 1);
  }
  for (const auto& added : root["added_tokens"]) {
    next_id = std::max(next_id, added["id"].get<int32_t>() + 1);
  }
  // Contents made of characters outside GPT-2's byte table only: the HF ByteLevel decoder
  // (and Build, which mirrors it) reads any other added token's characters as bytes, so
  // "\u00e9\u00e9" would decode to the bytes E9 E9, not to its own text.
  for (const char* run : {"  ", "    ", "\t\t", "        ", "\xE6\x9D\xB1\xE4\xBA\xAC"}) {
    root["added_tokens"].push_back({{"id", next_id++}, {"content", run}, {"special", false}});
  }
  absl::StatusOr<moondream::Tokenizer> tokenizer = moondream::Tokenizer::FromJson(root.dump());
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "tokenizer_fuzz: %s\n", tokenizer.status().ToString().c_str());
    std::exit(2);
  }
  Loaded().emplace(*std::move(tokenizer));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const moondream::Tokenizer& tokenizer = *Loaded();
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // Text -> ids -> text.
  const std::vector<int32_t> ids = tokenizer.Encode(text);
  for (int32_t id : ids) {
    Check(id >= 0 && id < tokenizer.vocab_size(), "Encode gave an id outside the vocabulary");
    Check(!tokenizer.TokenBytes(id).empty(), "Encode gave a special or empty token");
  }
  const std::string valid = moondream::ToValidUtf8(text);
  Check(moondream::ToValidUtf8(valid) == valid, "ToValidUtf8 is not idempotent");
  Check(tokenizer.Decode(ids) == valid, "Decode(Encode(text)) != ToValidUtf8(text)");

  // Arbitrary ids -> streamed text.
  std::vector<int32_t> generated;
  for (size_t i = 0; i + 1 < size; i += 2) {
    generated.push_back(int32_t(data[i] | data[i + 1] << 8) - 256);
  }
  moondream::Utf8StreamDecoder decoder;
  std::string streamed;
  for (int32_t id : generated) {
    const std::string piece = decoder.Push(tokenizer.TokenBytes(id));
    Check(moondream::ToValidUtf8(piece) == piece, "Push gave invalid UTF-8");
    streamed += piece;
  }
  streamed += decoder.Finish();
  Check(streamed == tokenizer.Decode(generated), "the streamed text != Decode(ids)");
  return 0;
}
