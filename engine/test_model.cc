#include "engine/test_model.h"

#include <algorithm>
#include <array>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/image/image.h"

namespace moondream {
namespace {

constexpr int kDefaultMaxTokens = 512;     // as Moondream2 (spec §6.2)
constexpr int kDefaultMaxObjects = 50;     // as Moondream2 (spec §6.6)
constexpr int32_t kVocabularyIds = 50256;  // token ids stay below the EOS id
constexpr int kImageTokens = 1;            // one fingerprint vector per image

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// FNV-1a, 64 bits: stable across runs and platforms.
uint64_t Hash(std::string_view text, uint64_t seed = 14695981039346656037ull) {
  for (unsigned char c : text) seed = (seed ^ c) * 1099511628211ull;
  return seed;
}

// A uniform value in [0, 1) from a hash.
double Unit(uint64_t hash) { return static_cast<double>(hash >> 11) / 9007199254740992.0; }

struct NamedColour {
  const char* name;
  int r, g, b;
};
constexpr NamedColour kColours[] = {
    {"black", 0, 0, 0},       {"white", 255, 255, 255}, {"gray", 128, 128, 128},
    {"red", 200, 30, 30},     {"green", 40, 160, 40},   {"blue", 40, 70, 200},
    {"yellow", 240, 220, 40}, {"teal", 0, 128, 128},    {"magenta", 200, 40, 200},
    {"orange", 245, 140, 30}, {"purple", 110, 50, 150}, {"brown", 120, 75, 35},
    {"pink", 245, 170, 190},  {"navy", 20, 30, 100},    {"olive", 120, 120, 30}};

class TestImage : public EncodedImage {
 public:
  std::array<int, 3> mean{};  // mean R, G, B
  uint64_t bytes() const override { return sizeof(TestImage); }

  const char* ColourName() const {
    const NamedColour* best = &kColours[0];
    int best_distance = -1;
    for (const NamedColour& c : kColours) {
      const int dr = c.r - mean[0], dg = c.g - mean[1], db = c.b - mean[2];
      const int distance = dr * dr + dg * dg + db * db;
      if (best_distance < 0 || distance < best_distance) best = &c, best_distance = distance;
    }
    return best->name;
  }
  std::string Size() const { return absl::StrCat(width, "×", height); }  // U+00D7: 2 bytes
  uint64_t Fingerprint() const {
    return Hash(absl::StrCat(width, ",", height, ",", mean[0], ",", mean[1], ",", mean[2]));
  }
};

std::shared_ptr<const TestImage> Fingerprint(const RgbImage& rgb) {
  auto image = std::make_shared<TestImage>();
  image->width = rgb.width;
  image->height = rgb.height;
  std::array<uint64_t, 3> sum{};
  for (size_t i = 0; i + 2 < rgb.pixels.size(); i += 3) {
    for (int c = 0; c < 3; ++c) sum[c] += rgb.pixels[i + c];
  }
  const uint64_t count = std::max<uint64_t>(1, rgb.pixels.size() / 3);
  for (int c = 0; c < 3; ++c) image->mean[c] = static_cast<int>(sum[c] / count);
  return image;
}

// Words of `text` between single spaces (empty words kept).
std::vector<std::string> Words(const std::string& text) {
  std::vector<std::string> words(1);
  for (char c : text) {
    if (c == ' ') {
      words.emplace_back();
    } else {
      words.back() += c;
    }
  }
  return words;
}

int WordCount(const std::string& text) {
  const std::vector<std::string> words = Words(text);
  return static_cast<int>(
      std::count_if(words.begin(), words.end(), [](const std::string& w) { return !w.empty(); }));
}

// The answer text and the prompt it answers, per task.
std::pair<std::string, std::string> PromptAndAnswer(const Request& request,
                                                    const TestImage& image) {
  const std::string shape = image.width > image.height   ? "landscape"
                            : image.width < image.height ? "portrait"
                                                         : "square";
  switch (request.task) {
    case Task::kQuery:
      return {absl::StrCat("Question: ", request.text, " Answer:"),
              absl::StrCat("you asked “", request.text, "” about a ", image.Size(), " ",
                           image.ColourName(), " image")};
    case Task::kCaption:
      if (request.caption_length == CaptionLength::kShort) {
        return {"Short caption:", absl::StrCat("a test image of ", image.Size(), " pixels, mostly ",
                                               image.ColourName())};
      }
      return {"Long caption:",
              absl::StrCat("a test image of ", image.Size(), " pixels in ", shape,
                           " format, mostly ", image.ColourName(), " with a mean colour of rgb(",
                           image.mean[0], ", ", image.mean[1], ", ", image.mean[2], ") 🎨")};
    default:
      return {absl::StrCat(request.task == Task::kDetect ? "Detect: " : "Point: ", request.text),
              ""};
  }
}

class TestModel : public Model {
 public:
  explicit TestModel(const TestModelOptions& options) : options_(options) {
    info_.name = "test";
    info_.precision = "none";
    info_.device = "cpu";
    info_.source = "builtin";
  }

  const ModelInfo& info() const override { return info_; }

  absl::StatusOr<std::shared_ptr<const EncodedImage>> Encode(std::string_view image_bytes,
                                                             const RunContext& ctx) const override {
    const Clock::time_point start = Clock::now();
    if (options_.stall_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options_.stall_ms));
    absl::StatusOr<RgbImage> rgb = DecodeImage(image_bytes, options_.max_image_pixels,
                                                  ctx.flatten_transparency,
                                                  [&ctx] { return ctx.CheckAlive(); },
                                                  ctx.decode_budget);
    if (!rgb.ok()) return rgb.status();
    const Clock::time_point decoded = Clock::now();
    std::shared_ptr<const EncodedImage> image = Fingerprint(*rgb);
    ctx.AddTime(&Timings::image_decode_ms, Ms(decoded - start));
    ctx.AddTime(&Timings::vision_encode_ms, Ms(Clock::now() - decoded));
    return image;
  }

  absl::StatusOr<Result> Run(const Request& request, const EncodedImage& encoded,
                             const RunContext& ctx) const override {
    const auto* image = dynamic_cast<const TestImage*>(&encoded);
    if (image == nullptr) return absl::InvalidArgumentError("image was not encoded by `test`");
    const Clock::time_point start = Clock::now();
    auto [prompt, answer] = PromptAndAnswer(request, *image);
    Result result;
    result.usage.prompt_tokens = WordCount(prompt);
    result.usage.image_tokens = kImageTokens;
    const double prefill_ms = Ms(Clock::now() - start);
    ctx.AddTime(&Timings::prefill_ms, prefill_ms);
    const bool text = request.task == Task::kCaption || request.task == Task::kQuery;
    absl::Status status = text ? Generate(answer, request.settings.max_tokens, ctx, &result)
                               : Locate(request, *image, ctx, &result);
    if (!status.ok()) return status;
    ctx.AddTime(&Timings::decode_ms, Ms(Clock::now() - start) - prefill_ms);
    return result;
  }

 private:
  // One token step: the configured delay, then the liveness check.
  absl::Status Step(const RunContext& ctx) const {
    if (options_.token_delay_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(options_.token_delay_ms));
    }
    return ctx.CheckAlive();
  }

  // Emits `answer` word by word (a word keeps its leading space), at most max_tokens.
  absl::Status Generate(const std::string& answer, int max_tokens, const RunContext& ctx,
                        Result* result) const {
    const Clock::time_point start = Clock::now();
    const size_t limit = max_tokens > 0 ? max_tokens : kDefaultMaxTokens;
    std::vector<std::string> words = Words(answer);
    result->finish_reason = words.size() > limit ? FinishReason::kLength : FinishReason::kStop;
    words.resize(std::min(words.size(), limit));
    for (size_t i = 0; i < words.size(); ++i) {
      if (absl::Status alive = Step(ctx); !alive.ok()) return alive;
      const std::string piece = absl::StrCat(i == 0 ? "" : " ", words[i]);
      if (i == 0) ctx.AddTime(&Timings::time_to_first_token_ms, Ms(Clock::now() - start));
      result->token_ids.push_back(static_cast<int32_t>(Hash(piece) % kVocabularyIds));
      result->text += piece;
      if (ctx.on_text) ctx.on_text(piece);
    }
    result->usage.generated_tokens = static_cast<int>(result->token_ids.size());
    return absl::OkStatus();
  }

  // 3..5 objects placed by hashes of the image and the object name.
  absl::Status Locate(const Request& request, const TestImage& image, const RunContext& ctx,
                      Result* result) const {
    const uint64_t seed = Hash(request.text, image.Fingerprint());
    const int found = 3 + static_cast<int>(seed % 3);
    const int limit = request.max_objects > 0 ? request.max_objects : kDefaultMaxObjects;
    result->finish_reason = found > limit ? FinishReason::kLength : FinishReason::kStop;
    const bool detect = request.task == Task::kDetect;
    for (int i = 0; i < std::min(found, limit); ++i) {
      if (absl::Status alive = Step(ctx); !alive.ok()) return alive;
      const uint64_t h = Hash(std::to_string(i), seed);
      const float x = static_cast<float>(0.1 + 0.8 * Unit(h));
      const float y = static_cast<float>(0.1 + 0.8 * Unit(Hash("y", h)));
      if (detect) {
        const float w = static_cast<float>(0.05 + 0.25 * Unit(Hash("w", h)));
        const float v = static_cast<float>(0.05 + 0.25 * Unit(Hash("h", h)));
        result->boxes.push_back(Box{x - w / 2, y - v / 2, x + w / 2, y + v / 2});
      } else {
        result->points.push_back(Point{x, y});
      }
      result->usage.generated_tokens += detect ? 3 : 2;  // region steps, as Moondream2
    }
    return absl::OkStatus();
  }

  TestModelOptions options_;
  ModelInfo info_;
};

}  // namespace

std::unique_ptr<Model> MakeTestModel(const TestModelOptions& options) {
  return std::make_unique<TestModel>(options);
}

}  // namespace moondream
