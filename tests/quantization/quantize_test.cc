// Math edge cases of QuantizePerChannel / Dequantize.
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "quantization/linear.h"

namespace moondream::quant {
namespace {

Int8Matrix MustQuantize(const at::Tensor& w, QuantStats* stats = nullptr) {
  auto m = QuantizePerChannel(w, "w", stats);
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

TEST(QuantizePerChannel, ScaleIsRowMaxOver127AndGridIsRounded) {
  at::manual_seed(1);
  const at::Tensor w = at::randn({5, 37});
  const Int8Matrix m = MustQuantize(w);
  const at::Tensor s = w.abs().amax(1) / 127;
  EXPECT_TRUE(at::allclose(m.scale, s, 1e-7, 0));
  ASSERT_EQ(m.q.scalar_type(), at::kChar);
  // Independent scalar check of q = round(w / scale), half to even.
  auto wa = w.accessor<float, 2>();
  auto qa = m.q.accessor<int8_t, 2>();
  auto sa = m.scale.accessor<float, 1>();
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 37; ++c)
      EXPECT_EQ(qa[r][c], static_cast<int>(std::nearbyint(double(wa[r][c]) / double(sa[r])))) << r << "," << c;
  EXPECT_EQ(m.q.abs().amax(1).min().item<int>(), 127);  // the max of each row lands on 127
}

TEST(QuantizePerChannel, ZeroRowGivesZeroScaleAndZeroQ) {
  at::Tensor w = at::randn({3, 16});
  w[1].zero_();
  QuantStats st;
  const Int8Matrix m = MustQuantize(w, &st);
  EXPECT_EQ(m.scale[1].item<float>(), 0.f);
  EXPECT_EQ(m.q[1].abs().sum().item<int64_t>(), 0);
  EXPECT_TRUE(at::equal(Dequantize(m, at::kFloat)[1], at::zeros({16})));
  EXPECT_GT(m.scale[0].item<float>(), 0.f);
}

TEST(QuantizePerChannel, AllZeroMatrixStats) {
  QuantStats st;
  const Int8Matrix m = MustQuantize(at::zeros({2, 8}), &st);
  EXPECT_EQ(st.max_abs_error, 0);
  EXPECT_EQ(st.rel_frobenius_error, 0);
  EXPECT_TRUE(std::isinf(st.sqnr_db));
}

TEST(QuantizePerChannel, HugeOutlierDominatesItsRowOnly) {
  at::manual_seed(2);
  at::Tensor w = at::randn({2, 64});
  w[0][5] = 1e4f;
  QuantStats st;
  const Int8Matrix m = MustQuantize(w, &st);
  EXPECT_FLOAT_EQ(m.scale[0].item<float>(), 1e4f / 127);
  EXPECT_EQ(m.q[0][5].item<int>(), 127);
  // The small values of row 0 are all crushed to 0; row 1 keeps full resolution.
  EXPECT_LE(m.q[0].abs().sum().item<int64_t>(), 127 + 63);
  const at::Tensor err1 = (Dequantize(m, at::kFloat)[1] - w[1]).abs().max();
  EXPECT_LE(err1.item<float>(), m.scale[1].item<float>() / 2 * 1.0001f);
  EXPECT_NEAR(st.max_abs_error, w[0].abs().narrow(0, 0, 5).max().item<float>(), 3.0);
  EXPECT_EQ(st.clipped_fraction, 0.0);
}

TEST(QuantizePerChannel, DenormalsStayFinite) {
  at::Tensor w = at::full({2, 8}, 1e-39f);  // subnormal fp32
  w[1] = at::full({8}, 1e-44f);             // scale underflows to 0 -> stored as a zero row
  w[0][3] = -3e-39f;
  const Int8Matrix m = MustQuantize(w);
  EXPECT_TRUE(at::isfinite(m.scale).all().item<bool>());
  EXPECT_GT(m.scale[0].item<float>(), 0.f);
  EXPECT_EQ(m.q[0][3].item<int>(), -127);
  EXPECT_EQ(m.scale[1].item<float>(), 0.f);
  EXPECT_EQ(m.q[1].abs().sum().item<int64_t>(), 0);
  const at::Tensor d = Dequantize(m, at::kFloat);
  EXPECT_LE((d - w).abs().max().item<float>(), 3e-39f / 127);
}

TEST(QuantizePerChannel, NanAndInfAreRejectedByName) {
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    at::Tensor w = at::randn({700, 4});  // beyond the first chunk of rows
    w[600][2] = bad;
    auto r = QuantizePerChannel(w, "text.blocks.3.mlp.fc1.weight", nullptr);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("text.blocks.3.mlp.fc1.weight"), std::string::npos);
  }
}

TEST(QuantizePerChannel, BadShapeAndDtypeAreRejected) {
  EXPECT_FALSE(QuantizePerChannel(at::zeros({4}), "v", nullptr).ok());
  EXPECT_FALSE(QuantizePerChannel(at::zeros({2, 2}, at::kInt), "i", nullptr).ok());
}

TEST(QuantizePerChannel, OnGridValuesRoundTripExactly) {
  // Row r: integers in [-127, 127] times a power of two, with +-127 present.
  const at::Tensor ints = at::randint(-127, 128, {4, 50}).to(at::kFloat);
  ints.select(1, 7).fill_(127);
  const at::Tensor scales = at::tensor({0.5f, 0.25f, 1.f / 1024, 8.f}).unsqueeze(1);
  for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const at::Tensor w = (ints * scales).to(dtype);
    QuantStats st;
    const Int8Matrix m = MustQuantize(w, &st);
    EXPECT_TRUE(at::equal(m.q.to(at::kFloat), ints));
    EXPECT_TRUE(at::equal(Dequantize(m, dtype), w));
    EXPECT_EQ(st.max_abs_error, 0);
    EXPECT_TRUE(std::isinf(st.sqnr_db));
  }
}

TEST(QuantizePerChannel, GaussianStatsInKnownRange) {
  // Uniform rounding noise on a grid of max|w|/127: for Gaussian rows of 4096 (max ~3.5-4.5
  // sigma) SQNR = 10 log10(sigma^2 / (step^2 / 12)) lands near 38-40 dB.
  at::manual_seed(3);
  const at::Tensor w = at::randn({64, 4096});
  QuantStats st;
  const Int8Matrix m = MustQuantize(w, &st);
  EXPECT_GT(st.sqnr_db, 36.0);
  EXPECT_LT(st.sqnr_db, 42.0);
  EXPECT_NEAR(st.rel_frobenius_error, std::pow(10.0, -st.sqnr_db / 20), 1e-9);
  EXPECT_LE(st.max_abs_error, m.scale.max().item<float>() / 2 * 1.0001);
  EXPECT_EQ(st.clipped_fraction, 0.0);
  const double err = (Dequantize(m, at::kFloat) - w).abs().max().item<double>();
  EXPECT_NEAR(err, st.max_abs_error, 1e-6);
}

}  // namespace
}  // namespace moondream::quant
