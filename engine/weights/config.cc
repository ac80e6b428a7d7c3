#include "engine/weights/config.h"

#include <fstream>
#include <initializer_list>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "engine/log.h"

namespace moondream {
namespace {

using Json = nlohmann::json;

absl::Status ConfigError(const std::string& source, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config ", source, ": ", what));
}

// Reads positive integer fields `names` of section `section` into `fields`.
absl::Status ReadInts(const Json& config, const std::string& section,
                      std::initializer_list<std::pair<const char*, int*>> fields,
                      const std::string& source) {
  auto it = config.find(section);
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return ConfigError(source, absl::StrCat("config.", section, " is not an object"));
  for (const auto& [key, out] : fields) {
    auto f = it->find(key);
    if (f == it->end() || f->is_null()) continue;
    if (!f->is_number_integer() || f->get<int64_t>() <= 0 || f->get<int64_t>() > (1 << 30)) {
      return ConfigError(source, absl::StrCat("config.", section, ".", key, " must be a positive integer, got ",
                                              f->dump()));
    }
    *out = f->get<int>();
  }
  return absl::OkStatus();
}

// tokenizer.templates.<task>.<part> (e.g. caption.short) -> templates["caption_short"].
absl::Status ReadTokenizer(const Json& config, TokenizerConfig* tok, const std::string& source) {
  auto it = config.find("tokenizer");
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return ConfigError(source, "config.tokenizer is not an object");
  for (const auto& [key, out] : {std::pair<const char*, int32_t*>{"bos_id", &tok->bos_id}, {"eos_id", &tok->eos_id}}) {
    auto f = it->find(key);
    if (f == it->end()) continue;
    if (!f->is_number_integer() || f->get<int64_t>() < 0) {
      return ConfigError(source, absl::StrCat("config.tokenizer.", key, " must be a non-negative integer"));
    }
    *out = f->get<int32_t>();
  }
  auto templates = it->find("templates");
  if (templates == it->end() || templates->is_null()) return absl::OkStatus();
  for (auto& [name, ids] : tok->templates) {
    const size_t sep = name.find('_');
    const std::string task = name.substr(0, sep), part = name.substr(sep + 1);
    const std::string field = absl::StrCat("config.tokenizer.templates.", task, ".", part);
    auto t = templates->find(task);
    if (t == templates->end() || t->is_null()) continue;
    auto p = t->is_object() ? t->find(part) : t->end();
    if (!t->is_object() || p == t->end() || p->is_null()) continue;
    if (!p->is_array()) return ConfigError(source, absl::StrCat(field, " is not a list of token ids"));
    std::vector<int32_t> parsed;
    for (const auto& id : *p) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0) {
        return ConfigError(source, absl::StrCat(field, " holds a non-id value ", id.dump()));
      }
      parsed.push_back(id.get<int32_t>());
    }
    ids = std::move(parsed);
  }
  return absl::OkStatus();
}

// Layer counts far above any real model (24 and 27 in Moondream2) and far below what would
// make the list of expected tensors (ExpectedTensors) a runaway allocation.
constexpr int kMaxLayers = 1024;

// Whether the product of `factors` (each in 1..2^30, as ReadInts allows) fits an int.
bool FitsInt(std::initializer_list<int64_t> factors) {
  int64_t product = 1;
  for (int64_t f : factors) {
    product *= f;  // product <= INT_MAX and f <= 2^30 before: no int64 overflow
    if (product > std::numeric_limits<int>::max()) return false;
  }
  return true;
}

absl::Status Validate(const MoondreamConfig& c, const std::string& source) {
  // First what the checks below and the engine compute in int (2*n_heads, the 3*dim and
  // 4*dim of the text blocks, VisionConfig's patch_dim() and n_patches(), 2*overlap_margin):
  // a corrupt config is refused here instead of overflowing.
  if (c.text.n_layers > kMaxLayers || c.vision.enc_n_layers > kMaxLayers) {
    return ConfigError(source, absl::StrCat("text.n_layers and vision.enc_n_layers must be at most ", kMaxLayers));
  }
  const VisionConfig& v = c.vision;
  const char* too_large = nullptr;
  if (!FitsInt({2, c.text.n_heads})) too_large = "2*text.n_heads";
  else if (!FitsInt({4, c.text.dim})) too_large = "4*text.dim";
  else if (!FitsInt({3, v.enc_dim})) too_large = "3*vision.enc_dim";
  else if (!FitsInt({v.in_channels, v.enc_patch_size, v.enc_patch_size})) too_large = "vision.in_channels*enc_patch_size^2";
  else if (!FitsInt({v.grid(), v.grid()})) too_large = "(vision.crop_size/enc_patch_size)^2";
  else if (!FitsInt({2, v.overlap_margin})) too_large = "2*vision.overlap_margin";
  if (too_large != nullptr) return ConfigError(source, absl::StrCat(too_large, " is too large"));
  if (c.text.dim % c.text.n_heads != 0) return ConfigError(source, "text.dim is not a multiple of text.n_heads");
  if (c.text.dim % (2 * c.text.n_heads) != 0) return ConfigError(source, "text.dim is not a multiple of 2*n_heads");
  if (c.vision.enc_dim % c.vision.enc_n_heads != 0) {
    return ConfigError(source, "vision.enc_dim is not a multiple of vision.enc_n_heads");
  }
  if (c.vision.crop_size % c.vision.enc_patch_size != 0) {
    return ConfigError(source, "vision.crop_size is not a multiple of vision.enc_patch_size");
  }
  if (c.region.coord_feat_dim % 2 != 0 || c.region.size_feat_dim % 2 != 0 || c.region.size_out_dim % 2 != 0) {
    return ConfigError(source, "region coord_feat_dim, size_feat_dim and size_out_dim must be even");
  }
  return absl::OkStatus();
}

}  // namespace

MoondreamConfig DefaultConfig() {
  MoondreamConfig c;
  c.tokenizer.templates = {
      {"caption_short", {198, 198, 16438, 8305, 25}}, {"caption_normal", {198, 198, 24334, 1159, 25}},
      {"query_prefix", {198, 198, 24361, 25}},        {"query_suffix", {198, 198, 33706, 25}},
      {"detect_prefix", {198, 198, 47504, 25}},       {"detect_suffix", {628}},
      {"point_prefix", {198, 198, 12727, 25}},        {"point_suffix", {628}},
  };
  return c;
}

absl::StatusOr<MoondreamConfig> ParseConfig(const std::string& json_text, const std::string& source) {
  const Json root = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return ConfigError(source, "not valid JSON");
  if (!root.is_object()) return ConfigError(source, "top level is not a JSON object");
  MoondreamConfig c = DefaultConfig();
  auto it = root.find("config");
  if (it == root.end() || it->is_null()) return c;
  if (!it->is_object()) return ConfigError(source, "field config is not an object");
  const Json& cfg = *it;
  TextConfig& t = c.text;
  VisionConfig& v = c.vision;
  RegionConfig& r = c.region;
  absl::Status s = ReadInts(cfg, "text", {{"dim", &t.dim}, {"n_layers", &t.n_layers}, {"vocab_size", &t.vocab_size},
      {"max_context", &t.max_context}, {"n_heads", &t.n_heads}, {"prefix_attn", &t.prefix_attn}}, source);
  if (s.ok()) {
    s = ReadInts(cfg, "vision", {{"enc_dim", &v.enc_dim}, {"enc_patch_size", &v.enc_patch_size},
        {"enc_n_layers", &v.enc_n_layers}, {"enc_ff_dim", &v.enc_ff_dim}, {"enc_n_heads", &v.enc_n_heads},
        {"crop_size", &v.crop_size}, {"in_channels", &v.in_channels}, {"max_crops", &v.max_crops},
        {"overlap_margin", &v.overlap_margin}, {"proj_inner_dim", &v.proj_inner_dim},
        {"proj_out_dim", &v.proj_out_dim}}, source);
  }
  if (s.ok()) {
    s = ReadInts(cfg, "region", {{"dim", &r.dim}, {"coord_feat_dim", &r.coord_feat_dim},
        {"coord_out_dim", &r.coord_out_dim}, {"size_feat_dim", &r.size_feat_dim},
        {"size_out_dim", &r.size_out_dim}, {"inner_dim", &r.inner_dim}}, source);
  }
  if (s.ok()) s = ReadTokenizer(cfg, &c.tokenizer, source);
  if (s.ok()) s = Validate(c, source);
  if (!s.ok()) return s;
  return c;
}

absl::StatusOr<MoondreamConfig> LoadConfig(const std::string& config_json_path) {
  std::ifstream in(config_json_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("config ", config_json_path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), config_json_path);
}

namespace {

// Appends tensors in spec §2.2 naming ("model." + path).
class TensorList {
 public:
  void Add(const std::string& name, std::vector<int64_t> shape) { out_.push_back({"model." + name, std::move(shape)}); }
  void Linear(const std::string& name, int64_t out, int64_t in) {
    Add(name + ".weight", {out, in});
    Add(name + ".bias", {out});
  }
  void Norm(const std::string& name, int64_t dim) {
    Add(name + ".weight", {dim});
    Add(name + ".bias", {dim});
  }
  std::vector<ExpectedTensor> Take() { return std::move(out_); }

 private:
  std::vector<ExpectedTensor> out_;
};

void AddVision(const VisionConfig& v, TensorList* l) {
  l->Linear("vision.patch_emb", v.enc_dim, v.patch_dim());
  l->Add("vision.pos_emb", {1, v.n_patches(), v.enc_dim});
  for (int n = 0; n < v.enc_n_layers; ++n) {
    const std::string b = absl::StrCat("vision.blocks.", n);
    l->Norm(b + ".ln1", v.enc_dim);
    l->Linear(b + ".attn.qkv", 3 * v.enc_dim, v.enc_dim);
    l->Linear(b + ".attn.proj", v.enc_dim, v.enc_dim);
    l->Norm(b + ".ln2", v.enc_dim);
    l->Linear(b + ".mlp.fc1", v.enc_ff_dim, v.enc_dim);
    l->Linear(b + ".mlp.fc2", v.enc_dim, v.enc_ff_dim);
  }
  l->Norm("vision.post_ln", v.enc_dim);
  l->Linear("vision.proj_mlp.fc1", v.proj_inner_dim, 2 * v.enc_dim);
  l->Linear("vision.proj_mlp.fc2", v.proj_out_dim, v.proj_inner_dim);
}

void AddText(const TextConfig& t, TensorList* l) {
  l->Add("text.wte", {t.vocab_size, t.dim});
  for (int n = 0; n < t.n_layers; ++n) {
    const std::string b = absl::StrCat("text.blocks.", n);
    l->Norm(b + ".ln", t.dim);
    l->Linear(b + ".attn.qkv", 3 * t.dim, t.dim);
    l->Linear(b + ".attn.proj", t.dim, t.dim);
    l->Linear(b + ".mlp.fc1", t.ff_dim(), t.dim);
    l->Linear(b + ".mlp.fc2", t.dim, t.ff_dim());
  }
  l->Norm("text.post_ln", t.dim);
  l->Linear("text.lm_head", t.vocab_size, t.dim);
}

void AddRegion(const RegionConfig& r, TensorList* l) {
  l->Add("region.coord_features", {1, r.coord_feat_dim / 2});  // stored transposed (spec §2.1)
  l->Linear("region.coord_encoder", r.dim, r.coord_feat_dim);
  l->Linear("region.coord_decoder.fc1", r.inner_dim, r.dim);
  l->Linear("region.coord_decoder.fc2", r.coord_out_dim, r.inner_dim);
  l->Add("region.size_features", {2, r.size_feat_dim / 2});
  l->Linear("region.size_encoder", r.dim, r.size_feat_dim);
  l->Linear("region.size_decoder.fc1", r.inner_dim, r.dim);
  l->Linear("region.size_decoder.fc2", r.size_out_dim, r.inner_dim);
}

}  // namespace

std::vector<ExpectedTensor> ExpectedTensors(const MoondreamConfig& c) {
  TensorList list;
  AddVision(c.vision, &list);
  AddText(c.text, &list);
  AddRegion(c.region, &list);
  return list.Take();
}

absl::Status CheckShapes(const MoondreamConfig& config, const SafetensorsFile& file) {
  std::set<std::string> expected;
  for (const ExpectedTensor& e : ExpectedTensors(config)) {
    expected.insert(e.name);
    const TensorView* t = file.Find(e.name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint ", file.path(), ": missing tensor ", e.name,
                                                     " (expected shape ", ShapeString(e.shape), ")"));
    }
    if (t->shape != e.shape) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint ", file.path(), ": tensor ", e.name,
                                                     " has shape ", ShapeString(t->shape), ", expected ",
                                                     ShapeString(e.shape)));
    }
  }
  for (const TensorView& t : file.tensors()) {
    if (expected.count(t.name) == 0) {
      Log(LogLevel::kWarn, "unexpected_tensor", {{"file", file.path()}, {"tensor", t.name},
                                                 {"shape", ShapeString(t.shape)}});
    }
  }
  return absl::OkStatus();
}

}  // namespace moondream
