# frozen_string_literal: true

require "timeout"

# Starts the real moondream-server binary on a free port for black-box tests and stops it.
#   server = ServerProcess.start("--model", "test")
#   server.address  # => "127.0.0.1:40123"
#   server.stop
class ServerProcess
  REPO = File.expand_path("../../../..", __dir__)
  LISTENING = /event=listening\b.*\baddress=(\S+)/.freeze
  # The server listens (health NOT_SERVING) before loading models, then logs event=serving.
  SERVING = /event=serving\b/.freeze

  # Raised when the server exits before listening; `log` holds its output.
  class StartError < StandardError
    attr_reader :log

    def initialize(message, log)
      @log = log
      super("#{message}\n--- server output ---\n#{log}")
    end
  end

  def self.binary
    return ENV["MOONDREAM_SERVER_BIN"] if ENV["MOONDREAM_SERVER_BIN"] && !ENV["MOONDREAM_SERVER_BIN"].empty?

    candidates = [File.join(REPO, "build/server/moondream-server")] +
                 Dir.glob(File.join(REPO, "build-*/server/moondream-server")).sort_by { |f| -File.mtime(f).to_f }
    candidates.find { |f| File.executable?(f) }
  end

  def self.fixtures_dir
    ENV.fetch("MOONDREAM_FIXTURES_DIR", File.expand_path("../shared/fixtures/moondream-tiny", REPO))
  end

  def self.start(*args, listen: "127.0.0.1:0", startup_timeout: 120)
    bin = binary or raise StartError.new("moondream-server binary not found: build it " \
                                         "(ninja moondream-server) or set MOONDREAM_SERVER_BIN", "")
    new(bin, ["--listen", listen, "--metrics-listen", "", *args], startup_timeout)
  end

  attr_reader :address, :pid

  def initialize(bin, args, startup_timeout)
    @log = +""
    @log_mutex = Mutex.new
    reader, writer = IO.pipe
    @pid = Process.spawn(bin, *args, out: writer, err: writer, in: File::NULL)
    writer.close
    @address_queue = Queue.new
    @reader = Thread.new { pump(reader) }
    @address = wait_for_address(startup_timeout)
  end

  def log
    @log_mutex.synchronize { @log.dup }
  end

  def port
    Integer(address.split(":").last)
  end

  def alive?
    Process.waitpid(@pid, Process::WNOHANG).nil?
  rescue Errno::ECHILD
    false
  end

  def stop(timeout: 15)
    return unless @pid

    Process.kill("TERM", @pid)
    Timeout.timeout(timeout) { Process.wait(@pid) }
  rescue Timeout::Error
    Process.kill("KILL", @pid)
    Process.wait(@pid)
  rescue Errno::ESRCH, Errno::ECHILD
    nil
  ensure
    @pid = nil
    @reader&.join(5)
  end

  private

  def pump(reader)
    address = nil
    reader.each_line do |line|
      @log_mutex.synchronize { @log << line }
      address ||= LISTENING.match(line)&.[](1)
      @address_queue << address if address && SERVING.match?(line)
    end
    @address_queue << nil
  ensure
    reader.close
  end

  def wait_for_address(startup_timeout)
    address = Timeout.timeout(startup_timeout) { @address_queue.pop }
    return address if address

    Process.wait(@pid)
    status = $?
    @pid = nil
    raise StartError.new("moondream-server exited (#{status}) before listening", log)
  rescue Timeout::Error
    stop
    raise StartError.new("moondream-server did not log event=listening and event=serving in #{startup_timeout}s", log)
  end
end
