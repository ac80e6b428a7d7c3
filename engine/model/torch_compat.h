// The only place that knows about LibTorch version differences (1.13 here, 2.x elsewhere),
// plus the single exception boundary of the model code (RunGuarded) and the one exception
// the model code throws on purpose (StopRequested).
#pragma once

#include <cmath>
#include <exception>
#include <limits>
#include <new>
#include <string>
#include <type_traits>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include "absl/status/status.h"
#include "engine/model.h"

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
#ifndef TORCH_VERSION_MAJOR
#define TORCH_VERSION_MAJOR 1  // pre-2.0 layouts without the api include dir
#endif

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moondream {

// RAII: no autograd bookkeeping for everything computed while it lives.
using InferenceModeGuard = c10::InferenceMode;

// Scaled dot-product attention, scale 1/sqrt(head_dim), scores and softmax in fp32
// (spec §9.3); the result has q's dtype.
//   q: [..., Tq, hd], k/v: [..., Tk, hd], mask: bool broadcastable to [..., Tq, Tk]
//   (true = may attend; undefined = attend everywhere). Every row must see >= 1 key.
inline at::Tensor Sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& mask) {
  const at::Tensor qf = q.to(at::kFloat), kf = k.to(at::kFloat), vf = v.to(at::kFloat);
#if TORCH_VERSION_MAJOR >= 2
  at::Tensor out = at::scaled_dot_product_attention(
      qf, kf, vf, mask.defined() ? c10::optional<at::Tensor>(mask) : c10::nullopt);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor scores = at::matmul(qf, kf.transpose(-2, -1)).mul_(scale);  // [..., Tq, Tk]
  if (mask.defined()) {
    scores.masked_fill_(mask.logical_not(), -std::numeric_limits<float>::infinity());
  }
  at::Tensor out = at::matmul(at::softmax(scores, -1), vf);  // [..., Tq, hd]
#endif
  return out.to(q.scalar_type());
}

namespace internal {
template <typename R>
R StatusFromException(absl::Status status) {
  return R(std::move(status));
}
}  // namespace internal

// A request's deadline passed or it was cancelled inside a long stage (between vision crops
// or blocks, between prefill layers): unwinds to RunGuarded, which returns `status`.
class StopRequested : public std::exception {
 public:
  explicit StopRequested(absl::Status status) : status_(std::move(status)) {}
  const char* what() const noexcept override { return "request stopped"; }
  const absl::Status& status() const { return status_; }

 private:
  absl::Status status_;
};

// Throws StopRequested when ctx says the request must stop (null ctx: never).
inline void ThrowIfStopped(const RunContext* ctx) {
  if (ctx == nullptr) return;
  if (absl::Status alive = ctx->CheckAlive(); !alive.ok()) throw StopRequested(std::move(alive));
}

// Runs f() (returning absl::Status or absl::StatusOr<T>) and converts any exception into
// a status: StopRequested -> its status (CANCELLED, DEADLINE_EXCEEDED), std::bad_alloc (and
// c10 out-of-memory errors) -> RESOURCE_EXHAUSTED, c10::Error / std::exception -> INTERNAL.
// The only try/catch of the model code.
template <typename F>
auto RunGuarded(F&& f) -> decltype(f()) {
  using R = decltype(f());
  static_assert(std::is_convertible<absl::Status, R>::value,
                "RunGuarded needs a function returning absl::Status or absl::StatusOr<T>");
  try {
    return f();
  } catch (const StopRequested& stop) {
    return internal::StatusFromException<R>(stop.status());
  } catch (const std::bad_alloc& e) {
    return internal::StatusFromException<R>(
        absl::ResourceExhaustedError(std::string("out of memory: ") + e.what()));
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    // CUDA: "out of memory"; DefaultCPUAllocator: "can't allocate memory" (1.13) or
    // "not enough memory" (2.x).
    if (what.find("out of memory") != std::string::npos ||
        what.find("can't allocate memory") != std::string::npos ||
        what.find("not enough memory") != std::string::npos) {
      return internal::StatusFromException<R>(absl::ResourceExhaustedError(what));
    }
    return internal::StatusFromException<R>(absl::InternalError("torch error: " + what));
  } catch (const std::exception& e) {
    return internal::StatusFromException<R>(absl::InternalError(e.what()));
  }
}

}  // namespace moondream
