# frozen_string_literal: true

require_relative "test_helper"
require "tmpdir"
require "stringio"

# Client-side pieces that need no server: image sources, error mapping, backoff.
class UnitTest < Minitest::Test
  def test_image_sources
    bytes = File.binread(TestImages.path)
    assert_equal bytes, Moondream::ImageSource.bytes(TestImages.path)
    assert_equal bytes, Moondream::ImageSource.bytes(Pathname.new(TestImages.path))
    assert_equal bytes, Moondream::ImageSource.bytes(StringIO.new(bytes))
    assert_equal bytes, Moondream::ImageSource.bytes(bytes)
    assert_raises(ArgumentError) { Moondream::ImageSource.bytes("missing.png") }
    assert_raises(ArgumentError) { Moondream::ImageSource.bytes(42) }
    handle = Moondream::Handle.new(id: "h1", model: "test")
    assert_equal "h1", Moondream::ImageSource.to_proto(handle).handle
    assert_equal bytes, Moondream::ImageSource.to_proto(bytes).data
  end

  def test_error_mapping_keeps_code_and_details
    {
      GRPC::InvalidArgument => Moondream::InvalidArgument, GRPC::NotFound => Moondream::NotFound,
      GRPC::ResourceExhausted => Moondream::ResourceExhausted, GRPC::DeadlineExceeded => Moondream::DeadlineExceeded,
      GRPC::Unavailable => Moondream::Unavailable, GRPC::Cancelled => Moondream::Cancelled,
      GRPC::Internal => Moondream::Internal, GRPC::OutOfRange => Moondream::OutOfRange,
      GRPC::Aborted => Moondream::Aborted
    }.each do |grpc_class, moondream_class|
      error = Moondream::Errors.from_grpc(grpc_class.new("boom", { "k" => "v" }))
      assert_instance_of moondream_class, error
      assert_equal grpc_class.new.code, error.code
      assert_equal "boom", error.details
      assert_equal({ "k" => "v" }, error.metadata)
    end
  end

  def test_backoff_is_exponential_with_full_jitter_and_capped
    policy = Moondream::RetryPolicy.new(retries: 5, base_delay: 0.1, max_delay: 1.0, rand: Random.new(1))
    200.times do
      assert_operator policy.delay(0), :<=, 0.1
      assert_operator policy.delay(2), :<=, 0.4
      assert_operator policy.delay(10), :<=, 1.0
    end
    assert_operator (1..200).map { policy.delay(3) }.max, :>, 0.5, "jitter spans the whole window"
    assert policy.retryable?(Moondream::Unavailable.new("x"), 4)
    refute policy.retryable?(Moondream::Unavailable.new("x"), 5)
    refute policy.retryable?(Moondream::Internal.new("x"), 0)
  end

  def test_client_refuses_use_after_fork
    client = Moondream::Client.new(target: "127.0.0.1:1")
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      begin
        client.models
      rescue Moondream::ForkError => e
        writer.write(e.class.name)
      end
      writer.close
      exit!(0)
    end
    writer.close
    Process.wait(pid)
    assert_equal "Moondream::ForkError", reader.read
  end

  def test_module_client_is_rebuilt_after_fork
    Moondream.configure(target: "127.0.0.1:1")
    parent = Moondream.client
    assert_same parent, Moondream.client
    reader, writer = IO.pipe
    pid = fork do
      writer.write(Moondream.client.equal?(parent) ? "same" : "new")
      exit!(0)
    end
    writer.close
    Process.wait(pid)
    assert_equal "new", reader.read
  end

  def test_generated_stubs_are_fresh
    Dir.mktmpdir do |dir|
      assert system(File.expand_path("../bin/generate", __dir__), dir), "bin/generate failed"
      %w[moondream_pb.rb moondream_services_pb.rb].each do |f|
        committed = File.read(File.expand_path("../lib/moondream/v1/#{f}", __dir__))
        assert_equal File.read(File.join(dir, "moondream/v1", f)), committed,
                     "lib/moondream/v1/#{f} is stale: run clients/ruby/bin/generate"
      end
    end
  end
end
