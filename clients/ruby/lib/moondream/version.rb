# frozen_string_literal: true

module Moondream
  VERSION = "0.1.0"
end
