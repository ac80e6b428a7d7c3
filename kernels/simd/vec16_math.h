// Exp and GeluTanh on F16, written once over the vec16_<isa>.h primitives (README.md).
// Included at the end of each vec16_<isa>.h.
#pragma once

namespace moondream::kernels {
namespace {

inline F16 Exp(F16 x) {
  x = Max(Min(x, Set1(88.02f)), Set1(-87.33654f));
  const F16 n = RoundEven(Mul(x, Set1(1.44269504088896341f)));
  const F16 minus_n = Sub(Zero(), n);
  F16 r = Fma(minus_n, Set1(0.693359375f), x);
  r = Fma(minus_n, Set1(-2.12194440e-4f), r);
  F16 p = Set1(1.9875691500e-4f);
  p = Fma(p, r, Set1(1.3981999507e-3f));
  p = Fma(p, r, Set1(8.3334519073e-3f));
  p = Fma(p, r, Set1(4.1665795894e-2f));
  p = Fma(p, r, Set1(1.6666665459e-1f));
  p = Fma(p, r, Set1(5.0000001201e-1f));
  p = Fma(p, Mul(r, r), Add(r, Set1(1.f)));
  return Mul(p, Pow2(n));
}

// GELU, tanh approximation, as x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3): the
// same function as 0.5 x (1 + tanh(u)), without cancellation for x << 0.
inline F16 GeluTanh(F16 x) {
  const F16 c1 = Set1(-1.5957691216057308f);   // -2 sqrt(2/pi)
  const F16 c3 = Set1(-0.07135481627159473f);  // -2 sqrt(2/pi) * 0.044715
  const F16 minus_2u = Mul(x, Fma(Mul(x, x), c3, c1));
  return Div(x, Add(Set1(1.f), Exp(minus_2u)));
}

}  // namespace
}  // namespace moondream::kernels
