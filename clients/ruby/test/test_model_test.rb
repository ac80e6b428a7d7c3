# frozen_string_literal: true

require_relative "test_helper"
require_relative "support/inference_calls"

class TestModelTest < Minitest::Test
  include InferenceCalls

  def server
    SharedServers.get(:test, "--model", "test")
  end

  def client
    @client ||= Moondream::Client.new(target: server.address, timeout: 30, model: model_name)
  end

  def model_name
    "test"
  end

  def test_default_model_is_served_for_empty_name
    r = Moondream::Client.new(target: server.address).caption(TestImages.path, max_tokens: 2)
    assert_equal "test", r.model
    assert client.model("").is_default
  end
end
