# frozen_string_literal: true

# ImageDescriptionProviders::MoondreamProvider — meme_search image descriptions from
# moondream-server over gRPC, with the moondream-grpc gem (docs/meme-search.md, "Path 2").
#
# Copy to app/services/image_description_providers/moondream_provider.rb in meme_search
# (Rails 8, v2.3+) and add `gem "moondream-grpc"`. The class needs nothing else from
# meme_search or Rails; moondream_grpc_provider.rb (beside this file) plugs it into
# meme_search's own provider bookkeeping.
#
#   provider = ImageDescriptionProviders::MoondreamProvider.new
#   provider.describe("example_memes_1/cat.jpg")    # => "A cat in sunglasses ..." (a String)
#   provider.describe_image_core(image_core)         # image_core.image_path.name / image_core.name
#   provider.test_connection.success?
#
# Settings (environment, read once per process):
#   MOONDREAM_GRPC_TARGET  host:port of moondream-server's gRPC listener (default moondream:50051)
#   MOONDREAM_MODEL        model name; "" = the server's default (moondream2-int8 when it runs INT8)
#   MOONDREAM_TIMEOUT      seconds for one description: queue wait, inference and retries (default 120)
#   MOONDREAM_RETRIES      UNAVAILABLE retries (server loading, draining, restarting; default 5)
require "moondream"
require "pathname"

module ImageDescriptionProviders
  class MoondreamProvider
    # The request meme_search's OpenAI-compatible provider sends, so that both paths give
    # the same kind of description: a Query with this text, at most 160 tokens.
    PROMPT = "Describe this meme for semantic search. Include visible text, objects, people, " \
             "setting, and the joke or sentiment. Keep it concise."
    MAX_TOKENS = 160
    DEFAULT_TARGET = "moondream:50051"
    DEFAULT_TIMEOUT = 120.0
    DEFAULT_RETRIES = 5

    # The server answered, but with no text (meme_search counts that as a failure too).
    class EmptyDescription < StandardError; end

    # What test_connection returns outside meme_search (inside, its Result class is used).
    Outcome = Struct.new(:success, :message, :queued, keyword_init: true) do
      def success? = success
      def queued? = queued
    end

    @client_mutex = Mutex.new

    class << self
      # One Moondream::Client per process, built from the environment on first use and
      # rebuilt in a forked child: gRPC channels do not survive fork (Puma workers,
      # Solid Queue's forked workers), see clients/ruby/README.md, "Fork safety".
      def client
        @client_mutex.synchronize do
          @client = nil unless @client_pid == Process.pid
          @client_pid = Process.pid
          @client ||= Moondream::Client.new(**client_options)
        end
      end

      # The gem's retry policy: only UNAVAILABLE is retried, with exponential backoff and
      # full jitter (0.5 s doubling, at most 5 s apart), all within the call's deadline.
      def client_options(env = ENV)
        { target: env.fetch("MOONDREAM_GRPC_TARGET", DEFAULT_TARGET),
          timeout: Float(env.fetch("MOONDREAM_TIMEOUT", DEFAULT_TIMEOUT)),
          retries: Integer(env.fetch("MOONDREAM_RETRIES", DEFAULT_RETRIES)),
          api_key: env["MOONDREAM_API_KEY"].to_s.empty? ? nil : env["MOONDREAM_API_KEY"],
          base_delay: 0.5, max_delay: 5.0,
          on_retry: lambda do |attempt, error, delay|
            logger&.warn("moondream retry #{attempt} in #{delay.round(2)}s: #{error.message}")
          end }
      end

      def logger
        Rails.logger if defined?(Rails) && Rails.respond_to?(:logger)
      end
    end

    attr_reader :memes_root, :model, :timeout, :prompt, :max_tokens

    # client:     a Moondream::Client (default: the per-process one above).
    # memes_root: where meme_search keeps every meme (Rails.root/public/memes).
    # timeout:    seconds per description; nil = the client's timeout.
    def initialize(client: nil, memes_root: nil, model: ENV.fetch("MOONDREAM_MODEL", ""),
                   timeout: nil, prompt: PROMPT, max_tokens: MAX_TOKENS)
      @client = client
      @memes_root = File.expand_path((memes_root || default_memes_root).to_s)
      @model = model
      @timeout = timeout
      @prompt = prompt
      @max_tokens = max_tokens
    end

    def client
      @client || self.class.client
    end

    def name
      "moondream"
    end

    def queued_provider?
      false
    end

    # The description of the meme at `path`, relative to memes_root ("<folder>/<file>", as
    # meme_search stores it) or absolute inside it. The file's bytes go to the server as they
    # are: JPEG, PNG, WebP and GIF (its first frame) are decoded there.
    # Raises ArgumentError (no such file, or a path outside memes_root), a Moondream::Error
    # (Moondream::Unavailable once the retries are spent, Moondream::DeadlineExceeded,
    # Moondream::InvalidArgument for a file that is not a supported image, ...) or
    # EmptyDescription.
    def describe(path)
      file = resolve(path)
      response = client.query(Pathname.new(file), prompt, model: model, timeout: timeout,
                                                          max_tokens: max_tokens)
      description = response.answer.to_s.strip
      raise EmptyDescription, "moondream-server returned an empty description for #{path}" if description.empty?

      description
    end

    # meme_search's ImageCore: the file is public/memes/<image_path.name>/<name>.
    def describe_image_core(image_core)
      describe(File.join(image_core.image_path.name, image_core.name))
    end

    # For meme_search's "test connection" button: the server is SERVING (models loaded, not
    # draining) and serves `model`. No inference is run.
    def test_connection
      unless client.healthy?(service: Moondream::Client::SERVICE, timeout: 5)
        return outcome(false, "moondream-server at #{client.target} is not serving " \
                              "(unreachable, loading its model or draining).")
      end

      info = client.model(model, timeout: 10)
      outcome(true, "moondream-server connection test passed (model #{info.name}, #{info.precision}).")
    rescue Moondream::Error => e
      outcome(false, "moondream-server: #{e.message}")
    end

    private

    def default_memes_root
      defined?(Rails) && Rails.respond_to?(:root) ? Rails.root.join("public", "memes") : "public/memes"
    end

    def resolve(path)
      file = File.expand_path(path.to_s, memes_root)
      unless file.start_with?(File.join(memes_root, ""))
        raise ArgumentError, "#{path.inspect} is outside the memes folder #{memes_root}"
      end
      raise ArgumentError, "Image file not found: #{file}" unless File.file?(file)

      file
    end

    def outcome(success, message)
      if defined?(ImageDescriptionProviders::Result)
        ImageDescriptionProviders::Result.new(success: success, message: message, queued: false)
      else
        Outcome.new(success: success, message: message, queued: false)
      end
    end
  end
end
