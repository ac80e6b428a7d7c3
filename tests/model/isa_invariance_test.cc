// The INT8 model's outputs do not depend on the CPU kernels: every kernel variant this CPU
// runs (forced per model through MoondreamOptions::cpu_kernels, as --cpu-isa does) gives the
// same image embeddings, bit for bit, and the same greedy tokens as the scalar reference,
// on the first fixture image of each checkpoint. The kernels are bit-identical by construction
// (kernels/kernels.h); this proves it holds through the whole model, including the int8
// KV cache, the fused attention and the fused-GELU MLPs.
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "engine/model/moondream.h"
#include "kernels/kernels.h"
#include "tests/model/golden.h"

namespace moondream::testing {
namespace {

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

const Moondream& Int8Model(const std::string& ckpt_dir, const kernels::KernelSet* ks) {
  static std::map<std::pair<std::string, const kernels::KernelSet*>, std::unique_ptr<Moondream>>
      models;
  auto& model = models[{ckpt_dir, ks}];
  if (model == nullptr) {
    MoondreamOptions options;
    options.model_dir = ckpt_dir;
    options.precision = "int8";
    options.cpu_kernels = ks;
    auto loaded = Moondream::Load(options);
    if (!loaded.ok()) throw std::runtime_error(loaded.status().ToString());
    model = std::move(*loaded);
  }
  return *model;
}

struct Outputs {
  at::Tensor embeds;
  std::vector<int32_t> caption, query;
};

Outputs RunTasks(const Moondream& model, const std::string& bytes) {
  Outputs out;
  auto embeds = model.EncodeEmbeds(bytes, RunContext{}, nullptr);
  if (!embeds.ok()) throw std::runtime_error(embeds.status().ToString());
  out.embeds = *embeds;
  auto encoded = model.Encode(bytes, RunContext{});
  if (!encoded.ok()) throw std::runtime_error(encoded.status().ToString());
  Request request;
  request.task = Task::kCaption;
  request.settings.max_tokens = 12;
  out.caption = model.Run(request, **encoded, RunContext{})->token_ids;
  request.task = Task::kQuery;
  request.text = "What is in the picture?";
  out.query = model.Run(request, **encoded, RunContext{})->token_ids;
  return out;
}

class IsaInvariance : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(IsaInvariance, EveryVariantGivesTheScalarReferenceOutputs) {
  const GoldenCase& c = GetParam();
  const std::string bytes = ReadBytes(c.file);
  std::string error;
  const kernels::KernelSet* scalar = kernels::ResolveKernels("scalar", &error);
  const Outputs reference = RunTasks(Int8Model(c.set.ckpt_dir, scalar), bytes);
  int compared = 0;
  for (const kernels::KernelSet* ks : kernels::AllKernelSets()) {
    if (ks == scalar || !ks->runs(kernels::HostCpu())) continue;
    SCOPED_TRACE(ks->name);
    const Moondream& model = Int8Model(c.set.ckpt_dir, ks);
    EXPECT_EQ(model.info().cpu_isa, ks->name);
    const Outputs out = RunTasks(model, bytes);
    EXPECT_TRUE(at::equal(out.embeds, reference.embeds));
    EXPECT_EQ(out.caption, reference.caption);
    EXPECT_EQ(out.query, reference.query);
    ++compared;
  }
  std::printf("[isa-invariance] %s: %d variants equal to scalar\n", GoldenCaseName(c).c_str(),
              compared);
}

// The first image of each checkpoint, 378x378 (2 crops): the scalar reference is ~100x
// slower than the SIMD variants, and a 1000-pixel image costs ~2 minutes of it.
std::vector<GoldenCase> FirstCaseOfEachCheckpoint() {
  std::vector<GoldenCase> cases;
  for (const GoldenCase& c : AllGoldenCases()) {
    if (c.set.name != "real" && (cases.empty() || cases.back().set.name != c.set.name)) {
      cases.push_back(c);
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, IsaInvariance, ::testing::ValuesIn(FirstCaseOfEachCheckpoint()),
                         [](const auto& info) { return GoldenCaseName(info.param); });

}  // namespace
}  // namespace moondream::testing
