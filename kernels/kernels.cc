// The dispatch: which variants this binary holds, which one runs, and the workspaces.
#include "kernels/kernels.h"

#include <omp.h>

#include <cstdlib>
#include <cstdio>
#include <memory>

#include "kernels/variants.h"

namespace moondream::kernels {
namespace {

bool RunsAnywhere(const CpuFeatures&) { return true; }
#if defined(__x86_64__)
bool RunsAvx2(const CpuFeatures& c) { return c.avx2 && c.fma; }
bool RunsAvxVnniVex(const CpuFeatures& c) { return RunsAvx2(c) && c.avxvnni; }
bool RunsAvxVnniEvex(const CpuFeatures& c) { return RunsAvx2(c) && c.avx512vl && c.avx512vnni; }
bool RunsAvx512Vnni(const CpuFeatures& c) {
  return c.avx512f && c.avx512bw && c.avx512vl && c.avx512vnni;
}
#elif defined(__aarch64__)
bool RunsNeon(const CpuFeatures& c) { return c.neon; }
bool RunsNeonDot(const CpuFeatures& c) { return c.neon && c.dotprod; }
#endif

constexpr KernelSet kScalar{Isa::kScalar, "scalar", RunsAnywhere, scalar::QuantizeRows,
                            scalar::Int8Gemm, scalar::Gemv, scalar::SelfAttention,
                            scalar::DecodeAttention};
#if defined(__x86_64__)
constexpr KernelSet kAvx2{Isa::kAvx2, "avx2", RunsAvx2, avx2::QuantizeRows, avx2::Int8Gemm,
                          avx2::Gemv, avx2::SelfAttention, avx2::DecodeAttention};
constexpr KernelSet kAvxVnniVex{Isa::kAvxVnni, "avxvnni", RunsAvxVnniVex,
                                avxvnni_vex::QuantizeRows, avxvnni_vex::Int8Gemm,
                                avx2::Gemv, avx2::SelfAttention, avx2::DecodeAttention};
constexpr KernelSet kAvxVnniEvex{Isa::kAvxVnni, "avxvnni-evex256", RunsAvxVnniEvex,
                                 avxvnni_evex::QuantizeRows, avxvnni_evex::Int8Gemm,
                                 avx2::Gemv, avx2::SelfAttention, avx2::DecodeAttention};
constexpr KernelSet kAvx512Vnni{Isa::kAvx512Vnni, "avx512vnni", RunsAvx512Vnni,
                                avx512vnni::QuantizeRows, avx512vnni::Int8Gemm,
                                avx512::Gemv, avx512::SelfAttention, avx512::DecodeAttention};
#elif defined(__aarch64__)
constexpr KernelSet kNeon{Isa::kNeon, "neon", RunsNeon, neon::QuantizeRows, neon::Int8Gemm,
                          neon::Gemv, neon::SelfAttention, neon::DecodeAttention};
constexpr KernelSet kNeonDot{Isa::kNeonDot, "neon-dot", RunsNeonDot, neon_dot::QuantizeRows,
                             neon_dot::Int8Gemm, neon::Gemv, neon::SelfAttention, neon::DecodeAttention};
#endif

int64_t RoundUp(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
std::unique_ptr<void, FreeDeleter> Workspace(size_t bytes) {
  return std::unique_ptr<void, FreeDeleter>(
      std::aligned_alloc(64, static_cast<size_t>(RoundUp(static_cast<int64_t>(bytes) + 1, 64))));
}

std::string Runnable() {
  std::string names;
  for (const KernelSet* ks : AllKernelSets()) {
    if (!ks->runs(HostCpu())) continue;
    if (!names.empty()) names += ", ";
    names += ks->name;
  }
  return names;
}

}  // namespace

const std::vector<const KernelSet*>& AllKernelSets() {
  static const std::vector<const KernelSet*> all = {
#if defined(__x86_64__)
      &kAvx512Vnni, &kAvxVnniVex, &kAvxVnniEvex, &kAvx2,
#elif defined(__aarch64__)
      &kNeonDot, &kNeon,
#endif
      &kScalar};
  return all;
}

const KernelSet* ResolveKernels(std::string_view name, std::string* error) {
  Isa isa;
  if (name == "auto" || name.empty()) {
    isa = BestIsa(HostCpu());
  } else if (!ParseIsa(name, &isa)) {
    *error = "--cpu-isa=" + std::string(name) + ": unknown; expected " + IsaChoices();
    return nullptr;
  }
  // Variants are listed fastest form first (avxvnni: VEX before EVEX-256).
  for (const KernelSet* ks : AllKernelSets()) {
    if (ks->isa == isa && ks->runs(HostCpu())) return ks;
  }
  *error = "--cpu-isa=" + std::string(name) + ": this CPU lacks " + IsaName(isa) +
           " (it runs: " + Runnable() + ")";
  return nullptr;
}

std::string DefaultIsaName() {
  const char* env = std::getenv("MOONDREAM_CPU_ISA");
  return env != nullptr && *env != '\0' ? env : "auto";
}

const KernelSet& DefaultKernels() {
  static const KernelSet* const chosen = [] {
    std::string error;
    const KernelSet* ks = ResolveKernels(DefaultIsaName(), &error);
    if (ks == nullptr) {
      std::fprintf(stderr, "MOONDREAM_CPU_ISA: %s\n", error.c_str());
      std::abort();
    }
    return ks;
  }();
  return *chosen;
}

size_t Int8GemmWorkspaceBytes(int64_t m, int64_t k) {
  // Quantized activations [m][RoundUp(k, 4)] bytes, then the scales [m] at a 64-byte offset.
  return static_cast<size_t>(RoundUp(m * RoundUp(k, 4), 64) + m * 4);
}

size_t SelfAttentionWorkspaceBytes(int64_t t, int64_t hd, int threads) {
  // Per thread, 64-byte aligned: key panels (<= 128 keys each) [RoundUp(t, 128)][hd16],
  // values [t][hd16], scores of up to 8 query rows [8][RoundUp(t, 16)].
  const int64_t hd16 = RoundUp(hd, 16);
  const int64_t floats = RoundUp(t, 128) * hd16 + t * hd16 + 8 * RoundUp(t, 16);
  return static_cast<size_t>(threads) * static_cast<size_t>(RoundUp(floats * 4, 64));
}

size_t DecodeAttentionWorkspaceBytes(int64_t heads, int64_t positions) {
  return static_cast<size_t>(heads * RoundUp(positions, 16) * 4);
}

void Int8Gemm(const KernelSet& ks, const Int8GemmArgs& args) {
  auto ws = Workspace(Int8GemmWorkspaceBytes(args.m, args.k));
  ks.int8_gemm(args, ws.get());
}

void SelfAttention(const KernelSet& ks, const SelfAttentionArgs& args) {
  auto ws = Workspace(SelfAttentionWorkspaceBytes(args.t, args.hd, omp_get_max_threads()));
  ks.self_attention(args, ws.get());
}

void DecodeAttention(const KernelSet& ks, const DecodeAttentionArgs& args) {
  int64_t positions = 0;
  for (int64_t i = 0; i < args.n_segments; ++i) positions += args.segments[i].n;
  auto ws = Workspace(DecodeAttentionWorkspaceBytes(args.heads, positions));
  ks.decode_attention(args, ws.get());
}

}  // namespace moondream::kernels
