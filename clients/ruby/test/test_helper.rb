# frozen_string_literal: true

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "minitest/autorun"
require "socket"
require "moondream"
require_relative "support/server_process"

# Servers shared by the tests of a process; started on first use, stopped at exit.
module SharedServers
  @servers = {}
  @mutex = Mutex.new

  def self.get(name, *args)
    @mutex.synchronize do
      @servers[name] ||= begin
        ServerProcess.start(*args)
      rescue ServerProcess::StartError => e
        e # remembered: later tests fail (or skip) the same way without restarting
      end
      raise @servers[name] if @servers[name].is_a?(Exception)

      @servers[name]
    end
  end

  Minitest.after_run { @servers.each_value { |s| s.stop if s.is_a?(ServerProcess) } }
end

module TestImages
  DIR = File.join(ServerProcess.fixtures_dir, "images")

  def self.path(name = "img1_640x480.png")
    File.join(DIR, name)
  end
end
