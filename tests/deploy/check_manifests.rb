#!/usr/bin/env ruby
# frozen_string_literal: true

# Checks the rendered Kubernetes manifests (and deploy/image/Dockerfile) against the real
# moondream-server binary:
#   * every --flag in a moondream-server container's args and every MOONDREAM_<FLAG>
#     variable names a flag of `moondream-server --help`;
#   * probes point at the --listen port (exec probes: grpc-health-probe -addr = --listen;
#     grpc probes: port = --listen port), the Prometheus annotation and the metrics
#     containerPort at the --metrics-listen port;
#   * the server starts with each manifest's args and env (model swapped for the weight-free
#     `test` model, ports for free ones), and grpc-health-probe reports it SERVING.
# Usage: check_manifests.rb SERVER_BIN REPO_ROOT RENDERED.yaml...
require "yaml"
require "open3"
require_relative "../../clients/ruby/test/support/server_process"

bin, repo, *files = ARGV
@failures = []
def check(ok, message)
  @failures << message unless ok
  puts "#{ok ? 'ok  ' : 'FAIL'} #{message}"
end

def server_flags(bin)
  %w[--help --helpfull].each do |arg|
    out, = Open3.capture2e(bin, arg)
    flags = out.scan(/^\s*--([a-z0-9_]+) \(/).flatten
    return flags if flags.include?("listen")
  end
  abort "could not read flags from #{bin} --help"
end

def flag_name(arg) = arg.sub(/\A--/, "").split("=", 2).first.tr("-", "_")
def flag_value(args, name) = args.map { |a| a.split("=", 2) }.find { |k, _| flag_name(k) == name }&.last

FLAGS = server_flags(bin)
PROBE = File.join(repo, "deploy/image/grpc-health-probe")

def check_container(pod, container, label)
  args = container.fetch("args", [])
  args.each { |a| check(FLAGS.include?(flag_name(a)), "#{label}: #{a} is a server flag") }
  env = container.fetch("env", []).map { |e| e["name"] }.grep(/\AMOONDREAM_/)
  env.each { |e| check(FLAGS.include?(e.delete_prefix("MOONDREAM_").downcase), "#{label}: env #{e} is a server flag") }
  listen = flag_value(args, "listen") or return check(false, "#{label}: has --listen")
  listen_port = Integer(listen.split(":").last)
  metrics_port = Integer(flag_value(args, "metrics_listen").split(":").last)
  %w[startupProbe readinessProbe livenessProbe].each do |probe|
    spec = container[probe] or next check(false, "#{label}: has a #{probe}")
    if spec["grpc"]
      check(spec["grpc"]["port"] == listen_port, "#{label}: #{probe} grpc port = --listen port #{listen_port}")
      check(!listen.start_with?("127."), "#{label}: #{probe} grpc probe needs a pod-IP listener (#{listen})")
    else
      cmd = spec.dig("exec", "command") || []
      check(cmd.first == "grpc-health-probe" && cmd[cmd.index("-addr").to_i + 1] == listen,
            "#{label}: #{probe} execs grpc-health-probe -addr #{listen}")
    end
  end
  ports = container.fetch("ports", []).to_h { |p| [p["name"], p["containerPort"]] }
  check(ports["metrics"] == metrics_port, "#{label}: metrics containerPort = --metrics-listen port")
  annotation = pod.dig("metadata", "annotations", "prometheus.io/port")
  check(annotation.nil? || Integer(annotation) == metrics_port, "#{label}: prometheus.io/port = #{metrics_port}")
  start_like(container, label)
end

# Starts the server with the manifest's args/env (test model, free ports) and probes it.
def start_like(container, label)
  keep = container["args"].reject { |a| %w[listen metrics_listen model model_dir].include?(flag_name(a)) }
  env = container.fetch("env", []).to_h { |e| [e["name"], e["value"] || "1"] }
  env.delete("MOONDREAM_PRECISION") # the test model has no weights to convert
  saved = env.keys.to_h { |k| [k, ENV[k]] }
  env.each { |k, v| ENV[k] = v }
  server = ServerProcess.start("--model=test", *keep)
  out, status = Open3.capture2e(PROBE, "-addr", server.address)
  check(status.success?, "#{label}: server starts with #{keep.join(' ')} and probes SERVING (#{out.strip})")
rescue ServerProcess::StartError => e
  check(false, "#{label}: server starts with the manifest's flags: #{e.message}")
ensure
  server&.stop
  saved&.each { |k, v| ENV[k] = v }
end

# The "restricted" Pod Security Standard (v1.32), for every container of the pod.
RESTRICTED_VOLUMES = %w[configMap csi downwardAPI emptyDir ephemeral persistentVolumeClaim projected secret].freeze
def check_restricted(pod, label)
  spec = pod["spec"]
  psc = spec.fetch("securityContext", {})
  %w[hostNetwork hostPID hostIPC].each { |k| check(!spec[k], "#{label}: no #{k} (restricted)") }
  spec.fetch("volumes", []).each do |v|
    type = (v.keys - ["name"]).first
    check(RESTRICTED_VOLUMES.include?(type), "#{label}: volume #{v['name']} is #{type} (restricted)")
  end
  check(spec["automountServiceAccountToken"] == false, "#{label}: automountServiceAccountToken false")
  (spec.fetch("initContainers", []) + spec.fetch("containers", [])).each do |c|
    csc = c.fetch("securityContext", {})
    id = "#{label} #{c['name']}"
    check((csc["runAsNonRoot"] || psc["runAsNonRoot"]) == true, "#{id}: runAsNonRoot (restricted)")
    check(csc["runAsUser"] != 0 && psc["runAsUser"] != 0, "#{id}: not uid 0 (restricted)")
    seccomp = (csc["seccompProfile"] || psc["seccompProfile"] || {})["type"]
    check(%w[RuntimeDefault Localhost].include?(seccomp), "#{id}: seccompProfile RuntimeDefault (restricted)")
    check(csc["allowPrivilegeEscalation"] == false, "#{id}: allowPrivilegeEscalation false (restricted)")
    check(!csc["privileged"], "#{id}: not privileged (restricted)")
    caps = csc.fetch("capabilities", {})
    check(caps.fetch("drop", []).include?("ALL"), "#{id}: drops ALL capabilities (restricted)")
    check((caps.fetch("add", []) - ["NET_BIND_SERVICE"]).empty?, "#{id}: adds no capability (restricted)")
    check(c.fetch("ports", []).none? { |p| p["hostPort"] }, "#{id}: no hostPort (restricted)")
  end
end

files.each do |file|
  YAML.load_stream(File.read(file)).compact.each do |doc|
    pod = doc.dig("spec", "template") or next
    check_restricted(pod, "#{File.basename(file)} #{doc['kind']}/#{doc.dig('metadata', 'name')}")
    (pod["spec"].fetch("initContainers", []) + pod["spec"].fetch("containers", [])).each do |c|
      next unless c["image"].to_s.include?("moondream-server")

      check_container(pod, c, "#{File.basename(file)} #{doc['kind']}/#{doc.dig('metadata', 'name')}")
    end
  end
end

docker_env = File.read(File.join(repo, "deploy/image/Dockerfile")).scan(/\bMOONDREAM_([A-Z_]+)=/).flatten
docker_env.each { |e| check(FLAGS.include?(e.downcase), "Dockerfile: ENV MOONDREAM_#{e} is a server flag") }
abort "#{@failures.size} check(s) failed" unless @failures.empty?
