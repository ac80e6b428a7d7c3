# frozen_string_literal: true

require_relative "lib/moondream/version"

Gem::Specification.new do |spec|
  spec.name = "moondream-grpc"
  spec.version = Moondream::VERSION
  spec.summary = "Ruby client for moondream-server (gRPC API moondream.v1.Moondream)"
  spec.description = "Caption, query, detect and point on images with Moondream2 served by " \
                     "moondream-server: generated gRPC stubs plus an idiomatic client with " \
                     "typed errors, retries and deadlines."
  spec.authors = ["moondream-server contributors"]
  spec.required_ruby_version = ">= 3.0"
  spec.files = Dir["lib/**/*.rb", "README.md"]
  spec.require_paths = ["lib"]
  spec.add_dependency "google-protobuf", ">= 3.21", "< 5"
  spec.add_dependency "grpc", ">= 1.51", "< 2"
  spec.add_development_dependency "minitest", ">= 5.15"
  spec.add_development_dependency "rake", ">= 13"
end
