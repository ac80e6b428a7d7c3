# frozen_string_literal: true

require_relative "test_helper"

# A server started with --api-key: the client sends it as "authorization: Bearer <key>".
class ApiKeyTest < Minitest::Test
  KEY = "rails-sidecar-key"

  def server
    SharedServers.get(:api_key, "--model", "test", "--api-key", KEY)
  end

  def client(api_key)
    Moondream::Client.new(target: server.address, timeout: 10, retries: 0, api_key: api_key)
  end

  def test_the_right_key_is_served
    assert_equal "test", client(KEY).caption(TestImages.path, max_tokens: 2).model
    chunks = client(KEY).stream_caption(TestImages.path, max_tokens: 3).to_a
    refute_empty chunks
  end

  def test_no_key_or_a_wrong_key_is_unauthenticated
    [nil, "#{KEY}x", KEY.upcase].each do |key|
      error = assert_raises(Moondream::Unauthenticated) { client(key).caption(TestImages.path) }
      assert_match(/API key/, error.details)
    end
    assert_raises(Moondream::Unauthenticated) { client(nil).models }
  end

  def test_health_needs_no_key
    assert client(nil).healthy?
  end
end
