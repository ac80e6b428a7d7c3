# frozen_string_literal: true

# ImageDescriptionProviders::MoondreamGrpcProvider — plugs MoondreamProvider into meme_search.
#
# meme_search's OpenaiProvider (app/services/image_description_providers/openai_provider.rb,
# v2.3+) keeps the bookkeeping: description attempts, status broadcasts, saving the text and
# refreshing the embeddings. Only its HTTP request is replaced by a gRPC call. Copy to
# app/services/image_description_providers/moondream_grpc_provider.rb and let the factory pick
# it when MOONDREAM_GRPC_TARGET is set (docs/meme-search.md, "Path 2"):
#
#   # app/services/image_description_providers/factory.rb
#   when "openai"
#     if ENV["MOONDREAM_GRPC_TARGET"].present?
#       MoondreamGrpcProvider.new(configuration)
#     else
#       OpenaiProvider.new(configuration)
#     end
#
# It overrides private methods of meme_search's class (request_description, api_key): check
# them when you upgrade meme_search. Not tested here (no meme_search in this repository);
# MoondreamProvider itself is (clients/ruby/test/meme_search_provider_test.rb).
module ImageDescriptionProviders
  class MoondreamGrpcProvider < OpenaiProvider
    def test_connection
      moondream.test_connection
    end

    private

    # OpenaiProvider#generate strips the text, fails the attempt when it is blank and turns
    # any StandardError (Moondream::Error included) into a failed attempt with its message.
    def request_description(image_core)
      moondream.describe_image_core(image_core)
    end

    # OpenaiProvider#generate refuses to run without a key; gRPC needs none.
    def api_key
      "unused-by-grpc"
    end

    def moondream
      @moondream ||= MoondreamProvider.new
    end
  end
end
