# frozen_string_literal: true

module Moondream
  # Exponential backoff with full jitter for UNAVAILABLE (server loading, draining or not
  # reachable). Every Moondream RPC is read-only, hence idempotent, so any of them may be
  # retried — except a stream that already delivered output (see Client#stream).
  class RetryPolicy
    attr_reader :retries, :base_delay, :max_delay

    def initialize(retries: 2, base_delay: 0.1, max_delay: 2.0, rand: Random.new)
      raise ArgumentError, "retries must be >= 0" if retries.negative?

      @retries = retries
      @base_delay = base_delay
      @max_delay = max_delay
      @rand = rand
    end

    def retryable?(error, attempt)
      error.is_a?(Unavailable) && attempt < retries
    end

    # Delay before retry number `attempt` (0-based): uniform in [0, min(max, base * 2^attempt)].
    def delay(attempt)
      @rand.rand * [max_delay, base_delay * (2**attempt)].min
    end
  end
end
