// MOONDREAM_TARGET_PUSH("avx2,fma") ... MOONDREAM_TARGET_POP(): every function defined in
// between is compiled for that target (GCC `#pragma GCC target`, clang `attribute push`).
// ISA files include their standard headers first, then push, then the vec16 header and
// the generic kernel code, all TU-local (anonymous namespaces): nothing compiled for one
// ISA can be picked by the linker for another.
#pragma once

#define MOONDREAM_PRAGMA_STR(x) #x
#if defined(__clang__)
#define MOONDREAM_TARGET_PUSH(t) \
  _Pragma(MOONDREAM_PRAGMA_STR(clang attribute push(__attribute__((target(t))), apply_to = function)))
#define MOONDREAM_TARGET_POP() _Pragma("clang attribute pop")
#else
#define MOONDREAM_TARGET_PUSH(t) \
  _Pragma("GCC push_options") _Pragma(MOONDREAM_PRAGMA_STR(GCC target(t)))
#define MOONDREAM_TARGET_POP() _Pragma("GCC pop_options")
#endif
