# frozen_string_literal: true

# config/initializers/moondream.rb — points the app at moondream-server.
# In Kubernetes the server runs as a sidecar in the same pod: MOONDREAM_GRPC_TARGET=127.0.0.1:50051.
# Only settings are stored here; Moondream.client builds the gRPC channel lazily once per
# process, so Puma/Unicorn workers (and Sidekiq/GoodJob forks) each get their own after fork.
require "moondream"

Moondream.configure(
  target: ENV.fetch("MOONDREAM_GRPC_TARGET", "127.0.0.1:50051"),
  timeout: Float(ENV.fetch("MOONDREAM_TIMEOUT", "60")),
  retries: Integer(ENV.fetch("MOONDREAM_RETRIES", "3")),
  on_retry: lambda do |attempt, error, delay|
    Rails.logger.warn("moondream retry #{attempt} in #{delay.round(2)}s: #{error.message}") if defined?(Rails)
  end
)
