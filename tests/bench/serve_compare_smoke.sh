#!/usr/bin/env bash
# Runs bench/serve-compare end to end on the tiny fixture checkpoint (fp32 vs int8) and
# checks that it wrote the report, its JSON and every chart.
set -euo pipefail
server_bin="$1" fixtures="$2" root="$3"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$root/bench/serve-compare/serve-compare" --server-bin "$server_bin" \
  --model-dir "$fixtures/public-a/ckpt" --fixtures "$fixtures" --variants fp32,int8 \
  --requests 4 --concurrency 2 --threads 1 --max-tokens 4 --out "$out" 2>/dev/null
md="$(ls "$out"/*.md)"
for chart in stages decode memory weights; do
  ls "$out"/*-"$chart".png >/dev/null
done
/usr/bin/python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
data = json.loads(next(out.glob("*.json")).read_text())
models = [r["model"] for r in data["results"]]
assert models == ["moondream2", "moondream2-int8"], models
for r in data["results"]:
    assert r["peak_rss_bytes"] > 0, r["model"]
    assert r["cpu_isa"], r["model"]  # GetModel's kernel ISA, in every bench output
    for conc, rows in r["requests"].items():
        assert len(rows) == 4, (r["model"], conc, len(rows))
        assert all(row["total_ms"] > 0 for row in rows), r["model"]
PY
grep -q "moondream2-int8" "$md"
grep -Eq "^\| CPU kernels \(cpu_isa\) \| [a-z0-9-]+ \| [a-z0-9-]+ \|$" "$md"
echo "serve-compare wrote $(ls "$out" | wc -l) files"
