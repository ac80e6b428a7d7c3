# frozen_string_literal: true

require_relative "test_helper"
require_relative "support/inference_calls"

# The same calls on the tiny random-weight Moondream2 checkpoint (real engine path).
class FixtureModelTest < Minitest::Test
  include InferenceCalls

  CKPT = File.join(ServerProcess.fixtures_dir, "public-a/ckpt")

  def server
    SharedServers.get(:fixture, "--model", "moondream2", "--model-dir", CKPT, "--precision", "fp32")
  rescue ServerProcess::StartError => e
    raise unless e.log =~ /unimplemented/i

    skip "server reports the moondream2 model path unimplemented: #{e.log.lines.grep(/unimplemented/i).first}"
  end

  def client
    @client ||= Moondream::Client.new(target: server.address, timeout: 60, model: model_name)
  end

  # 64x48: one crop, so the random-weight vision encoder runs fast on CPU.
  def image_path
    TestImages.path("img4_64x48.png")
  end

  def model_name
    "moondream2"
  end
end
