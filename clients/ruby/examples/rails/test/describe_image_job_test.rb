# frozen_string_literal: true

# Tests DescribeImageJob without Rails: a minimal ActiveJob shim (queue_as, retry_on,
# discard_on, perform_now) and an in-memory record with an ActiveStorage-like attachment,
# against the real moondream-server started by the test.
require_relative "../../../test/test_helper"

module ActiveJob
  # Just enough of ActiveJob::Base for the job class: records the declarations and follows
  # their rescue semantics in perform_now (retry_on -> re-enqueued, discard_on -> dropped).
  class Base
    class << self
      attr_reader :queue_name

      def queue_as(name) = @queue_name = name
      def retry_on(*errors, **options) = handlers << [:retry, errors, options]
      def discard_on(*errors) = handlers << [:discard, errors, {}]
      def handlers = (@handlers ||= [])
      def enqueued = (@enqueued ||= [])

      def perform_now(*args, **kwargs)
        new.perform(*args, **kwargs)
      rescue StandardError => e
        action, = handlers.find { |_, errors, _| errors.any? { |klass| e.is_a?(klass) } }
        raise unless action

        enqueued << [args, e] if action == :retry
        action
      end
    end
  end
end

EXAMPLE = File.expand_path("..", __dir__)
require File.join(EXAMPLE, "app/jobs/application_job")
require File.join(EXAMPLE, "app/jobs/describe_image_job")

class DescribeImageJobTest < Minitest::Test
  Attachment = Struct.new(:bytes) do
    def attached? = !bytes.nil?
    def download = bytes.b
  end

  Record = Struct.new(:image, :description, :description_model) do
    def update!(attrs) = attrs.each { |k, v| public_send("#{k}=", v) }
  end

  def setup
    DescribeImageJob.enqueued.clear
  end

  def configure(target)
    ENV["MOONDREAM_GRPC_TARGET"] = target
    ENV["MOONDREAM_RETRIES"] = "1"
    load File.join(EXAMPLE, "config/initializers/moondream.rb")
  ensure
    ENV.delete("MOONDREAM_GRPC_TARGET")
    ENV.delete("MOONDREAM_RETRIES")
  end

  def server
    SharedServers.get(:test, "--model", "test")
  end

  def test_initializer_reads_the_target
    configure("10.1.2.3:50051")
    assert_equal "10.1.2.3:50051", Moondream.client.target
    assert_equal 1, Moondream.client.retry_policy.retries
  end

  def test_describes_the_uploaded_image
    configure(server.address)
    bytes = File.binread(TestImages.path)
    record = Record.new(Attachment.new(bytes))
    DescribeImageJob.perform_now(record, length: "short")
    expected = Moondream::Client.new(target: server.address).caption(bytes, length: :short)
    assert_equal expected.caption.strip, record.description
    assert_equal expected.model, record.description_model
    assert_equal :moondream, DescribeImageJob.queue_name
  end

  def test_skips_records_without_an_image
    configure(server.address)
    record = Record.new(Attachment.new(nil))
    DescribeImageJob.perform_now(record)
    assert_nil record.description
  end

  def test_discards_files_that_are_not_images
    configure(server.address)
    record = Record.new(Attachment.new("%PDF-1.4 not an image"))
    assert_equal :discard, DescribeImageJob.perform_now(record)
    assert_nil record.description
    assert_empty DescribeImageJob.enqueued
  end

  def test_retries_later_when_the_server_is_down
    port = TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] }
    configure("127.0.0.1:#{port}")
    record = Record.new(Attachment.new(File.binread(TestImages.path)))
    assert_equal :retry, DescribeImageJob.perform_now(record)
    assert_instance_of Moondream::Unavailable, DescribeImageJob.enqueued.last.last
  end
end
