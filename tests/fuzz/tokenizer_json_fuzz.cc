// libFuzzer target: a model's tokenizer.json (engine/tokenizer Tokenizer::FromJson: the JSON
// parse, the pipeline checks, vocab / merges / added_tokens validation, the tables' build).
// A model directory is untrusted input too: a corrupt file must give an error, never a
// crash. A tokenizer that loads must encode and decode a short text with ids in range.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace {

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "tokenizer_json_fuzz: invariant violated: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<moondream::Tokenizer> tokenizer = moondream::Tokenizer::FromJson(json);
  if (!tokenizer.ok()) {
    Check(tokenizer.status().code() == absl::StatusCode::kInvalidArgument,
          "a refusal is not INVALID_ARGUMENT");
    return 0;
  }
  // The tail of the input doubles as text, so added tokens from the file can match.
  const std::string_view text = json.substr(size > 64 ? size - 64 : 0);
  for (std::string_view sample : {std::string_view("Hello world, what's   this?\n\t\xE2\x82\xAC"), text}) {
    const std::vector<int32_t> ids = tokenizer->Encode(sample);
    for (int32_t id : ids) {
      Check(id >= 0 && id < tokenizer->vocab_size(), "Encode gave an id outside the vocabulary");
    }
    const std::string decoded = tokenizer->Decode(ids);
    Check(moondream::ToValidUtf8(decoded) == decoded, "Decode gave invalid UTF-8");
  }
  return 0;
}
