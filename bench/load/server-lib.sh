# Sourced by bench/load/memory-flood and bench/load/soak: starts moondream-server on free
# loopback ports and waits for it to serve.
#   start_server LOGFILE ARGS...   sets SERVER_PID, GRPC_ADDR, HTTP_ADDR, METRICS_ADDR and
#                                  SERVER_CPU_ISA (the first model's kernel ISA, "-" if none)
#   rss_mib                        the server's VmRSS in MiB
#   stop_server                    SIGKILL (the caller's EXIT trap calls it)
# Needs SERVER (the binary); SERVER_WRAPPER (an optional array, e.g. qemu-aarch64 and its
# arguments in scripts/cross-arm64) runs it. The server's stderr (logfmt) goes to LOGFILE.
SERVER_PID=""
SERVER_WRAPPER=("${SERVER_WRAPPER[@]}")
start_server() {
  local log="$1"; shift
  "${SERVER_WRAPPER[@]}" "$SERVER" --listen=127.0.0.1:0 --http-listen=127.0.0.1:0 --metrics-listen=127.0.0.1:0 "$@" 2>"$log" &
  SERVER_PID=$!
  local _
  for _ in $(seq 1 600); do
    grep -q 'event=serving' "$log" && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; return 1; }
    sleep 0.5
  done
  grep -q 'event=serving' "$log" || { echo "server not serving after 300 s" >&2; return 1; }
  local listening
  listening="$(grep -m1 'event=listening' "$log")"
  GRPC_ADDR="$(sed -E 's/.* address=([^ ]+).*/\1/' <<<"$listening")"
  HTTP_ADDR="$(sed -E 's/.* http=([^ ]+).*/\1/' <<<"$listening")"
  METRICS_ADDR="$(sed -E 's/.* metrics=([^ ]+).*/\1/' <<<"$listening")"
  SERVER_CPU_ISA="$(grep -m1 -o 'event=model_loaded .*cpu_isa=[a-z0-9-]*' "$log" | sed 's/.*cpu_isa=//' || true)"
  SERVER_CPU_ISA="${SERVER_CPU_ISA:--}"
}
rss_mib() { awk '/^VmRSS:/ { printf "%d", $2 / 1024 }' "/proc/$SERVER_PID/status"; }
stop_server() { [ -z "$SERVER_PID" ] || kill -9 "$SERVER_PID" 2>/dev/null || true; }
