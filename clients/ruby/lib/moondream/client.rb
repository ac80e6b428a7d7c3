# frozen_string_literal: true

require "grpc"
require "grpc/health/v1/health_services_pb"
require "moondream/v1/moondream_services_pb"
require "moondream/errors"
require "moondream/image"
require "moondream/retry_policy"

module Moondream
  # Thin, idiomatic wrapper over the generated Moondream::V1::Moondream::Stub.
  #
  #   client = Moondream::Client.new(target: "127.0.0.1:50051", timeout: 30)
  #   client.caption("photo.jpg", length: :short).caption
  #
  # Responses are the generated protobuf messages (CaptionResponse#caption, #usage,
  # #timings, ...). Not fork-safe: create clients after fork (README, "Fork safety").
  class Client
    SERVICE = "moondream.v1.Moondream"
    LENGTHS = { short: :CAPTION_LENGTH_SHORT, normal: :CAPTION_LENGTH_NORMAL }.freeze
    # Reconnect quickly to a local sidecar that is (re)starting; gRPC's default is 1s..120s.
    DEFAULT_CHANNEL_ARGS = {
      "grpc.initial_reconnect_backoff_ms" => 100,
      "grpc.min_reconnect_backoff_ms" => 100,
      "grpc.max_reconnect_backoff_ms" => 2000
    }.freeze

    attr_reader :target, :timeout, :model, :retry_policy

    # target:  "host:port", or "dns:///moondream.ns.svc:50051" with
    #          channel_args: { "grpc.lb_policy_name" => "round_robin" } for a headless Service.
    # timeout: default per-call deadline in seconds (covers retries); nil = no deadline.
    # retries: how many times an UNAVAILABLE call is retried (exponential backoff + jitter).
    # model:   default model name ("" = the server's default).
    # on_retry: optional callable(attempt, error, delay) for logging.
    # api_key: the server's --api-key (MOONDREAM_API_KEY), sent as "authorization: Bearer <key>";
    #          nil when the server has none. A wrong key raises Moondream::Unauthenticated.
    def initialize(target:, timeout: 60, retries: 2, model: "", base_delay: 0.1, max_delay: 2.0,
                   channel_args: {}, credentials: :this_channel_is_insecure, on_retry: nil,
                   api_key: nil)
      @target = target
      @timeout = timeout
      @model = model
      @retry_policy = RetryPolicy.new(retries: retries, base_delay: base_delay, max_delay: max_delay)
      @channel_args = DEFAULT_CHANNEL_ARGS.merge(channel_args)
      @credentials = credentials
      @on_retry = on_retry
      @metadata = api_key ? { "authorization" => "Bearer #{api_key}" } : {}
      @pid = Process.pid
      @mutex = Mutex.new
    end

    def caption(image = nil, length: :normal, handle: nil, model: nil, timeout: nil, **settings)
      call(:caption, caption_request(image, handle, length, model, settings), timeout)
    end

    def query(image = nil, question = nil, handle: nil, model: nil, timeout: nil, **settings)
      call(:query, query_request(image, handle, question, model, settings), timeout)
    end

    # Streams the caption: yields each Moondream::V1::TextChunk (#text) and returns the final
    # chunk (usage, timings); without a block returns an Enumerator of chunks.
    def stream_caption(image = nil, length: :normal, handle: nil, model: nil, timeout: nil, **settings, &block)
      stream(:stream_caption, caption_request(image, handle, length, model, settings), timeout, &block)
    end

    def stream_query(image = nil, question = nil, handle: nil, model: nil, timeout: nil, **settings, &block)
      stream(:stream_query, query_request(image, handle, question, model, settings), timeout, &block)
    end

    def detect(image = nil, object = nil, handle: nil, max_objects: 0, model: nil, timeout: nil)
      req = V1::DetectRequest.new(model: model || @model, image: image_proto(image, handle),
                                  object: object.to_s, max_objects: max_objects)
      call(:detect, req, timeout)
    end

    def point(image = nil, object = nil, handle: nil, max_objects: 0, model: nil, timeout: nil)
      req = V1::PointRequest.new(model: model || @model, image: image_proto(image, handle),
                                 object: object.to_s, max_objects: max_objects)
      call(:point, req, timeout)
    end

    # Encodes the image once on the server; returns a Moondream::Handle for later calls.
    def encode_image(image, model: nil, timeout: nil)
      req = V1::EncodeImageRequest.new(model: model || @model, image: ImageSource.bytes(image))
      resp = call(:encode_image, req, timeout)
      Handle.new(id: resp.handle, model: resp.model, cached_bytes: resp.cached_bytes)
    end

    # Array of Moondream::V1::ModelInfo.
    def models(timeout: nil)
      call(:list_models, V1::ListModelsRequest.new, timeout).models.to_a
    end

    # Moondream::V1::ModelInfo; raises Moondream::NotFound when the model is not loaded.
    def model(name = "", timeout: nil)
      call(:get_model, V1::GetModelRequest.new(name: name.to_s), timeout)
    end

    # True when grpc.health.v1 reports SERVING for `service` ("" = the whole server).
    # Never raises for RPC failures (no retries: a probe reports the current state).
    def healthy?(service: "", timeout: 5)
      req = Grpc::Health::V1::HealthCheckRequest.new(service: service)
      resp = health_stub.check(req, deadline: Time.now + timeout)
      resp.status == :SERVING
    rescue GRPC::BadStatus
      false
    end

    private

    def caption_request(image, handle, length, model, settings)
      V1::CaptionRequest.new(model: model || @model, image: image_proto(image, handle),
                             length: LENGTHS.fetch(length) { raise ArgumentError, "length: :short or :normal" },
                             settings: generation_settings(settings))
    end

    def query_request(image, handle, question, model, settings)
      V1::QueryRequest.new(model: model || @model, image: image_proto(image, handle),
                           question: question.to_s, settings: generation_settings(settings))
    end

    def generation_settings(settings)
      unknown = settings.keys - %i[max_tokens temperature top_p seed]
      raise ArgumentError, "unknown keywords: #{unknown.join(', ')}" unless unknown.empty?

      V1::GenerationSettings.new(**settings)
    end

    def image_proto(image, handle)
      raise ArgumentError, "pass an image or handle:, not both" if image && handle
      return V1::Image.new(handle: handle.to_s) if handle

      raise ArgumentError, "an image (path, IO, binary String or Moondream::Handle) is required" if image.nil?

      ImageSource.to_proto(image)
    end

    def deadline_for(timeout)
      seconds = timeout || @timeout
      seconds && Time.now + seconds
    end

    # Unary call with retries on UNAVAILABLE inside one overall deadline.
    def call(method, request, timeout)
      deadline = deadline_for(timeout)
      with_retries(deadline) { stub.public_send(method, request, deadline: deadline, metadata: @metadata) }
    end

    def stream(method, request, timeout, &block)
      return enum_for(:stream, method, request, timeout) unless block

      deadline = deadline_for(timeout)
      delivered = false
      with_retries(deadline, -> { !delivered }) do
        op = stub.public_send(method, request, deadline: deadline, metadata: @metadata, return_op: true)
        consume(op) { |chunk| delivered = true; block.call(chunk) }
      end
    end

    # Yields every chunk and returns the last one; cancels the call if the block exits early.
    def consume(op)
      last = nil
      finished = false
      op.execute.each { |chunk| last = chunk; yield chunk }
      finished = true
      last
    ensure
      op.cancel unless finished || op.cancelled?
    end

    def with_retries(deadline, may_retry = -> { true })
      attempt = 0
      begin
        yield
      rescue GRPC::BadStatus => e
        error = Errors.from_grpc(e)
        raise error unless may_retry.call && @retry_policy.retryable?(error, attempt)

        pause = @retry_policy.delay(attempt)
        raise error if deadline && Time.now + pause >= deadline

        @on_retry&.call(attempt + 1, error, pause)
        sleep(pause)
        attempt += 1
        retry
      end
    end

    def stub
      channel_stubs.first
    end

    def health_stub
      channel_stubs.last
    end

    def channel_stubs
      if Process.pid != @pid
        raise ForkError, "Moondream::Client created in process #{@pid} used in forked process " \
                         "#{Process.pid}; create clients after fork (Puma on_worker_boot)"
      end
      @mutex.synchronize do
        @channel_stubs ||= begin
          channel = GRPC::Core::Channel.new(@target, @channel_args, @credentials)
          [V1::Moondream::Stub.new(@target, @credentials, channel_override: channel),
           Grpc::Health::V1::Health::Stub.new(@target, @credentials, channel_override: channel)]
        end
      end
    end
  end
end
