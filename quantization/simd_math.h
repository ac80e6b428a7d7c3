// Internal: AVX-512 helpers shared by the INT8 GEMM and the fused attention kernels (tail
// masks, fp32 elementwise math). Header-only; every function carries its own target attribute, so it
// inlines into callers compiled for AVX-512 (callers must check the CPU first).
#pragma once

#include <immintrin.h>

#include <cstdint>

#define MOONDREAM_AVX512F __attribute__((target("avx512f"), always_inline)) inline

namespace moondream::simd {

// The first min(n, 16) of 16 lanes (none for n <= 0): the tail of a 16-wide loop.
inline __mmask16 TailMask(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
}

// e^x, Cephes-style: x = n·ln2 + r (|r| <= ln2/2), degree-6 polynomial, then scaled by 2^n.
// Relative error ~2 ulp; x < ~-103 gives 0, x > 88.72 gives ~3.4e38 (not inf); NaN -> NaN.
MOONDREAM_AVX512F __m512 Exp(__m512 x) {
  x = _mm512_min_ps(x, _mm512_set1_ps(88.72f));
  x = _mm512_max_ps(x, _mm512_set1_ps(-103.9f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

// GELU, tanh approximation: 0.5·x·(1 + tanh(u)), u = sqrt(2/π)·(x + 0.044715·x³), evaluated
// as x / (1 + e^(−2u)) (the same function; no cancellation in 1 + tanh(u) for x << 0).
// Within a few ulp of at::gelu(x, "tanh") where the result is not tiny.
MOONDREAM_AVX512F __m512 GeluTanh(__m512 x) {
  const __m512 c1 = _mm512_set1_ps(-1.5957691216057308f);   // −2·sqrt(2/π)
  const __m512 c3 = _mm512_set1_ps(-0.07135481627159473f);  // −2·sqrt(2/π)·0.044715
  const __m512 minus_2u = _mm512_mul_ps(x, _mm512_fmadd_ps(_mm512_mul_ps(x, x), c3, c1));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.f), Exp(minus_2u)));
}

}  // namespace moondream::simd
