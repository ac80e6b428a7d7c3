"""Shared helpers for the project's Python tools and tests (Debian /usr/bin/python3 with
python3-grpcio and python3-protobuf): generated stubs, health checks, a server process.

Stubs are generated at run time into a temp dir with protoc + grpc_python_plugin, so
nothing generated is committed and they can never be stale.
"""
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
_STUBS = None


def load_stubs():
    """Returns (moondream_pb2, moondream_pb2_grpc, health_pb2)."""
    global _STUBS
    if _STUBS is None:
        out = tempfile.mkdtemp(prefix="moondream-stubs-")
        subprocess.run(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}",
                        "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                        "moondream/v1/moondream.proto"], check=True)
        # Flat (no grpc/ package directory: it would shadow the real grpc module).
        subprocess.run(["protoc", "-I/usr/share/grpc-proto/grpc/health/v1", f"--python_out={out}",
                        "health.proto"], check=True)
        sys.path.insert(0, out)
        from moondream.v1 import moondream_pb2, moondream_pb2_grpc
        import health_pb2
        _STUBS = (moondream_pb2, moondream_pb2_grpc, health_pb2)
    return _STUBS


def health_ok(channel):
    """grpc.health.v1 Check of the whole server; False while loading or unreachable."""
    import grpc
    health_pb2 = load_stubs()[2]
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                response_deserializer=health_pb2.HealthCheckResponse.FromString)
    try:
        return check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A moondream-server child on free loopback ports; `target` and `metrics_url` once started."""

    def __init__(self, binary, args, log_path=None):
        self.port, self.metrics_port = free_port(), free_port()
        cmd = [str(binary), "--listen", f"127.0.0.1:{self.port}",
               "--metrics-listen", f"127.0.0.1:{self.metrics_port}"] + list(args)
        self.log = open(log_path or tempfile.mktemp(prefix="moondream-server-", suffix=".log"), "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self.target = f"127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        self.log.flush()
        return pathlib.Path(self.log.name).read_text(errors="replace")

    def wait_ready(self, timeout_s=900):
        import grpc
        channel = grpc.insecure_channel(self.target)
        deadline = time.time() + timeout_s
        try:
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
                if health_ok(channel):
                    return
                time.sleep(0.2)
        finally:
            channel.close()
        raise RuntimeError(f"server not SERVING after {timeout_s}s:\n{self.log_text()[-3000:]}")

    def stop(self, timeout_s=120):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def parse_metrics(text):
    """{(name, labels-string): value} and {family: type} from a Prometheus exposition."""
    samples, types = {}, {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            types[m.group(1)] = m.group(2)
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name, _, labels = key.partition("{")
        samples[(name, "{" + labels if labels else "")] = float(value)
    return samples, types
