#!/usr/bin/env ruby
# frozen_string_literal: true

# Checks the rendered Kubernetes manifests (and deploy/image/Dockerfile) against the real
# moondream-server binary:
#   * every --flag in a moondream-server container's args and every MOONDREAM_<FLAG>
#     variable names a flag of `moondream-server --help`;
#   * probes are kubelet's own (no exec: the image has nothing to run them): grpc probes on
#     the --listen port, httpGet probes on the --metrics-listen or --http-listen port (by
#     number or container port name), /readyz for startup and readiness, /healthz or
#     /readyz for liveness; either on a pod-IP listener, not 127.0.0.1; the Prometheus
#     annotation and the metrics containerPort at the --metrics-listen port;
#   * the server starts with each manifest's args and env (model swapped for the weight-free
#     `test` model, ports for free ones), and answers each probe as kubelet would ask it:
#     gRPC health SERVING, or HTTP 200.
# Usage: check_manifests.rb SERVER_BIN REPO_ROOT RENDERED.yaml...
require "yaml"
require "open3"
require "net/http"
require "grpc"
require "grpc/health/v1/health_services_pb"
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

def check_container(pod, container, label)
  args = container.fetch("args", [])
  args.each { |a| check(FLAGS.include?(flag_name(a)), "#{label}: #{a} is a server flag") }
  env = container.fetch("env", []).map { |e| e["name"] }.grep(/\AMOONDREAM_/)
  env.each { |e| check(FLAGS.include?(e.delete_prefix("MOONDREAM_").downcase), "#{label}: env #{e} is a server flag") }
  listen = flag_value(args, "listen") or return check(false, "#{label}: has --listen")
  listen_port = Integer(listen.split(":").last)
  metrics_port = Integer(flag_value(args, "metrics_listen").split(":").last)
  ports = container.fetch("ports", []).to_h { |p| [p["name"], p["containerPort"]] }
  probes = %w[startupProbe readinessProbe livenessProbe].filter_map do |probe|
    spec = container[probe] or next check(false, "#{label}: has a #{probe}")
    check_probe(probe, spec, args, ports, label)
  end
  check(ports["metrics"] == metrics_port, "#{label}: metrics containerPort = --metrics-listen port")
  annotation = pod.dig("metadata", "annotations", "prometheus.io/port")
  check(annotation.nil? || Integer(annotation) == metrics_port, "#{label}: prometheus.io/port = #{metrics_port}")
  start_like(container, probes, label)
end

# A probe's target as {kind:, flag:, path:} (nil when it is not a kubelet-native probe).
def check_probe(probe, spec, args, ports, label)
  if spec["grpc"]
    listen = flag_value(args, "listen")
    check(spec["grpc"]["port"] == Integer(listen.split(":").last), "#{label}: #{probe} grpc port = --listen port")
    check(!listen.start_with?("127."), "#{label}: #{probe} grpc probe needs a pod-IP listener (#{listen})")
    return { kind: :grpc, flag: "listen", service: spec["grpc"]["service"].to_s }
  end
  get = spec["httpGet"] or return check(false, "#{label}: #{probe} is httpGet or grpc (no exec)")
  port = get["port"].is_a?(String) ? ports[get["port"]] : get["port"]
  flag = %w[metrics_listen http_listen].find { |f| (v = flag_value(args, f)) && Integer(v.split(":").last) == port }
  check(flag, "#{label}: #{probe} httpGet port #{get['port']} is the --metrics-listen or --http-listen port")
  check(flag && !flag_value(args, flag).start_with?("127."), "#{label}: #{probe} httpGet needs a pod-IP listener")
  paths = probe == "livenessProbe" ? %w[/healthz /readyz] : %w[/readyz]
  check(paths.include?(get["path"]), "#{label}: #{probe} path #{get['path']} is one of #{paths.join(', ')}")
  { kind: :http, flag: flag, path: get["path"] }
end

# Answers one probe against the running server as kubelet would.
def probe_ok?(probe, server, log)
  if probe[:kind] == :grpc
    stub = Grpc::Health::V1::Health::Stub.new(server.address, :this_channel_is_insecure)
    request = Grpc::Health::V1::HealthCheckRequest.new(service: probe[:service])
    return stub.check(request, deadline: Time.now + 5).status == :SERVING
  end
  address = log[/event=listening.* #{probe[:flag] == 'http_listen' ? 'http' : 'metrics'}=(\S+)/, 1]
  host, port = address.split(":")
  Net::HTTP.get_response(host, probe[:path], Integer(port)).code == "200"
end

# Starts the server with the manifest's args/env (test model, free ports) and probes it.
def start_like(container, probes, label)
  moved = %w[listen metrics_listen http_listen model model_dir]
  keep = container["args"].reject { |a| moved.include?(flag_name(a)) }
  free = %w[metrics_listen http_listen].select { |f| flag_value(container["args"], f) }.map { |f| "--#{f}=127.0.0.1:0" }
  env = container.fetch("env", []).to_h { |e| [e["name"], e["value"] || "1"] }
  env.delete("MOONDREAM_PRECISION") # the test model has no weights to convert
  saved = env.keys.to_h { |k| [k, ENV[k]] }
  env.each { |k, v| ENV[k] = v }
  server = ServerProcess.start("--model=test", *keep, *free)
  probes.each do |probe|
    check(probe_ok?(probe, server, server.log), "#{label}: server started with #{keep.join(' ')} answers its #{probe[:kind]} probe #{probe[:path]}")
  end
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
