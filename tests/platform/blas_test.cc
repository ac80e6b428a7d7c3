// LibTorch must run its matmuls on OpenBLAS: Debian's reference BLAS is ~20x slower
// and silently wins when libopenblas0-pthread is missing (docs/architecture.md). And our own
// at::parallel_for loops must really run in parallel: with LibTorch's OpenMP backend they
// are an inline `#pragma omp parallel`, serial in a TU built without -fopenmp (CMakeLists).
#include <dlfcn.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <mutex>
#include <set>
#include <string>
#include <thread>

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

TEST(PlatformTest, ParallelForRunsOnEveryIntraOpThread) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "one CPU";
  at::set_num_threads(2);
  std::mutex mu;
  std::set<std::thread::id> threads;
  at::parallel_for(0, 2, 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    threads.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(threads.size(), 2u) << at::get_parallel_info();
}

}  // namespace
