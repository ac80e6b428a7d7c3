# frozen_string_literal: true

$LOAD_PATH.unshift(__dir__) unless $LOAD_PATH.include?(__dir__) # generated stubs require "moondream/v1/..."

require "moondream/version"
require "moondream/errors"
require "moondream/image"
require "moondream/client"

# Ruby client for moondream-server (gRPC API moondream.v1.Moondream).
module Moondream
  @mutex = Mutex.new
  @options = {}

  class << self
    # Process-wide client settings, e.g. from a Rails initializer:
    #   Moondream.configure(target: ENV.fetch("MOONDREAM_GRPC_TARGET"), timeout: 30)
    def configure(**options)
      @mutex.synchronize do
        @options = options
        @client = nil
      end
    end

    # A client for the configured settings, created lazily once per process: after a fork
    # (Puma/Unicorn workers) the child builds its own, so it is fork-safe to call anywhere.
    def client
      @mutex.synchronize do
        @client = nil if @client_pid != Process.pid
        @client_pid = Process.pid
        @client ||= Client.new(**@options)
      end
    end
  end
end
