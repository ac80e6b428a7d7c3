# frozen_string_literal: true

require_relative "test_helper"

# Server status codes arrive as Moondream::Error subclasses that keep code and details.
class ErrorsTest < Minitest::Test
  def client(**opts)
    server = SharedServers.get(:test, "--model", "test")
    Moondream::Client.new(target: server.address, timeout: 30, model: "test", **opts)
  end

  def test_bad_image_bytes_is_invalid_argument
    err = assert_raises(Moondream::InvalidArgument) { client.caption("not an image".b) }
    assert_equal GRPC::Core::StatusCodes::INVALID_ARGUMENT, err.code
    assert_equal :INVALID_ARGUMENT, err.code_name
    refute_empty err.details
    assert_kind_of Moondream::Error, err
  end

  def test_truncated_image_is_invalid_argument
    bytes = File.binread(TestImages.path)
    assert_raises(Moondream::InvalidArgument) { client.query(bytes[0, bytes.size / 3], "what?") }
  end

  def test_empty_question_and_object_are_invalid_argument
    assert_raises(Moondream::InvalidArgument) { client.query(TestImages.path, "") }
    assert_raises(Moondream::InvalidArgument) { client.detect(TestImages.path, "") }
  end

  def test_unknown_model_is_not_found
    err = assert_raises(Moondream::NotFound) { client.caption(TestImages.path, model: "no-such-model") }
    assert_match(/no-such-model/, err.details)
    assert_raises(Moondream::NotFound) { client.model("no-such-model") }
  end

  def test_unknown_handle_is_not_found
    assert_raises(Moondream::NotFound) { client.caption(handle: "no-such-handle") }
  end

  def test_out_of_range_settings_are_invalid_argument
    assert_raises(Moondream::InvalidArgument) { client.caption(TestImages.path, max_tokens: 100_000) }
  end

  def test_stream_errors_are_mapped
    assert_raises(Moondream::InvalidArgument) { client.stream_caption("junk".b) { flunk "no chunk expected" } }
    assert_raises(Moondream::NotFound) { client.stream_query(TestImages.path, "hi?", model: "nope").to_a }
  end

  def test_client_side_argument_errors
    assert_raises(ArgumentError) { client.caption("/no/such/file.png") }
    assert_raises(ArgumentError) { client.caption(TestImages.path, length: :long) }
    assert_raises(ArgumentError) { client.caption(TestImages.path, bogus: 1) }
    assert_raises(ArgumentError) { client.caption }
  end
end

# A slow `test` model (200 ms per token) and a short per-call deadline.
class DeadlineTest < Minitest::Test
  def server
    SharedServers.get(:slow, "--model", "test", "--test-model-token-delay-ms", "200")
  end

  def test_unary_deadline_exceeded
    client = Moondream::Client.new(target: server.address, timeout: 30)
    started = Time.now
    err = assert_raises(Moondream::DeadlineExceeded) do
      client.caption(TestImages.path, max_tokens: 20, timeout: 0.5)
    end
    assert_operator Time.now - started, :<, 3.0, "the deadline cut the call short"
    assert_equal GRPC::Core::StatusCodes::DEADLINE_EXCEEDED, err.code
  end

  def test_stream_deadline_exceeded_after_partial_output
    client = Moondream::Client.new(target: server.address, timeout: 1.1)
    chunks = []
    assert_raises(Moondream::DeadlineExceeded) do
      client.stream_caption(TestImages.path, max_tokens: 20) { |c| chunks << c }
    end
    refute chunks.any?(&:final)
  end

  def test_long_enough_deadline_succeeds
    client = Moondream::Client.new(target: server.address, timeout: 30)
    started = Time.now
    r = client.caption(TestImages.path, max_tokens: 2, timeout: 10)
    assert_operator r.usage.generated_tokens, :<=, 2
    assert_operator Time.now - started, :>=, 0.18 * r.usage.generated_tokens, "tokens were delayed"
  end
end
