#!/usr/bin/env ruby
# frozen_string_literal: true

# Runs every `sh` command (grpcurl, curl) of docs/diagnostics.md against a real moondream-server (test
# model), through tools/grpc-reflect (grpcurl is not packaged here), and compares each
# output with the "healthy output" block that follows it in the doc:
#   * JSON outputs: the same keys, recursively, in the first and last streamed message,
#     and the same values for status/enum fields (values that vary are not compared);
#   * text outputs (list, describe): every documented line appears.
# The doc's addresses (localhost:50051, metrics localhost:9464) and image (photo.png) are
# replaced by the test's.
# Usage: check_diagnostics.rb SERVER_BIN REPO_ROOT
require "json"
require "open3"
require "tmpdir"
require "fileutils"
require_relative "../../clients/ruby/test/support/server_process"

ENV["MOONDREAM_SERVER_BIN"] = ARGV[0]
repo = ARGV[1]
TOOL = File.join(repo, "tools/grpc-reflect/grpc-reflect")
DOC = File.join(repo, "docs/diagnostics.md")
EXACT_KEYS = %w[status finishReason isDefault precision name].freeze

# [[command, expected_lang, expected_text], ...] from the doc's fenced blocks.
def documented_commands(markdown)
  blocks = markdown.scan(/^```(\w*)\n(.*?)^```$/m)
  blocks.each_with_index.filter_map do |(lang, body), i|
    next unless lang == "sh" && body.match?(/\b(grpcurl|curl) /)

    command = body.gsub(/\\\n\s*/, " ").lines.map(&:strip).reject { |l| l.empty? || l.start_with?("#") }.join("\n")
    out_lang, out_body = blocks[i + 1]
    raise "no output block after: #{command}" unless %w[json text].include?(out_lang)

    [command, out_lang, out_body]
  end
end

def json_stream(text)
  text.scan(/^\{.*?^\}$/m).map { |chunk| JSON.parse(chunk) }
end

def same_shape(expected, actual, path = "")
  case expected
  when Hash
    return ["#{path}: expected an object, got #{actual.inspect[0, 60]}"] unless actual.is_a?(Hash)

    expected.flat_map do |key, value|
      next ["#{path}/#{key}: missing"] unless actual.key?(key)
      next ["#{path}/#{key}: #{actual[key].inspect} != #{value.inspect}"] if EXACT_KEYS.include?(key) && !value.is_a?(Enumerable) && actual[key] != value

      same_shape(value, actual[key], "#{path}/#{key}")
    end
  when Array
    actual.is_a?(Array) && !actual.empty? && !expected.empty? ? same_shape(expected.first, actual.first, "#{path}[0]") : []
  else
    []
  end
end

def compare(lang, expected, actual)
  if lang == "json"
    want = json_stream(expected)
    got = json_stream(actual)
    return ["no JSON in output"] if got.empty?

    same_shape(want.first, got.first) + same_shape(want.last, got.last)
  else
    expected.lines.map(&:rstrip).reject(&:empty?).reject { |l| actual.include?(l) }.map { |l| "missing line: #{l}" }
  end
end

server = ServerProcess.start("--model", "test", "--metrics-listen=127.0.0.1:0")
metrics = server.log[/event=listening\b.*\bmetrics=(\S+)/, 1] or abort "no metrics address in the log"
failures = 0
Dir.mktmpdir do |dir|
  FileUtils.cp(File.join(ServerProcess.fixtures_dir, "images/img4_64x48.png"), File.join(dir, "photo.png"))
  commands = documented_commands(File.read(DOC))
  abort "no grpcurl commands found in #{DOC}" if commands.size < 6
  commands.each do |command, lang, expected|
    script = "set -o pipefail\ngrpcurl() { #{TOOL} \"$@\"; }\n#{command.gsub('localhost:50051', server.address).gsub('localhost:9464', metrics)}"
    out, status = Open3.capture2e("bash", "-c", script, chdir: dir)
    problems = status.success? ? compare(lang, expected, out) : ["exit #{status.exitstatus}: #{out}"]
    failures += 1 unless problems.empty?
    puts "#{problems.empty? ? 'ok  ' : 'FAIL'} #{command.lines.first.strip[0, 100]}"
    problems.each { |p| puts "       #{p}" }
  end
end
server.stop
abort "#{failures} documented command(s) failed" if failures.positive?
