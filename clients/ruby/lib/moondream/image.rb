# frozen_string_literal: true

require "pathname"

module Moondream
  # A server-side cached image encoding returned by Client#encode_image. Pass it wherever an
  # image is expected; it is valid for the same model until the server evicts it
  # (then calls raise Moondream::NotFound: send the image again).
  Handle = Struct.new(:id, :model, :cached_bytes, keyword_init: true) do
    def to_s
      id
    end
  end

  # Turns the accepted image forms into a Moondream::V1::Image or raw bytes.
  #
  # The rule for Strings (documented in README.md, "Images"):
  #   * a binary String (Encoding::BINARY, as File.binread, IO#read on a binmode IO,
  #     ActiveStorage::Blob#download and Rack uploads return) is the image's bytes;
  #   * any other String is a file path and must name an existing file.
  # A Pathname is always a path, an IO (anything responding to #read) is read from its
  # current position, and a Moondream::Handle refers to a cached encoding.
  module ImageSource
    module_function

    def bytes(image)
      case image
      when Handle
        raise ArgumentError, "a Moondream::Handle cannot be re-encoded; pass image bytes"
      when Pathname then read_file(image.to_s)
      when String then image.encoding == Encoding::BINARY ? image : read_file(image)
      else
        return image.read.b if image.respond_to?(:read)

        raise ArgumentError, "unsupported image #{image.class}: pass a path, Pathname, IO, " \
                             "binary String or Moondream::Handle"
      end
    end

    def to_proto(image)
      return V1::Image.new(handle: image.id) if image.is_a?(Handle)

      V1::Image.new(data: bytes(image))
    end

    def read_file(path)
      raise ArgumentError, "no such image file: #{path.inspect} (a non-binary String is a " \
                           "path; pass bytes as a binary String, e.g. File.binread)" unless File.file?(path)

      File.binread(path)
    end
  end
end
