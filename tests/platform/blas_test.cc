// LibTorch must run its matmuls on OpenBLAS: Debian's reference BLAS is ~20x slower
// and silently wins when libopenblas0-pthread is missing (docs/architecture.md).
#include <dlfcn.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>

namespace {

TEST(PlatformTest, LibTorchUsesOpenBlas) {
  at::Tensor a = at::ones({8, 8});
  at::Tensor b = at::matmul(a, a);  // loads and uses libblas.so.3
  ASSERT_EQ(b[0][0].item<float>(), 8.0f);
  using ConfigFn = char* (*)();
  auto config = reinterpret_cast<ConfigFn>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  ASSERT_NE(config, nullptr) << "libblas.so.3 is not OpenBLAS: install libopenblas0-pthread "
                                "(scripts/setup) and select it with update-alternatives";
  EXPECT_NE(std::string(config()).find("OpenBLAS"), std::string::npos);
}

}  // namespace
