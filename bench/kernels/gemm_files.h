// The kernels/gemm/<file>.cc that bench/kernels compiles again (bound_<file>, decode_<...>
// namespaces), named as the kernel library's KernelSets name them.
#pragma once

#include <string>

#include "kernels/kernels.h"

namespace moondream::bench {

// The KernelSet name (kernels.h) of kernels/gemm/<file>.cc.
inline std::string IsaOfGemmFile(const std::string& file) {
  if (file == "avxvnni_vex") return "avxvnni";
  if (file == "avxvnni_evex") return "avxvnni-evex256";
  if (file == "neon_dot") return "neon-dot";
  return file;  // scalar, avx2, avx512vnni, neon
}

// That file's KernelSet in this binary; nullptr if it was not built.
inline const kernels::KernelSet* KernelSetOfGemmFile(const std::string& file) {
  for (const kernels::KernelSet* ks : kernels::AllKernelSets()) {
    if (ks->name == IsaOfGemmFile(file)) return ks;
  }
  return nullptr;
}

}  // namespace moondream::bench
