#include "engine/tokenizer/tokenizer.h"

#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/bpe.h"
#include "nlohmann/json.hpp"

namespace moondream {
namespace {

using nlohmann::json;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<json> ParseJson(std::string_view text, absl::string_view what) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(what, ": invalid JSON"));
  return j;
}

absl::Status BadField(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", problem));
}

// Prefixes `status` with the file(s) it came from.
absl::Status InFile(absl::string_view file, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(file, ": ", status.message()));
}

// token -> id object (tokenizer.json model.vocab, or GPT-2 encoder.json).
absl::Status ParseVocab(const json& vocab, absl::string_view field, BpeSource* source) {
  if (!vocab.is_object()) return BadField(field, "must be an object of token -> id");
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer())
      return BadField(absl::StrCat(field, "[\"", token, "\"]"), "must be an integer id");
    source->vocab.emplace_back(token, id.get<int32_t>());
  }
  return absl::OkStatus();
}

// "a b" strings (tokenizers < 0.20 and vocab.bpe lines) or ["a", "b"] pairs.
absl::Status ParseMerge(const json& m, const std::string& field, BpeSource* source) {
  if (m.is_string()) {
    const std::string& s = m.get_ref<const std::string&>();
    const size_t space = s.find(' ');
    if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
      return BadField(field, "must be \"a b\" (two tokens, one space)");
    }
    source->merges.emplace_back(s.substr(0, space), s.substr(space + 1));
  } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
    source->merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
  } else {
    return BadField(field, "must be a string \"a b\" or a pair [\"a\", \"b\"]");
  }
  return absl::OkStatus();
}

absl::Status ParseAddedTokens(const json& root, BpeSource* source) {
  if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return absl::OkStatus();
  const json& added = root["added_tokens"];
  if (!added.is_array()) return BadField("added_tokens", "must be an array");
  for (size_t i = 0; i < added.size(); ++i) {
    const json& t = added[i];
    const std::string field = absl::StrCat("added_tokens[", i, "]");
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer())
      return BadField(field + ".id", "must be an integer");
    if (!t.contains("content") || !t["content"].is_string())
      return BadField(field + ".content", "must be a string");
    const bool special =
        t.contains("special") && t["special"].is_boolean() && t["special"].get<bool>();
    source->added_tokens.push_back(
        {t["id"].get<int32_t>(), t["content"].get<std::string>(), special});
  }
  return absl::OkStatus();
}

// Only the pipeline of spec §7 is implemented: no normalizer, ByteLevel pre-tokenizer with
// the GPT-2 regex and no prefix space, BPE model.
absl::Status CheckPipeline(const json& root) {
  if (root.contains("normalizer") && !root["normalizer"].is_null())
    return BadField("normalizer", "must be null");
  if (!root.contains("pre_tokenizer") || !root["pre_tokenizer"].is_object())
    return BadField("pre_tokenizer", "must be an object");
  const json& pre = root["pre_tokenizer"];
  // Types are checked before any value is read: json::value() throws on a type mismatch
  // (e.g. "type": true), which would end the process instead of refusing the file.
  if (!pre.contains("type") || pre["type"] != "ByteLevel")
    return BadField("pre_tokenizer.type", "must be \"ByteLevel\"");
  auto flag = [&](const char* name, bool fallback) -> std::optional<bool> {
    if (!pre.contains(name)) return fallback;
    if (!pre[name].is_boolean()) return std::nullopt;
    return pre[name].get<bool>();
  };
  if (flag("add_prefix_space", false) != false)
    return BadField("pre_tokenizer.add_prefix_space", "must be false");
  if (flag("use_regex", true) != true) return BadField("pre_tokenizer.use_regex", "must be true");
  if (!root.contains("model") || !root["model"].is_object())
    return BadField("model", "must be an object");
  const json& model = root["model"];
  if (model.contains("type") && model["type"] != "BPE")
    return BadField("model.type", "must be \"BPE\"");
  return absl::OkStatus();
}

absl::StatusOr<BpeSource> SourceFromTokenizerJson(const json& root) {
  if (!root.is_object()) return BadField("(root)", "must be an object");
  if (absl::Status s = CheckPipeline(root); !s.ok()) return s;
  BpeSource source;
  const json& model = root["model"];
  if (!model.contains("vocab")) return BadField("model.vocab", "is missing");
  if (absl::Status s = ParseVocab(model["vocab"], "model.vocab", &source); !s.ok()) return s;
  if (!model.contains("merges") || !model["merges"].is_array())
    return BadField("model.merges", "must be an array");
  for (size_t i = 0; i < model["merges"].size(); ++i) {
    if (absl::Status s =
            ParseMerge(model["merges"][i], absl::StrCat("model.merges[", i, "]"), &source);
        !s.ok())
      return s;
  }
  if (absl::Status s = ParseAddedTokens(root, &source); !s.ok()) return s;
  return source;
}

}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<const TokenizerData> data) : data_(std::move(data)) {}

absl::StatusOr<Tokenizer> Tokenizer::FromFile(const std::string& tokenizer_json_path) {
  absl::StatusOr<std::string> text = ReadFile(tokenizer_json_path);
  if (!text.ok()) return text.status();
  return FromJson(*text);
}

absl::StatusOr<Tokenizer> Tokenizer::FromJson(std::string_view json_text) {
  absl::StatusOr<json> root = ParseJson(json_text, "tokenizer.json");
  if (!root.ok()) return root.status();
  absl::StatusOr<BpeSource> source = SourceFromTokenizerJson(*root);
  if (!source.ok()) return InFile("tokenizer.json", source.status());
  auto data = TokenizerData::Build(*std::move(source));
  if (!data.ok()) return InFile("tokenizer.json", data.status());
  return Tokenizer(*std::move(data));
}

absl::StatusOr<Tokenizer> Tokenizer::FromGpt2Files(const std::string& encoder_json,
                                                   const std::string& vocab_bpe) {
  absl::StatusOr<std::string> enc_text = ReadFile(encoder_json);
  if (!enc_text.ok()) return enc_text.status();
  absl::StatusOr<std::string> bpe_text = ReadFile(vocab_bpe);
  if (!bpe_text.ok()) return bpe_text.status();
  absl::StatusOr<json> enc = ParseJson(*enc_text, "encoder.json");
  if (!enc.ok()) return enc.status();
  BpeSource source;
  if (absl::Status s = ParseVocab(*enc, "encoder.json", &source); !s.ok()) return s;
  std::istringstream lines(*bpe_text);
  std::string line;
  for (size_t line_no = 1; std::getline(lines, line); ++line_no) {
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const std::string field = absl::StrCat("vocab.bpe line ", line_no);
    if (absl::Status s = ParseMerge(json(line), field, &source); !s.ok()) return s;
  }
  constexpr char kEndOfText[] = "<|endoftext|>";
  if (enc->contains(kEndOfText))
    source.added_tokens.push_back({(*enc)[kEndOfText].get<int32_t>(), kEndOfText, true});
  auto data = TokenizerData::Build(std::move(source));
  // Build names tokenizer.json fields: model.vocab is encoder.json, model.merges[i] is the
  // i-th merge line of vocab.bpe.
  if (!data.ok()) return InFile(absl::StrCat(encoder_json, " + ", vocab_bpe), data.status());
  return Tokenizer(*std::move(data));
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text) const {
  // Input that is not valid UTF-8 is repaired (U+FFFD) first, as the regex needs valid text.
  const std::string valid = ToValidUtf8(text);
  const std::string_view all(valid);
  std::vector<int32_t> ids;
  ids.reserve(all.size() / 3 + 1);
  auto encode_plain = [&](std::string_view segment) {
    data_->pre_tokenizer->Split(segment, [&](size_t begin, size_t end) {
      data_->EncodeWord(segment.substr(begin, end - begin), &ids);
    });
  };
  size_t start = 0;
  for (size_t pos = start; pos < all.size(); ++pos) {
    const AddedToken* best = nullptr;  // leftmost-longest non-special added token
    for (const AddedToken& t : data_->matchable) {
      if ((best == nullptr || t.content.size() > best->content.size()) &&
          all.compare(pos, t.content.size(), t.content) == 0) {
        best = &t;
      }
    }
    if (best == nullptr) continue;
    encode_plain(all.substr(start, pos - start));
    ids.push_back(best->id);
    start = pos + best->content.size();
    pos = start - 1;
  }
  encode_plain(all.substr(start));
  return ids;
}

std::string_view Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= data_->id_bytes.size()) return {};
  return data_->id_bytes[id];
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string bytes;
  for (int32_t id : ids) bytes.append(TokenBytes(id));
  return ToValidUtf8(bytes);
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(data_->id_bytes.size()); }

int32_t Tokenizer::TokenId(std::string_view token_content) const {
  const auto it =
      data_->added_ids.find(absl::string_view(token_content.data(), token_content.size()));
  return it == data_->added_ids.end() ? -1 : it->second;
}

}  // namespace moondream
