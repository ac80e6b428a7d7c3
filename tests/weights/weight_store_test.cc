#include "engine/weights/weight_store.h"

#include <cmath>
#include <cstring>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/weights/config.h"
#include "tests/weights/test_util.h"

namespace moondream {
namespace {

using testing::FixtureCkpt;

std::string FixtureA() { return FixtureCkpt("public-a") + "/model.safetensors"; }

// IEEE binary16 -> float, written out by hand (independent of ATen's conversion).
float HalfToFloat(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float v;
  if (exp == 0) v = std::ldexp(static_cast<float>(mant), -24);
  else if (exp == 31) v = mant ? NAN : INFINITY;
  else v = std::ldexp(static_cast<float>(mant | 0x400), exp - 25);
  return sign ? -v : v;
}

// The fixture tensor `name` decoded by HalfToFloat, as an fp32 tensor.
at::Tensor ReferenceFp32(const std::string& name) {
  auto file = SafetensorsFile::Open(FixtureA());
  EXPECT_TRUE(file.ok());
  const TensorView* t = (*file)->Find(name);
  EXPECT_NE(t, nullptr);
  at::Tensor out = at::empty(t->shape, at::kFloat);
  float* dst = out.data_ptr<float>();
  for (int64_t i = 0; i < t->numel(); ++i) {
    uint16_t h;
    std::memcpy(&h, t->data + 2 * i, 2);
    dst[i] = HalfToFloat(h);
  }
  return out;
}

std::unique_ptr<WeightStore> OpenStore(WeightStoreOptions options) {
  auto store = WeightStore::Open(FixtureA(), std::move(options));
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

TEST(WeightStore, Fp32TensorsEqualFp16SourceExactly) {
  auto store = OpenStore({Precision::kFP32});
  const auto root = store->Root();
  struct Case {
    WeightStore::Scope scope;
    std::string name;
    std::vector<int64_t> shape;
  } cases[] = {
      {root.Sub("vision"), "pos_emb", {1, 729, 64}},
      {root.Sub("vision").Sub("blocks").Sub("26").Sub("ln2"), "weight", {64}},
      {root.Sub("text").Sub("blocks").Sub("1").Sub("mlp").Sub("fc2"), "weight", {128, 512}},
      {root.Sub("region"), "size_features", {2, 256}},
  };
  for (const Case& c : cases) {
    auto t = c.scope.Tensor(c.name, c.shape);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(*t, ReferenceFp32(c.scope.path() + "." + c.name))) << c.scope.path() << "." << c.name;
  }
  EXPECT_EQ(store->converted(), 4u);
}

TEST(WeightStore, DenseLinearAndEmbeddingMatchSource) {
  auto store = OpenStore({Precision::kFP32});
  auto qkv = store->Root().Sub("text").Sub("blocks").Sub("0").Sub("attn").Linear("qkv", 384, 128);
  ASSERT_TRUE(qkv.ok()) << qkv.status();
  EXPECT_FALSE(qkv->is_int8());
  const at::Tensor w = ReferenceFp32("model.text.blocks.0.attn.qkv.weight");
  const at::Tensor b = ReferenceFp32("model.text.blocks.0.attn.qkv.bias");
  EXPECT_TRUE(at::equal(qkv->Forward(at::zeros({1, 128})), b.unsqueeze(0)));
  EXPECT_TRUE(at::allclose(qkv->Forward(at::eye(128)), w.t() + b, 0, 1e-6));
  auto wte = store->Root().Sub("text").Embedding("wte", 51200, 128);
  ASSERT_TRUE(wte.ok()) << wte.status();
  const at::Tensor ids = at::tensor(std::vector<int64_t>{0, 50256, 51199});
  EXPECT_TRUE(at::equal(wte->Lookup(ids, at::kFloat), ReferenceFp32("model.text.wte").index_select(0, ids)));
}

TEST(WeightStore, ErrorsNameTheTensor) {
  auto store = OpenStore({Precision::kFP32});
  const auto text = store->Root().Sub("text");
  auto wrong = text.Tensor("post_ln.weight", {64});
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("model.text.post_ln.weight has shape [128], expected [64]"),
            std::string::npos) << wrong.status();
  auto missing = text.Linear("nope", 4, 4);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("model.text.nope.weight"), std::string::npos);
  ASSERT_TRUE(text.Tensor("post_ln.bias", {128}).ok());
  auto twice = text.Tensor("post_ln.bias", {128});
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("already converted"), std::string::npos);
}

TEST(WeightStore, PrecisionParsingAndDeviceRules) {
  EXPECT_EQ(*ParsePrecision("BF16"), Precision::kBF16);
  EXPECT_EQ(*ParsePrecision("float16"), Precision::kFP16);
  EXPECT_EQ(std::string(PrecisionName(*ParsePrecision("int8"))), "int8");
  EXPECT_FALSE(ParsePrecision("int4").ok());
  auto fp16_cpu = WeightStore::Open(FixtureA(), {Precision::kFP16, "cpu"});
  ASSERT_FALSE(fp16_cpu.ok());
  EXPECT_NE(fp16_cpu.status().message().find("cuda"), std::string::npos);
  EXPECT_FALSE(WeightStore::Open(FixtureA(), {Precision::kFP32, "tpu"}).ok());
  auto bf16 = OpenStore({Precision::kBF16});
  auto t = bf16->Root().Sub("vision").Tensor("pos_emb", {1, 729, 64});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(*t, ReferenceFp32("model.vision.pos_emb").to(at::kBFloat16)));
}

TEST(WeightStore, Int8QuantizesLinearsExceptSkipped) {
  // Raw per-channel quantization against the file's weights: smoothing (which rescales
  // the columns) off here; Int8SmoothingFoldsIntoLayerNormAndLinears covers it.
  auto store = OpenStore({Precision::kINT8, "cpu", {"text.lm_head", "vision.blocks.*"}, nullptr, false});
  const auto root = store->Root();
  auto fc1 = root.Sub("text").Sub("blocks").Sub("0").Sub("mlp").Linear("fc1", 512, 128);
  ASSERT_TRUE(fc1.ok()) << fc1.status();
  EXPECT_TRUE(fc1->is_int8());
  const at::Tensor x = at::randn({3, 128}, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor ref = at::linear(x, ReferenceFp32("model.text.blocks.0.mlp.fc1.weight"),
                                    ReferenceFp32("model.text.blocks.0.mlp.fc1.bias"));
  const at::Tensor y = fc1->Forward(x);
  EXPECT_LT((y - ref).norm().item<double>() / ref.norm().item<double>(), 0.03);
  auto head = root.Sub("text").Linear("lm_head", 51200, 128);
  ASSERT_TRUE(head.ok());
  EXPECT_FALSE(head->is_int8());
  auto vis = root.Sub("vision").Sub("blocks").Sub("3").Sub("attn").Linear("proj", 64, 64);
  ASSERT_TRUE(vis.ok());
  EXPECT_FALSE(vis->is_int8());
  auto wte = root.Sub("text").Embedding("wte", 51200, 128);
  ASSERT_TRUE(wte.ok());
  EXPECT_TRUE(wte->is_int8());
  auto ln = root.Sub("text").Sub("post_ln").Tensor("weight", {128});
  ASSERT_TRUE(ln.ok());
  EXPECT_EQ(ln->scalar_type(), at::kFloat);  // non-linear tensors stay fp32 in int8 mode

  const LoadReport report = store->report();
  ASSERT_EQ(report.layers.size(), 4u);
  EXPECT_EQ(report.layers[0].name, "text.blocks.0.mlp.fc1");
  EXPECT_TRUE(report.layers[0].quantized);
  EXPECT_GT(report.layers[0].stats.sqnr_db, 30);
  EXPECT_FALSE(report.layers[1].quantized);
  const QuantizationSummary s = report.Summary();
  EXPECT_FALSE(s.scheme.empty());
  EXPECT_EQ(s.quantized_layers, 2);
  EXPECT_EQ(s.full_precision_layers, 2);
  EXPECT_GT(s.min_sqnr_db, 30);
  EXPECT_FALSE(s.worst_layer.empty());
}

TEST(WeightStore, Int8TableEqualsIndependentReferenceExactly) {
  // 51200 rows: many parallel row chunks (SIMD kernel where the CPU has it). Reference from
  // the hand-decoded fp16: scale = fp32(max|w| / 127), q = round-half-even(w / scale) in fp64.
  auto store = OpenStore({Precision::kINT8});
  auto wte = store->Root().Sub("text").Embedding("wte", 51200, 128);
  ASSERT_TRUE(wte.ok()) << wte.status();
  const at::Tensor w = ReferenceFp32("model.text.wte").to(at::kDouble);
  const at::Tensor scale = (w.abs().amax(1, true) / 127).to(at::kFloat).to(at::kDouble);
  const at::Tensor q = (w / scale).round().clamp(-127, 127);  // at::round: half to even
  const at::Tensor ref = (q.to(at::kFloat) * scale.to(at::kFloat)).to(at::kFloat);
  const at::Tensor got = wte->Lookup(at::arange(51200, at::kLong), at::kFloat);
  EXPECT_TRUE(at::equal(got, ref)) << (got - ref).abs().max().item<float>();
}

TEST(WeightStore, Int8StatsMatchWholeMatrixQuantization) {
  // lm_head is 51200 rows: quantized in many parallel row chunks, stats merged; compare with
  // one shot over the hand-decoded fp32 copy.
  auto store = OpenStore({Precision::kINT8, "cpu", {}, nullptr, /*int8_smoothing=*/false});
  ASSERT_TRUE(store->Root().Sub("text").Linear("lm_head", 51200, 128).ok());
  const quant::QuantStats merged = store->report().layers.at(0).stats;
  quant::QuantStats whole;
  ASSERT_TRUE(quant::QuantizePerChannel(ReferenceFp32("model.text.lm_head.weight"), "lm_head", &whole).ok());
  EXPECT_NEAR(merged.sqnr_db, whole.sqnr_db, 1e-6);
  EXPECT_NEAR(merged.rel_frobenius_error, whole.rel_frobenius_error, 1e-9);
  EXPECT_DOUBLE_EQ(merged.max_abs_error, whole.max_abs_error);
  EXPECT_NEAR(merged.clipped_fraction, whole.clipped_fraction, 1e-12);
}

TEST(WeightStore, Int8SmoothingFoldsIntoLayerNormAndLinears) {
  // Text block 0 (ln -> qkv, fc1; values -> proj; keys <-> queries) and post_ln -> lm_head:
  // the folded LN parameters and linears compute what the file's do, INT8 within its
  // usual error, a linear kept dense (int8_skip) up to fp32 rounding. Every site is
  // smoothed, every channel (min_scale_ratio 1): this fixture has no outlier channel.
  auto store = OpenStore({Precision::kINT8, "cpu", {"text.blocks.0.mlp.fc1"}, nullptr, true, 2, 1.0});
  const auto blk = store->Root().Sub("text").Sub("blocks").Sub("0");
  auto g = blk.Sub("ln").Tensor("weight", {128});
  auto b = blk.Sub("ln").Tensor("bias", {128});
  auto qkv = blk.Sub("attn").Linear("qkv", 384, 128);
  auto fc1 = blk.Sub("mlp").Linear("fc1", 512, 128);
  ASSERT_TRUE(g.ok() && b.ok() && qkv.ok() && fc1.ok());
  EXPECT_FALSE(at::equal(*g, ReferenceFp32("model.text.blocks.0.ln.weight")));  // folded
  const std::string p = "model.text.blocks.0.";
  const at::Tensor x = at::randn({5, 128}, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor u = at::layer_norm(x, {128}, *g, *b);
  const at::Tensor u_ref = at::layer_norm(x, {128}, ReferenceFp32(p + "ln.weight"), ReferenceFp32(p + "ln.bias"));
  const at::Tensor fc1_ref = at::linear(u_ref, ReferenceFp32(p + "mlp.fc1.weight"), ReferenceFp32(p + "mlp.fc1.bias"));
  EXPECT_FALSE(fc1->is_int8());
  EXPECT_TRUE(at::allclose(fc1->Forward(u), fc1_ref, 1e-4, 1e-4));
  const at::Tensor y = qkv->Forward(u);  // [5, 384]: q, k rescaled inversely, v rescaled
  const at::Tensor y_ref = at::linear(u_ref, ReferenceFp32(p + "attn.qkv.weight"), ReferenceFp32(p + "attn.qkv.bias"));
  const at::Tensor scores = at::mm(y.narrow(1, 0, 64), y.narrow(1, 128, 64).t());  // head 0 q.k
  const at::Tensor scores_ref = at::mm(y_ref.narrow(1, 0, 64), y_ref.narrow(1, 128, 64).t());
  EXPECT_LT((scores - scores_ref).norm().item<double>() / scores_ref.norm().item<double>(), 0.03);
  auto proj = blk.Sub("attn").Linear("proj", 128, 128);
  ASSERT_TRUE(proj.ok());
  const at::Tensor v = y.narrow(1, 256, 128), v_ref = y_ref.narrow(1, 256, 128);
  const at::Tensor o_ref = at::linear(v_ref, ReferenceFp32(p + "attn.proj.weight"), ReferenceFp32(p + "attn.proj.bias"));
  EXPECT_LT((proj->Forward(v) - o_ref).norm().item<double>() / o_ref.norm().item<double>(), 0.03);
  const LoadReport r = store->report();
  ASSERT_EQ(r.layers.size(), 3u);
  EXPECT_TRUE(r.layers[0].smoothing.applied);  // qkv, from text.blocks.0.ln
  EXPECT_EQ(r.layers[0].smoothing.source, "text.blocks.0.ln");
  EXPECT_GT(r.layers[0].smoothing.key_spread_before, 0);
  EXPECT_EQ(r.layers[2].smoothing.source, "text.blocks.0.attn.v");
}

// The default gate: fixture public-a has no outlier channel (every scale within 2x of its
// site's median), so no site is smoothed: the LN and the linears load as the file has
// them, and the report still gives each site's spread.
TEST(WeightStore, Int8SmoothingLeavesSitesWithoutOutliersAlone) {
  auto store = OpenStore({Precision::kINT8, "cpu", {"text.blocks.0.attn.qkv"}, nullptr, true, 2});
  const auto blk = store->Root().Sub("text").Sub("blocks").Sub("0");
  auto g = blk.Sub("ln").Tensor("weight", {128});
  auto qkv = blk.Sub("attn").Linear("qkv", 384, 128);
  ASSERT_TRUE(g.ok() && qkv.ok());
  EXPECT_TRUE(at::equal(*g, ReferenceFp32("model.text.blocks.0.ln.weight")));
  const at::Tensor x = at::randn({5, 128}, at::TensorOptions().dtype(at::kFloat));
  EXPECT_TRUE(at::equal(qkv->Forward(x), at::linear(x, ReferenceFp32("model.text.blocks.0.attn.qkv.weight"),
                                                    ReferenceFp32("model.text.blocks.0.attn.qkv.bias"))));
  const LoadReport r = store->report();
  ASSERT_FALSE(r.layers.empty());
  const SmoothingStats& sm = r.layers[0].smoothing;
  EXPECT_FALSE(sm.applied);
  EXPECT_EQ(sm.source, "text.blocks.0.ln");
  EXPECT_GT(sm.input_spread_before, 1.0);
  EXPECT_EQ(sm.input_spread_after, sm.input_spread_before);
  EXPECT_GT(sm.key_spread_before, 0);
  EXPECT_EQ(sm.key_spread_after, sm.key_spread_before);
  EXPECT_EQ(r.Summary().smoothed_layers, 0);
}

// Fixture A rewritten with every tensor as `dtype` (fp16 -> fp32 is exact; -> bf16 rounds).
std::string FixtureAs(const testing::TempDir& dir, DType dtype) {
  auto file = SafetensorsFile::Open(FixtureA());
  EXPECT_TRUE(file.ok());
  std::vector<SafetensorsWriter::Entry> entries;
  for (const TensorView& t : (*file)->tensors()) entries.push_back({t.name, dtype, t.shape});
  const std::string path = dir.Path(std::string(DTypeName(dtype)) + ".safetensors");
  auto writer = SafetensorsWriter::Create(path, entries, (*file)->metadata());
  EXPECT_TRUE(writer.ok());
  for (const TensorView& t : (*file)->tensors()) {
    const at::Tensor v = SourceView(t).to(dtype == DType::kF32 ? at::kFloat : at::kBFloat16).contiguous();
    EXPECT_TRUE((*writer)->Write(v.data_ptr(), v.nbytes()).ok());
  }
  EXPECT_TRUE((*writer)->Finish().ok());
  return path;
}

// The smoothing statistics read the column maxima straight from the stored bits: a file
// stored as fp32 gives the fp16 file's statistics exactly, one stored as bf16 (its values
// rounded to 8 bits of mantissa) within that rounding.
TEST(WeightStore, Int8SmoothingStatisticsDoNotDependOnTheStoredDtype) {
  testing::TempDir dir;
  auto sites = [](const std::string& path) {
    auto store = WeightStore::Open(path, {Precision::kINT8, "cpu", {}, nullptr, true, 2, 1.0});
    EXPECT_TRUE(store.ok()) << store.status();
    const auto blk = (*store)->Root().Sub("text").Sub("blocks").Sub("0");
    EXPECT_TRUE(blk.Sub("attn").Linear("qkv", 384, 128).ok());
    EXPECT_TRUE(blk.Sub("attn").Linear("proj", 128, 128).ok());
    EXPECT_TRUE(blk.Sub("mlp").Linear("fc1", 512, 128).ok());
    std::vector<SmoothingStats> out;
    for (const LayerQuantReport& l : (*store)->report().layers) out.push_back(l.smoothing);
    return out;
  };
  const std::vector<SmoothingStats> f16 = sites(FixtureA());
  const std::vector<SmoothingStats> f32 = sites(FixtureAs(dir, DType::kF32));
  const std::vector<SmoothingStats> bf16 = sites(FixtureAs(dir, DType::kBF16));
  ASSERT_EQ(f16.size(), 3u);
  ASSERT_EQ(f32.size(), 3u);
  ASSERT_EQ(bf16.size(), 3u);
  for (size_t i = 0; i < f16.size(); ++i) {
    EXPECT_TRUE(f16[i].applied) << i;
    EXPECT_EQ(f32[i].input_spread_before, f16[i].input_spread_before) << i;
    EXPECT_EQ(f32[i].scale_min, f16[i].scale_min) << i;
    EXPECT_EQ(f32[i].scale_max, f16[i].scale_max) << i;
    EXPECT_EQ(f32[i].input_spread_after, f16[i].input_spread_after) << i;
    EXPECT_NEAR(bf16[i].input_spread_before, f16[i].input_spread_before, 0.02 * f16[i].input_spread_before) << i;
    EXPECT_NEAR(bf16[i].scale_min, f16[i].scale_min, 0.02 * f16[i].scale_min) << i;
    EXPECT_NEAR(bf16[i].scale_max, f16[i].scale_max, 0.02 * f16[i].scale_max) << i;
  }
  EXPECT_EQ(f32[0].key_spread_before, f16[0].key_spread_before);
  EXPECT_EQ(f32[0].value_spread_after, f16[0].value_spread_after);
}

TEST(WeightStore, FullLoadReportsComponents) {
  auto config = LoadConfig(FixtureCkpt("public-a") + "/config.json");
  ASSERT_TRUE(config.ok());
  auto store = OpenStore({Precision::kFP32});
  const auto root = store->Root();
  for (const ExpectedTensor& e : ExpectedTensors(*config)) {
    ASSERT_TRUE(root.Tensor(e.name.substr(6), e.shape).ok()) << e.name;
  }
  EXPECT_EQ(store->converted(), store->total());
  const LoadReport r = store->report();
  EXPECT_EQ(r.parameters, 15563584u);  // fixture init.json n_params
  std::map<std::string, ComponentWeights> by_name;
  for (const auto& c : r.components) by_name[c.component] = c;
  ASSERT_EQ(by_name.size(), 4u);
  EXPECT_EQ(by_name["projection"].parameters, 256u * 128 + 256 + 128 * 256 + 128);
  EXPECT_EQ(by_name["projection"].bytes, 4 * by_name["projection"].parameters);
  EXPECT_EQ(by_name["text"].precision, "fp32");
  EXPECT_TRUE(r.Summary().scheme.empty());

  testing::TempDir dir;
  r.WriteJson(dir.Path("report.json"));
  std::ifstream in(dir.Path("report.json"));
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["parameters"].get<uint64_t>(), 15563584u);
  EXPECT_EQ(j["components"].size(), 4u);
}

}  // namespace
}  // namespace moondream

namespace moondream {
namespace {

// bf16 (later revisions) and misaligned data sections load too.
TEST(WeightStore, Bf16SourceAndMisalignedData) {
  testing::TempDir dir;
  const std::string path = dir.Path("bf16.safetensors");
  const at::Tensor w = at::randn({4, 8}).to(at::kBFloat16), b = at::randn({4}).to(at::kBFloat16);
  auto writer = SafetensorsWriter::Create(path, {{"model.l.weight", DType::kBF16, {4, 8}},
                                                 {"model.l.bias", DType::kBF16, {4}}}, {});
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Write(w.data_ptr(), 64).ok());
  ASSERT_TRUE((*writer)->Write(b.data_ptr(), 8).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  for (Precision p : {Precision::kFP32, Precision::kINT8}) {
    auto store = WeightStore::Open(path, {p});
    ASSERT_TRUE(store.ok()) << store.status();
    auto l = (*store)->Root().Linear("l", 4, 8);
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_EQ(l->is_int8(), p == Precision::kINT8);
    const at::Tensor ref = at::linear(at::eye(8), w.to(at::kFloat), b.to(at::kFloat));
    EXPECT_TRUE(at::allclose(l->Forward(at::eye(8)), ref, 0, p == Precision::kINT8 ? 0.05 : 1e-6));
  }
  // Header of odd length: the F32 tensor starts at an odd address.
  const float values[3] = {1.5f, -2.25f, 3e-3f};
  std::string bytes = testing::SafetensorsBytes(R"({"model.v":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", 0);
  ASSERT_EQ(bytes.size() % 2, 1u);
  bytes.append(reinterpret_cast<const char*>(values), sizeof(values));
  testing::WriteFile(dir.Path("odd.safetensors"), bytes);
  auto store = WeightStore::Open(dir.Path("odd.safetensors"), {Precision::kFP32});
  ASSERT_TRUE(store.ok()) << store.status();
  auto v = (*store)->Root().Tensor("v", {3});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(at::equal(*v, at::tensor(std::vector<float>{1.5f, -2.25f, 3e-3f})));
}

}  // namespace
}  // namespace moondream
