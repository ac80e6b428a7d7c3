// Status propagation helpers for the model code.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MD_STATUS_CONCAT_INNER(a, b) a##b
#define MD_STATUS_CONCAT(a, b) MD_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when it is not OK.
#define MD_RETURN_IF_ERROR(expr)                \
  do {                                          \
    const absl::Status md_status_ = (expr);     \
    if (!md_status_.ok()) return md_status_;    \
  } while (0)

// `lhs = value of expr` (a StatusOr), or return its status.
#define MD_ASSIGN_OR_RETURN(lhs, expr) \
  MD_ASSIGN_OR_RETURN_IMPL(MD_STATUS_CONCAT(md_statusor_, __LINE__), lhs, expr)
#define MD_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
