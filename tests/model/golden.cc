#include "tests/model/golden.h"

#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "engine/model/torch_compat.h"
#include "engine/weights/config.h"

namespace moondream::testing {

std::string FixturesDir() { return MOONDREAM_FIXTURES_DIR; }

std::vector<GoldenSet> AllGoldenSets() {
  const std::string root = FixturesDir();
  return {{"public-a", root + "/public-a/ckpt", root + "/public-a/golden"},
          {"public-b", root + "/public-b/ckpt", root + "/public-b/golden"},
          {"real", root + "/public-a/ckpt", root + "/real/golden"}};
}

static std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

nlohmann::json ReadJson(const std::string& path) { return nlohmann::json::parse(ReadFile(path)); }

std::map<std::string, at::Tensor> ReadGoldenTensors(const std::string& path) {
  const std::string bytes = ReadFile(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), sizeof(header_len));  // little-endian host
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_len));
  const char* data = bytes.data() + 8 + header_len;
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string dtype = entry["dtype"];
    const at::ScalarType type = dtype == "F32" ? at::kFloat : at::kLong;
    if (dtype != "F32" && dtype != "I64") throw std::runtime_error("dtype " + dtype);
    const std::vector<int64_t> shape = entry["shape"].get<std::vector<int64_t>>();
    const uint64_t begin = entry["data_offsets"][0];
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
    std::memcpy(t.data_ptr(), data + begin, t.numel() * t.element_size());
    tensors[name] = t;
  }
  return tensors;
}

absl::StatusOr<LoadedLanguage> LoadLanguage(const std::string& ckpt_dir, Precision precision) {
  return RunGuarded([&]() -> absl::StatusOr<LoadedLanguage> {
    auto config = LoadConfig(ckpt_dir + "/config.json");
    if (!config.ok()) return config.status();
    WeightStoreOptions options;
    options.precision = precision;
    auto store = WeightStore::Open(ckpt_dir + "/model.safetensors", options);
    if (!store.ok()) return store.status();
    auto lm = Language::Load(**store, *config, ckpt_dir + "/tokenizer.json",
                             ChoosePlan(precision, /*cuda=*/false, nullptr));
    if (!lm.ok()) return lm.status();
    return LoadedLanguage{std::move(*store), std::move(*lm)};
  });
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

// The set's fixture folder of `kind` ("images", "crops"): real/ has its own.
static std::string SetDir(const GoldenSet& set, const std::string& kind) {
  return FixturesDir() + (set.name == "real" ? "/real/" : "/") + kind + "/";
}

// `image` of golden.json's "images" of `set`, with its file.
static GoldenCase CaseIn(const GoldenSet& set, const nlohmann::json& images, const std::string& image) {
  if (!images.contains(image)) throw std::runtime_error("no golden image " + image);
  return {set, image, SetDir(set, "images") + images[image]["file"].get<std::string>()};
}

std::vector<GoldenCase> AllGoldenCases() {
  std::vector<GoldenCase> cases;
  for (const GoldenSet& set : AllGoldenSets()) {
    const nlohmann::json images = ReadJson(set.golden_dir + "/golden.json")["images"];
    for (const auto& item : images.items()) cases.push_back(CaseIn(set, images, item.key()));
  }
  return cases;
}

GoldenCase CaseOf(const GoldenSet& set, const std::string& image) {
  return CaseIn(set, ReadJson(set.golden_dir + "/golden.json")["images"], image);
}

Crops CropsOf(const GoldenCase& c, const CropConfig& config) {
  auto rgb = DecodeImage(ReadFile(c.file), 50'000'000);
  if (!rgb.ok()) throw std::runtime_error(rgb.status().ToString());
  auto crops = OverlapCrops(*rgb, config);
  if (!crops.ok()) throw std::runtime_error(crops.status().ToString());
  return std::move(*crops);
}

Crops WithUpstreamPixels(const GoldenCase& c, Crops crops) {
  // (n·size)×size, lossless
  auto upstream = DecodeImage(ReadFile(SetDir(c.set, "crops") + c.image + ".crops.png"), 50'000'000);
  if (!upstream.ok()) throw std::runtime_error(upstream.status().ToString());
  if (upstream->pixels.size() != crops.pixels.size()) {
    throw std::runtime_error(c.image + ": the upstream crops have another size than this build's");
  }
  crops.pixels = std::move(upstream->pixels);
  return crops;
}

std::string GoldenCaseName(const GoldenCase& c) {
  std::string name = c.set.name + "_" + c.image;
  for (char& ch : name) {
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

void PrintTo(const GoldenCase& c, std::ostream* os) { *os << c.set.name << "/" << c.image; }

}  // namespace moondream::testing
