#!/usr/bin/python3
"""A real Prometheus server scrapes a real moondream-server serving two variants of the
tiny fixture checkpoint (fp32 and int8); queries over the scraped data must return the
request count of each variant, and every query of the Grafana dashboard in deploy/
must refer only to exported metric names and evaluate without error.

  prometheus_scrape_test.py SERVER_BIN FIXTURES_DIR
"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools/pylib"))
from moondream_grpc import ROOT, ServerProcess, free_port, load_stubs, parse_metrics  # noqa: E402

DASHBOARD = ROOT / "deploy/grafana/moondream-compare.json"


def http_json(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read().decode())


def start_prometheus(metrics_port, workdir):
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: moondream\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(workdir / "prometheus.log").open("w"))
    return proc, f"http://127.0.0.1:{port}"


def query(prom, expr):
    return http_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def wait_for_counts(prom, expected, timeout_s=90):
    """Polls until sum by (model) of moondream_requests_total{code="OK"} reaches `expected`."""
    deadline = time.time() + timeout_s
    got = {}
    while time.time() < deadline:
        res = query(prom, 'sum by (model) (moondream_requests_total{code="OK"})')
        got = {r["metric"].get("model"): float(r["value"][1]) for r in res["data"]["result"]}
        if all(got.get(m, 0) >= n for m, n in expected.items()):
            return got
        time.sleep(1)
    raise AssertionError(f"Prometheus never saw the expected request counts {expected}; last {got}")


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["panels"], "dashboard has no panels"
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def check_dashboard(prom, families):
    """Every metric a panel names is exported, and every query evaluates."""
    exported = set(families)
    for title, expr in dashboard_exprs():
        for name in re.findall(r"\bmoondream_[a-z0-9_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in exported or base in exported, f"panel '{title}' uses unknown metric {name}"
        concrete = expr.replace("$__rate_interval", "1m").replace("$model", ".*")
        res = query(prom, concrete)
        assert res["status"] == "success", f"panel '{title}' query failed: {res}"


def main():
    server_bin, fixtures = sys.argv[1], pathlib.Path(sys.argv[2])
    import grpc
    pb2, pb2_grpc, _ = load_stubs()
    server = ServerProcess(server_bin, ["--model", "moondream2", "--model-dir", str(fixtures / "public-a/ckpt"),
                                        "--variants", "fp32,int8", "--threads", "1"])
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="prom-test-"))
    prom_proc = None
    try:
        server.wait_ready(timeout_s=300)
        prom_proc, prom = start_prometheus(server.metrics_port, workdir)
        channel = grpc.insecure_channel(server.target)
        stub = pb2_grpc.MoondreamStub(channel)
        names = sorted(m.name for m in stub.ListModels(pb2.ListModelsRequest()).models)
        assert names == ["moondream2", "moondream2-int8"], names
        image = pb2.Image(data=(fixtures / "images/img0_378x378.png").read_bytes())
        expected = {"moondream2": 2, "moondream2-int8": 1}
        for model, count in expected.items():
            for _ in range(count):
                stub.Caption(pb2.CaptionRequest(model=model, image=image,
                                                settings=pb2.GenerationSettings(max_tokens=4)), timeout=120)
        got = wait_for_counts(prom, expected)
        print(f"prometheus saw requests by model: {got}")
        res = query(prom, 'moondream_model_weight_bytes{component="text"}')
        precisions = {r["metric"]["model"]: r["metric"]["precision"] for r in res["data"]["result"]}
        assert precisions == {"moondream2": "fp32", "moondream2-int8": "int8"}, precisions
        encoded = stub.EncodeImage(pb2.EncodeImageRequest(model="moondream2-int8", image=image.data),
                                   timeout=120)
        res = query(prom, "moondream_model_image_cache_bytes")
        deadline = time.time() + 30
        while time.time() < deadline and not any(float(r["value"][1]) > 0 for r in res["data"]["result"]):
            time.sleep(1)
            res = query(prom, "moondream_model_image_cache_bytes")
        cached = {r["metric"]["model"]: float(r["value"][1]) for r in res["data"]["result"]}
        assert cached == {"moondream2": 0.0, "moondream2-int8": float(encoded.cached_bytes)}, cached
        with urllib.request.urlopen(server.metrics_url, timeout=10) as resp:
            _, families = parse_metrics(resp.read().decode())
        check_dashboard(prom, families)
        res = query(prom, 'moondream_stage_duration_seconds_count{stage="image_prefill"}')
        staged = sorted(r["metric"]["model"] for r in res["data"]["result"] if float(r["value"][1]) > 0)
        assert staged == ["moondream2", "moondream2-int8"], f"image_prefill stage by model: {staged}"
        print(f"dashboard: {len(dashboard_exprs())} queries resolve to exported metrics and evaluate")
    finally:
        if prom_proc:
            prom_proc.terminate()
            prom_proc.wait(timeout=30)
        code = server.stop()
    assert code == 0, f"server exited with {code}"
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
