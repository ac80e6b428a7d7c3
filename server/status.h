// The single conversion from the engine's absl::Status to the gRPC status on the wire.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace moondream::server {

// Maps every absl::StatusCode to the gRPC code of the same meaning and keeps the
// message (which names the problem). Unknown codes become UNKNOWN.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace moondream::server
