# frozen_string_literal: true

require "grpc"

module Moondream
  # Base class of every error the client raises for a failed RPC. Keeps the canonical
  # gRPC status `code` (Integer, GRPC::Core::StatusCodes), its `code_name` (Symbol,
  # e.g. :NOT_FOUND), the server's message (`details`) and trailing `metadata`.
  class Error < StandardError
    attr_reader :code, :details, :metadata

    def initialize(message = nil, code: nil, details: nil, metadata: {})
      @code = code
      @details = details || message
      @metadata = metadata || {}
      super(message || details)
    end

    def code_name
      Moondream::Errors.name_of(code)
    end
  end

  # Canonical status codes the server uses (see proto/moondream/v1/moondream.proto).
  class InvalidArgument < Error; end
  class NotFound < Error; end
  class ResourceExhausted < Error; end
  class DeadlineExceeded < Error; end
  class Cancelled < Error; end
  class OutOfRange < Error; end
  class Unavailable < Error; end
  class Internal < Error; end
  # Codes the server does not send itself but a proxy or the gRPC runtime may.
  class Unimplemented < Error; end
  class Unauthenticated < Error; end
  class PermissionDenied < Error; end
  class FailedPrecondition < Error; end
  class Aborted < Error; end
  class Unknown < Error; end

  # Raised when a Client created in one process is used in a forked child. gRPC (1.51)
  # channels are not fork-safe: create clients after fork (see README, "Fork safety").
  class ForkError < Error; end

  # Conversion from GRPC::BadStatus to the Moondream::Error hierarchy.
  module Errors
    CODES = GRPC::Core::StatusCodes
    CLASSES = {
      CODES::INVALID_ARGUMENT => InvalidArgument,
      CODES::NOT_FOUND => NotFound,
      CODES::RESOURCE_EXHAUSTED => ResourceExhausted,
      CODES::DEADLINE_EXCEEDED => DeadlineExceeded,
      CODES::CANCELLED => Cancelled,
      CODES::OUT_OF_RANGE => OutOfRange,
      CODES::UNAVAILABLE => Unavailable,
      CODES::INTERNAL => Internal,
      CODES::DATA_LOSS => Internal,
      CODES::UNIMPLEMENTED => Unimplemented,
      CODES::UNAUTHENTICATED => Unauthenticated,
      CODES::PERMISSION_DENIED => PermissionDenied,
      CODES::FAILED_PRECONDITION => FailedPrecondition,
      CODES::ABORTED => Aborted,
      CODES::UNKNOWN => Unknown
    }.freeze

    def self.name_of(code)
      CODES.constants.find { |c| CODES.const_get(c) == code }
    end

    # Returns the Moondream::Error for a GRPC::BadStatus (any other error is returned as is).
    def self.from_grpc(error)
      return error unless error.is_a?(GRPC::BadStatus)

      klass = CLASSES.fetch(error.code, Unknown)
      details = error.details.to_s
      message = "#{name_of(error.code)}: #{details}"
      klass.new(message, code: error.code, details: details, metadata: error.metadata)
    end
  end
end
