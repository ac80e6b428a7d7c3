// Linear (dense + INT8 kernel) and Embedding against independent references.
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "kernels/kernels.h"
#include "quantization/linear.h"

namespace moondream::quant {
namespace {

Int8Matrix Quantize(const at::Tensor& w) {
  auto m = QuantizePerChannel(w, "w", nullptr);
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

// Same per-token activation quantization as the kernel, computed with plain ATen ops, then
// an exact integer matmul in fp64 and the scales applied in fp64.
at::Tensor Reference(const at::Tensor& x, const Int8Matrix& w, const at::Tensor& bias) {
  const at::Tensor amax = x.abs().amax(1, /*keepdim=*/true);             // fp32 [M, 1]
  const at::Tensor inv_raw = 127.f / amax;  // inf for zero (or ~subnormal) rows -> zero row
  const at::Tensor inv = at::where(at::isinf(inv_raw), at::zeros_like(amax), inv_raw);
  const at::Tensor qa = (x * inv).round().clamp(-127, 127).to(at::kDouble);
  const at::Tensor a_scale = (amax / 127.f).to(at::kDouble);
  const at::Tensor acc = at::matmul(qa, w.q.to(at::kDouble).t());        // exact integers
  at::Tensor y = acc * a_scale * w.scale.to(at::kDouble).unsqueeze(0);
  if (bias.defined()) y = y + bias.to(at::kDouble);
  return y;
}

void ExpectMatches(const at::Tensor& y, const at::Tensor& ref) {
  ASSERT_EQ(y.sizes(), ref.sizes());
  const double tol = 2e-6 * std::max(1.0, ref.abs().max().item<double>());
  const double diff = (y.to(at::kDouble) - ref).abs().max().item<double>();
  EXPECT_LE(diff, tol);
}

class Int8Shapes : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(Int8Shapes, ForwardMatchesReference) {
  const auto [m, k, n] = GetParam();
  at::manual_seed(m * 7919 + k * 31 + n);
  const at::Tensor w = at::randn({n, k});
  const at::Tensor b = at::randn({n});
  const at::Tensor x = at::randn({m, k}) * 3;
  const Int8Matrix q = Quantize(w);
  const Linear lin = Linear::Int8(q, b);
  EXPECT_TRUE(lin.is_int8());
  EXPECT_EQ(lin.in_features(), k);
  EXPECT_EQ(lin.out_features(), n);
  const at::Tensor y = lin.Forward(x);
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  ExpectMatches(y, Reference(x, q, b));
  // And it is a faithful approximation of the float layer.
  const at::Tensor fp = at::linear(x, w, b);
  EXPECT_LT(((y - fp).norm() / fp.norm()).item<double>(), 0.03);
}

// M = decode, prompt, vision crop, several activation blocks; K not a multiple of 64 (or
// of 4); odd N; panel tails (N % 64 = 1..63).
INSTANTIATE_TEST_SUITE_P(
    Shapes, Int8Shapes,
    ::testing::Values(std::make_tuple(1, 32, 3), std::make_tuple(3, 33, 17), std::make_tuple(17, 100, 51),
                      std::make_tuple(1, 588, 1000), std::make_tuple(730, 588, 131),
                      std::make_tuple(730, 1152, 80), std::make_tuple(17, 2048, 2048),
                      std::make_tuple(1, 4304, 48), std::make_tuple(6, 130, 64),
                      std::make_tuple(7, 130, 65), std::make_tuple(13, 257, 127),
                      std::make_tuple(1, 8192, 300), std::make_tuple(300, 2048, 33),
                      std::make_tuple(2100, 4304, 40)));  // > one 8 MiB activation block

// Every kernel variant this CPU runs gives the scalar reference's result bit for bit, and
// that result differs from at::linear on the dequantized weights only by the activation
// rounding (< 1% here). No variant keeps the plain matrix: only the packed copy (padded to
// 80 columns and 132 k), its row sums, scales and bias.
TEST(Int8Linear, EveryIsaMatchesTheScalarReference) {
  at::manual_seed(6);
  const at::Tensor w = at::randn({70, 131});
  const at::Tensor b = at::randn({70});
  const Int8Matrix q = Quantize(w);
  std::string error;
  const Linear reference = Linear::Int8(q, b, kernels::ResolveKernels("scalar", &error));
  EXPECT_EQ(reference.bytes(), 80u * 132 + 70 * 4 * 3);
  for (int64_t m : {1, 9}) {
    const at::Tensor x = at::randn({m, 131});
    const at::Tensor y = reference.Forward(x);
    EXPECT_LT(((y - at::linear(x, Dequantize(q, at::kFloat), b)).norm() / y.norm()).item<double>(),
              0.01);
    for (const kernels::KernelSet* ks : kernels::AllKernelSets()) {
      if (!ks->runs(kernels::HostCpu())) continue;
      EXPECT_TRUE(at::equal(Linear::Int8(q, b, ks).Forward(x), y)) << ks->name << " m " << m;
      EXPECT_TRUE(at::equal(Linear::Int8(q, b, ks).Forward(x, Activation::kGeluTanh),
                            reference.Forward(x, Activation::kGeluTanh)))
          << ks->name << " m " << m;
    }
  }
}

// A plain copy handed over with std::move is packed where it lies (shapes without padding:
// its storage lives on in the layer) and gives the same outputs as one packed into a
// separate buffer (a copy the caller keeps).
TEST(Int8Linear, PackedInPlaceGivesTheSameResult) {
  at::manual_seed(17);
  const at::Tensor w = at::randn({96, 132}), b = at::randn({96}), x = at::randn({5, 132});
  const Int8Matrix q = Quantize(w);
  const Linear kept = Linear::Int8(q, b);  // q still held here: a separate buffer
  Int8Matrix owned{q.q.clone(), q.scale.clone()};
  const auto plain = owned.q.storage().getWeakStorageImpl();  // not a strong reference
  const Linear moved = Linear::Int8(std::move(owned), b);
  EXPECT_FALSE(plain.expired()) << "the moved copy was not packed where it lay";
  EXPECT_TRUE(at::equal(moved.Forward(x), kept.Forward(x)));
  EXPECT_EQ(moved.bytes(), kept.bytes());
  EXPECT_TRUE(at::equal(q.q, Quantize(w).q)) << "the kept copy was packed over";
}

TEST(Int8Linear, ThreadCountDoesNotChangeResult) {
  at::manual_seed(4);
  const Int8Matrix q = Quantize(at::randn({200, 300}));
  const Linear lin = Linear::Int8(q, at::Tensor());
  const at::Tensor x = at::randn({50, 300});
  const int saved = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor y1 = lin.Forward(x);
  at::set_num_threads(2);
  const at::Tensor y2 = lin.Forward(x);
  at::set_num_threads(saved);
  EXPECT_TRUE(at::equal(y1, y2));
  ExpectMatches(y1, Reference(x, q, at::Tensor()));
}

TEST(Int8Linear, BatchedBf16InputKeepsShapeAndDtype) {
  at::manual_seed(5);
  const Int8Matrix q = Quantize(at::randn({40, 64}));
  const at::Tensor b = at::randn({40});
  const Linear lin = Linear::Int8(q, b);
  const at::Tensor x = at::randn({2, 5, 64}).to(at::kBFloat16);
  const at::Tensor y = lin.Forward(x);
  EXPECT_EQ(y.sizes(), (at::IntArrayRef{2, 5, 40}));
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  const at::Tensor ref = Reference(x.to(at::kFloat).reshape({10, 64}), q, b).reshape({2, 5, 40});
  EXPECT_TRUE(at::allclose(y.to(at::kDouble), ref, 1e-2, 1e-2));
}

TEST(Int8Linear, ZeroAndTinyRowsGiveBiasAndNanRowGivesNan) {
  const Int8Matrix q = Quantize(at::randn({20, 48}));
  const at::Tensor b = at::randn({20});
  const Linear lin = Linear::Int8(q, b);
  at::Tensor x = at::randn({4, 48});
  x[0].zero_();
  x[2][7] = std::nanf("");
  x[3] = at::full({48}, 1e-39f);  // 127 / max overflows fp32: quantized as a zero row
  const at::Tensor y = lin.Forward(x);
  EXPECT_TRUE(at::equal(y[0], b));
  EXPECT_TRUE(at::equal(y[3], b));
  EXPECT_TRUE(at::isfinite(y[1]).all().item<bool>());
  EXPECT_TRUE(at::isnan(y[2]).all().item<bool>());
}

TEST(Int8Linear, RejectsWrongInFeatures) {
  const Linear lin = Linear::Int8(Quantize(at::randn({4, 8})), at::Tensor());
  EXPECT_THROW(lin.Forward(at::randn({2, 9})), c10::Error);
  EXPECT_THROW(Linear().Forward(at::randn({2, 9})), c10::Error);
}

TEST(Int8Linear, BytesAreAboutAQuarterOfFp32) {
  const at::Tensor w = at::randn({2048, 2048});
  const Linear dense = Linear::Dense(w, at::randn({2048}));
  const Linear int8 = Linear::Int8(Quantize(w), at::randn({2048}));
  EXPECT_EQ(dense.bytes(), 2048u * 2048 * 4 + 2048 * 4);
  EXPECT_LE(int8.bytes(), 2048u * 2048 + 3 * 2048 * 4);
  EXPECT_GE(int8.bytes(), 2048u * 2048);
  EXPECT_FALSE(dense.is_int8());
}

TEST(DenseLinear, EqualsAtLinear) {
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const at::Tensor w = at::randn({51, 33}).to(dtype);
    const at::Tensor b = at::randn({51}).to(dtype);
    const at::Tensor x = at::randn({4, 7, 33}).to(dtype);
    // Each Linear first: a bf16 Dense sets up ATen's bf16 matmul (EnsureBf16Matmul).
    const Linear with_bias = Linear::Dense(w, b), without = Linear::Dense(w, at::Tensor());
    EXPECT_TRUE(at::equal(with_bias.Forward(x), at::linear(x, w, b)));
    EXPECT_TRUE(at::equal(without.Forward(x), at::linear(x, w)));
  }
}

// Decode (one row) on CPU bf16/fp32 weights runs the kernel layer's GEMV, not at::linear:
// both are fp32 sums of the same exact products in different orders, so they differ by at
// most ~2 * k * 2^-24 * sum|w x| (the textbook bound of an fp32 sum of k terms, for each).
// bf16: both results are then rounded to bf16 (at::linear may also round its product before
// adding the bias), so they may land up to 2 bf16 ulps apart: 2^-7 * (|y| + |bias|).
// The shapes: the text decoder's projection and fc2, plus odd tails.
TEST(DenseLinear, DecodeGemvMatchesAtLinear) {
  at::manual_seed(11);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    for (const auto& [out, in] : std::vector<std::pair<int64_t, int64_t>>{
             {2048, 2048}, {2048, 8192}, {51, 33}, {7, 1}, {130, 17}}) {
      const at::Tensor w = (at::randn({out, in}) * 0.05).to(dtype);
      const at::Tensor b = at::randn({out}).to(dtype);
      for (const at::Tensor& x : {at::randn({1, in}).to(dtype), at::randn({in}).to(dtype),
                                  at::randn({1, 1, in}).to(dtype)}) {
        for (const bool bias : {true, false}) {
          const Linear lin = Linear::Dense(w, bias ? b : at::Tensor());
          const at::Tensor y = lin.Forward(x);
          const at::Tensor want = at::linear(x, w, bias ? b : at::Tensor());
          ASSERT_EQ(y.sizes(), want.sizes());
          ASSERT_EQ(y.scalar_type(), dtype);
          const at::Tensor mag = at::linear(x.abs().to(at::kDouble), w.abs().to(at::kDouble));
          at::Tensor tol = mag * (2.0 * in * std::ldexp(1.0, -24)) + 1e-30;
          if (dtype == at::kBFloat16) {
            tol = tol + (want.abs().to(at::kDouble) + (bias ? b.abs().to(at::kDouble) : at::zeros_like(mag))) *
                            std::ldexp(1.0, -7);
          }
          const at::Tensor err = (y.to(at::kDouble) - want.to(at::kDouble)).abs();
          EXPECT_TRUE((err <= tol).all().item<bool>())
              << at::toString(dtype) << " " << out << "x" << in << " bias " << bias
              << " worst excess " << (err - tol).max().item<double>();
        }
      }
      // fp32 x on bf16 weights: rounded to bf16 first, as at::linear(x.to(bf16)) does.
      if (dtype == at::kBFloat16) {
        const at::Tensor x = at::randn({1, in});
        const Linear lin = Linear::Dense(w, b);
        const at::Tensor y = lin.Forward(x);
        EXPECT_EQ(y.scalar_type(), at::kFloat);
        EXPECT_TRUE(at::equal(y, lin.Forward(x.to(at::kBFloat16)).to(at::kFloat)));
      }
    }
  }
}

// The decode GEMV is the kernel layer's: every ISA this CPU runs gives the scalar
// reference's bits, and several rows still go through at::linear exactly.
TEST(DenseLinear, DecodeEveryIsaMatchesTheScalarReference) {
  at::manual_seed(12);
  std::string error;
  const kernels::KernelSet* scalar = kernels::ResolveKernels("scalar", &error);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const at::Tensor w = at::randn({301, 1037}).to(dtype);
    const at::Tensor b = at::randn({301}).to(dtype);
    const at::Tensor x = at::randn({1, 1037}).to(dtype);
    const at::Tensor want = Linear::Dense(w, b, scalar).Forward(x);
    for (const kernels::KernelSet* ks : kernels::AllKernelSets()) {
      if (!ks->runs(kernels::HostCpu())) continue;
      const Linear lin = Linear::Dense(w, b, ks);
      EXPECT_TRUE(at::equal(lin.Forward(x), want)) << ks->name << " " << at::toString(dtype);
      EXPECT_TRUE(at::equal(lin.Forward(x, Activation::kGeluTanh),
                            at::gelu(want.to(at::kFloat), "tanh").to(dtype)))
          << ks->name;
      const at::Tensor x2 = at::randn({2, 1037}).to(dtype);
      EXPECT_TRUE(at::equal(lin.Forward(x2), at::linear(x2, w, b))) << ks->name;
    }
  }
}

// The fused GELU epilogue: GELU(tanh) of the plain INT8 result. The kernel evaluates
// x / (1 + e^(-2u)) with its own exp: within 1e-5 relative of fp64 wherever GELU is not tiny
// (ATen's fp32 tanh form loses ~5e-5 to cancellation for x << 0), including outputs far in
// both tails and NaN rows.
TEST(Int8Linear, FusedGeluMatchesGeluOfForward) {
  at::manual_seed(9);
  const Int8Matrix q = Quantize(at::randn({300, 130}));
  const at::Tensor b = at::randn({300}) * 4;
  at::Tensor x = at::randn({37, 130}) * 3;
  x[5] *= 100;
  x[9][3] = std::nanf("");

  const Linear lin = Linear::Int8(q, b);
  const at::Tensor plain = lin.Forward(x);
  const at::Tensor fused = lin.Forward(x, Activation::kGeluTanh);
  const at::Tensor ref = at::gelu(plain.to(at::kDouble), "tanh");
  EXPECT_EQ(fused.sizes(), plain.sizes());
  EXPECT_TRUE(at::isnan(fused[9]).all().item<bool>());
  const at::Tensor ok = at::isfinite(ref);
  const double err = (fused.to(at::kDouble) - ref).masked_select(ok).abs().max().item<double>();
  EXPECT_LE(err, 2e-6 * ref.masked_select(ok).abs().max().item<double>());
  const at::Tensor big = ok.logical_and(ref.abs() > 1e-3);
  const at::Tensor rel = ((fused.to(at::kDouble) - ref) / ref).masked_select(big).abs();
  EXPECT_LE(rel.max().item<double>(), 1e-5);
}

TEST(DenseLinear, FusedGeluIsGeluOfForward) {
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const Linear lin = Linear::Dense(at::randn({51, 33}).to(dtype), at::randn({51}).to(dtype));
    const at::Tensor x = at::randn({4, 7, 33}).to(dtype);
    const at::Tensor y = lin.Forward(x);
    EXPECT_TRUE(at::equal(lin.Forward(x, Activation::kGeluTanh),
                          at::gelu(y.to(at::kFloat), "tanh").to(dtype)));
  }
}

TEST(Embedding, Int8LookupMatchesDequantizedRows) {
  const at::Tensor table = at::randn({100, 24});
  const Int8Matrix q = Quantize(table);
  const Embedding e = Embedding::Int8(q);
  const at::Tensor ids = at::tensor({5, 0, 99, 5}, at::kLong);
  const at::Tensor rows = e.Lookup(ids, at::kFloat);
  EXPECT_TRUE(at::equal(rows, Dequantize(q, at::kFloat).index_select(0, ids)));
  EXPECT_EQ(e.Lookup(ids, at::kBFloat16).scalar_type(), at::kBFloat16);
  EXPECT_TRUE(e.is_int8());
  EXPECT_EQ(e.rows(), 100);
  EXPECT_EQ(e.dim(), 24);
  EXPECT_EQ(e.bytes(), 100u * 24 + 100 * 4);
  EXPECT_THROW(e.Lookup(at::tensor({100}, at::kLong), at::kFloat), c10::Error);
}

TEST(Embedding, DenseLookupIsIndexSelect) {
  const at::Tensor table = at::randn({10, 8});
  const Embedding e = Embedding::Dense(table);
  const at::Tensor ids = at::tensor({3, 3, 9}, at::kLong);
  EXPECT_TRUE(at::equal(e.Lookup(ids, at::kFloat), table.index_select(0, ids)));
  EXPECT_FALSE(e.is_int8());
  EXPECT_EQ(e.bytes(), 10u * 8 * 4);
}

}  // namespace
}  // namespace moondream::quant
