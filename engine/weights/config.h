// Moondream2 hyper-parameters (spec §1). Defaults are the 2B values of HF revision 2025-01-09.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/weights/safetensors.h"

namespace moondream {

struct TextConfig {
  int dim = 2048;
  int n_layers = 24;
  int vocab_size = 51200;
  int max_context = 2048;
  int n_heads = 32;
  int prefix_attn = 730;  // 1 BOS + 729 image tokens attend bidirectionally
  int head_dim() const { return dim / n_heads; }
  int rot_dim() const { return dim / (2 * n_heads); }  // rotated dims per head (32)
  int ff_dim() const { return 4 * dim; }               // MLP inner width
};

struct VisionConfig {
  int enc_dim = 1152;
  int enc_patch_size = 14;
  int enc_n_layers = 27;
  int enc_ff_dim = 4304;
  int enc_n_heads = 16;
  int crop_size = 378;
  int in_channels = 3;
  int max_crops = 12;
  int overlap_margin = 4;  // in patches
  int proj_inner_dim = 8192;
  int proj_out_dim = 2048;
  int grid() const { return crop_size / enc_patch_size; }  // 27
  int n_patches() const { return grid() * grid(); }         // 729
  int patch_dim() const { return in_channels * enc_patch_size * enc_patch_size; }  // 588
  int head_dim() const { return enc_dim / enc_n_heads; }
};

struct RegionConfig {
  int dim = 2048;
  int coord_feat_dim = 256;
  int coord_out_dim = 1024;
  int size_feat_dim = 512;
  int size_out_dim = 2048;
  int inner_dim = 8192;
};

struct TokenizerConfig {
  int32_t bos_id = 50256;
  int32_t eos_id = 50256;
  // Keys: caption_short, caption_normal, query_prefix, query_suffix, detect_prefix,
  // detect_suffix, point_prefix, point_suffix (spec §1.4). Always all eight are present.
  std::map<std::string, std::vector<int32_t>> templates;
};

struct MoondreamConfig {
  TextConfig text;
  VisionConfig vision;
  RegionConfig region;
  TokenizerConfig tokenizer;
};

// The 2B defaults, templates included.
MoondreamConfig DefaultConfig();

// Reads the HF config.json and its "config" object (upstream MoondreamConfig.to_dict():
// text / vision / region / tokenizer{bos_id, eos_id, templates{caption{short,normal},
// query{prefix,suffix}, detect{...}, point{...}}}). Missing or empty "config" => 2B
// defaults; missing fields keep their defaults. Wrong types / non-positive dims are errors.
absl::StatusOr<MoondreamConfig> LoadConfig(const std::string& config_json_path);
// Same, from the JSON text (`source` names it in errors).
absl::StatusOr<MoondreamConfig> ParseConfig(const std::string& json_text,
                                            const std::string& source);

// One expected checkpoint tensor (spec §2.2), full name incl. the "model." prefix.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};
// All expected tensors for `config` (592 for the 2B defaults), in spec-table order.
std::vector<ExpectedTensor> ExpectedTensors(const MoondreamConfig& config);

// Every expected tensor must be present with exactly its shape (error names the tensor,
// the expected and the actual shape); extra tensors are logged as a warning.
absl::Status CheckShapes(const MoondreamConfig& config, const SafetensorsFile& file);

}  // namespace moondream
