# frozen_string_literal: true

require_relative "test_helper"

# Retries: only UNAVAILABLE, only before any stream output, within the call's deadline.
class RetryTest < Minitest::Test
  def free_port
    TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] }
  end

  def recording_client(target, **opts)
    retries = []
    client = Moondream::Client.new(target: target, base_delay: 0.1, max_delay: 0.5,
                                   on_retry: ->(attempt, error, _delay) { retries << [attempt, error.class] },
                                   **opts)
    [client, retries]
  end

  def test_unavailable_without_retries_fails_at_once
    client, retries = recording_client("127.0.0.1:#{free_port}", retries: 0, timeout: 10)
    err = assert_raises(Moondream::Unavailable) { client.models }
    assert_equal GRPC::Core::StatusCodes::UNAVAILABLE, err.code
    assert_empty retries
  end

  def test_unavailable_is_retried_the_configured_number_of_times
    client, retries = recording_client("127.0.0.1:#{free_port}", retries: 3, timeout: 30)
    assert_raises(Moondream::Unavailable) { client.caption(TestImages.path) }
    assert_equal [[1, Moondream::Unavailable], [2, Moondream::Unavailable], [3, Moondream::Unavailable]], retries
  end

  def test_retries_reach_a_server_that_starts_late
    port = free_port
    client, retries = recording_client("127.0.0.1:#{port}", retries: 30, timeout: 60, model: "test")
    late = Thread.new { sleep 0.5; ServerProcess.start("--model", "test", listen: "127.0.0.1:#{port}") }
    r = client.caption(TestImages.path, max_tokens: 2)
    assert_equal "test", r.model
    refute_empty retries, "the first attempts found no server"
  ensure
    late&.value&.stop
  end

  def test_retries_stop_at_the_deadline
    client, = recording_client("127.0.0.1:#{free_port}", retries: 1000, timeout: 1.0)
    started = Time.now
    # The last attempt ends as UNAVAILABLE (connection refused) or, when the deadline passes
    # during it (a loaded machine), as DEADLINE_EXCEEDED: either way the retries stopped.
    assert_raises(Moondream::Unavailable, Moondream::DeadlineExceeded) { client.models }
    assert_operator Time.now - started, :<, 2.0
  end

  def test_other_errors_are_not_retried
    server = SharedServers.get(:test, "--model", "test")
    client, retries = recording_client(server.address, retries: 3, timeout: 30)
    assert_raises(Moondream::InvalidArgument) { client.caption("junk".b) }
    assert_raises(Moondream::NotFound) { client.models && client.model("nope") }
    assert_empty retries
  end

  def test_stream_is_not_retried_after_partial_output
    server = ServerProcess.start("--model", "test", "--test-model-token-delay-ms", "200")
    client, retries = recording_client(server.address, retries: 3, timeout: 30, model: "test")
    chunks = []
    err = assert_raises(Moondream::Error) do
      client.stream_caption(TestImages.path, max_tokens: 50) do |chunk|
        chunks << chunk
        Process.kill("KILL", server.pid) if chunks.size == 1
      end
    end
    assert_equal 1, chunks.size
    assert_empty retries, "no retry after output (got #{err.class})"
  ensure
    server&.stop
  end

  def test_breaking_out_of_a_stream_cancels_it
    server = SharedServers.get(:slow, "--model", "test", "--test-model-token-delay-ms", "200")
    client = Moondream::Client.new(target: server.address, timeout: 30)
    started = Time.now
    first = client.stream_caption(TestImages.path, max_tokens: 50) { |chunk| break chunk }
    assert_kind_of Moondream::V1::TextChunk, first
    assert_operator Time.now - started, :<, 5.0
    assert client.healthy?
  end
end
