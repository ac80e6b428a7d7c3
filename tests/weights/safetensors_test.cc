#include "engine/weights/safetensors.h"

#include <cstring>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/weights/test_util.h"

namespace moondream {
namespace {

using testing::SafetensorsBytes;
using testing::TempDir;
using testing::WriteFile;

TEST(Safetensors, OpensFixtureA) {
  auto file = SafetensorsFile::Open(testing::FixtureCkpt("public-a") + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().size(), 372u);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  const TensorView* wte = (*file)->Find("model.text.wte");
  ASSERT_NE(wte, nullptr);
  EXPECT_EQ(wte->dtype, DType::kF16);
  EXPECT_EQ(wte->shape, (std::vector<int64_t>{51200, 128}));
  EXPECT_EQ(wte->nbytes, 51200u * 128 * 2);
  EXPECT_EQ((*file)->Find("model.text.nope"), nullptr);
  uint64_t bytes = 0;
  for (const TensorView& t : (*file)->tensors()) bytes += t.nbytes;
  EXPECT_EQ(bytes, 15563584u * 2);  // fixture README / init.json n_params
}

TEST(Safetensors, OpensFixtureBAndReleaseKeepsDataReadable) {
  auto file = SafetensorsFile::Open(testing::FixtureCkpt("public-b") + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().size(), 382u);
  const TensorView* t = (*file)->Find("model.text.lm_head.weight");
  ASSERT_NE(t, nullptr);
  std::vector<uint8_t> before(t->data, t->data + t->nbytes);
  (*file)->Release(*t);
  EXPECT_EQ(std::memcmp(before.data(), t->data, t->nbytes), 0);
}

// Resident file-backed pages of this process, from /proc/self/status (kB).
long RssFileKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("RssFile:", 0) == 0) return std::stol(line.substr(8));
  }
  return -1;
}

TEST(Safetensors, ReleaseDropsResidentPages) {
  auto file = SafetensorsFile::Open(testing::FixtureCkpt("public-a") + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorView* wte = (*file)->Find("model.text.wte");  // 13.1 MB
  ASSERT_NE(wte, nullptr);
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < wte->nbytes; i += 4096) sink = sink + wte->data[i];
  const long touched = RssFileKb();
  (*file)->Release(*wte);
  const long released = RssFileKb();
  ASSERT_GT(touched, 0);
  EXPECT_GT(touched - released, 10 * 1024) << "touched " << touched << " kB, after release " << released << " kB";
}

TEST(Safetensors, WriterRoundTrip) {
  TempDir dir;
  const std::string path = dir.Path("w.safetensors");
  auto w = SafetensorsWriter::Create(path, {{"a", DType::kF32, {2, 3}}, {"b", DType::kBF16, {5}}, {"c", DType::kF16, {0}}},
                                     {{"format", "pt"}});
  ASSERT_TRUE(w.ok()) << w.status();
  const float a[6] = {1, 2, 3, 4, 5, 6};
  const uint16_t b[5] = {1, 2, 3, 4, 5};
  ASSERT_TRUE((*w)->Write(a, sizeof(a)).ok());
  EXPECT_FALSE((*w)->Write(b, 4).ok());  // wrong size for "b"
  ASSERT_TRUE((*w)->Write(b, sizeof(b)).ok());
  EXPECT_FALSE((*w)->Finish().ok());  // "c" not written
  ASSERT_TRUE((*w)->Write(nullptr, 0).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorView* ta = (*file)->Find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->dtype, DType::kF32);
  EXPECT_EQ(std::memcmp(ta->data, a, sizeof(a)), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ta->data) % 8, 0u);  // header padded to 8
  EXPECT_EQ((*file)->Find("b")->dtype, DType::kBF16);
  EXPECT_EQ((*file)->Find("c")->nbytes, 0u);
}

struct CorruptCase {
  const char* label;
  std::string bytes;
  std::vector<std::string> expect;  // substrings of the error message
};

std::vector<CorruptCase> CorruptCases() {
  const std::string ok_a = R"("a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]})";
  const std::string good = SafetensorsBytes("{" + ok_a + "}", 8);
  std::string past_eof = SafetensorsBytes("{}", 0);
  past_eof[0] = 100;  // header claims 100 bytes, file has 2
  std::string huge(8, '\0');
  huge[4] = 1;  // 2^32 bytes
  return {
      {"empty", "", {"shorter than the 8-byte header length"}},
      {"truncated", good.substr(0, good.size() - 3), {"tensor a", "outside the data section"}},
      {"header_past_eof", past_eof, {"header length 100", "past the end"}},
      {"header_too_long", huge + "{}", {"exceeds the 100 MiB limit"}},
      {"bad_json", SafetensorsBytes("{\"a\":", 0), {"not valid JSON"}},
      {"not_object", SafetensorsBytes("[1,2]", 0), {"not an object"}},
      {"bad_dtype", SafetensorsBytes(R"({"x":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8),
       {"tensor x", "unsupported dtype I64"}},
      {"shape_bytes_mismatch", SafetensorsBytes(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       {"tensor x", "shape [3] x F32 needs 12 bytes", "hold 8"}},
      {"offsets_outside", SafetensorsBytes(R"({"x":{"dtype":"F16","shape":[4],"data_offsets":[8,16]}})", 8),
       {"tensor x", "data_offsets [8, 16]", "outside"}},
      {"offsets_reversed", SafetensorsBytes(R"({"x":{"dtype":"F16","shape":[0],"data_offsets":[8,0]}})", 8),
       {"tensor x", "reversed"}},
      {"overlap", SafetensorsBytes("{" + ok_a + R"(,"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}})", 8),
       {"tensor b", "overlaps tensor a"}},
      {"missing_field", SafetensorsBytes(R"({"x":{"dtype":"F16","shape":[4]}})", 8), {"tensor x", "data_offsets"}},
      {"negative_dim", SafetensorsBytes(R"({"x":{"dtype":"F16","shape":[-4],"data_offsets":[0,8]}})", 8),
       {"tensor x", "shape"}},
      {"bad_metadata", SafetensorsBytes(R"({"__metadata__":{"format":1}})", 0), {"__metadata__.format"}},
  };
}

TEST(Safetensors, CorruptFilesGiveClearErrors) {
  TempDir dir;
  for (const CorruptCase& c : CorruptCases()) {
    const std::string path = dir.Path(std::string(c.label) + ".safetensors");
    WriteFile(path, c.bytes);
    auto file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok()) << c.label;
    const std::string msg(file.status().message());
    EXPECT_NE(msg.find(path), std::string::npos) << c.label << ": " << msg;
    for (const std::string& part : c.expect) {
      EXPECT_NE(msg.find(part), std::string::npos) << c.label << ": '" << part << "' not in: " << msg;
    }
  }
}

TEST(Safetensors, MissingFileIsNotFound) {
  auto file = SafetensorsFile::Open("/nonexistent/model.safetensors");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(file.status().message().find("/nonexistent/model.safetensors"), std::string::npos);
}

TEST(Safetensors, MetadataOnlyAndMinimalFilesOpen) {
  TempDir dir;
  WriteFile(dir.Path("m.safetensors"), SafetensorsBytes(R"({"__metadata__":{"format":"pt"}})", 0));
  auto file = SafetensorsFile::Open(dir.Path("m.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
}

}  // namespace
}  // namespace moondream
