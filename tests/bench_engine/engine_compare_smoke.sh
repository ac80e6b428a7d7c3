#!/usr/bin/env bash
# 1. bench/engine-compare/pytorch_eager.py on the tiny fixtures must be the same model as the
#    upstream reference: crops sha256 and greedy caption token ids equal golden.json
#    (public-a img1 640x480 "normal": 2x4 tiling, 9 crops; public-b img0 378x378 "short").
# 2. bench/engine-compare/engine-compare must run end to end (eager fp32, plus our fp32 when a
#    moondream-cli path is given as $3) and write its markdown report.
set -euo pipefail
fixtures="$1" root="$2" cli="${3:-}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
eager="$root/bench/engine-compare/pytorch_eager.py"
"$eager" --model-dir "$fixtures/public-a/ckpt" --image "$fixtures/images/img1_640x480.png" \
  --length normal --max-tokens 20 --threads 1 > "$out/a.json"
"$eager" --model-dir "$fixtures/public-b/ckpt" --image "$fixtures/images/img0_378x378.png" \
  --length short --max-tokens 20 --threads 1 > "$out/b.json"
/usr/bin/python3 - "$fixtures" "$out" <<'PY'
import json, pathlib, sys
fixtures, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for ckpt, img, task in [("a", "img1_640x480", "caption_normal"), ("b", "img0_378x378", "caption_short")]:
    got = json.loads((out / f"{ckpt}.json").read_text())
    golden = json.loads((fixtures / f"public-{ckpt}/golden/golden.json").read_text())["images"][img]
    assert got["resize"] != "pil-lanczos", "libvips not found: crops cannot match the reference"
    assert got["crops_sha256"] == golden["crops_sha256"], (ckpt, img, "crops differ")
    assert got["n_crops"] == golden["tiling"][0] * golden["tiling"][1] + 1, got["n_crops"]
    want = golden["generate"][task]["token_ids"]
    assert got["token_ids"] == want, (ckpt, img, got["token_ids"], want)
    assert got["decode_steps"] == len(want), got["decode_steps"]
    for key in ("image_decode_ms", "vision_encode_ms", "prefill_ms", "decode_ms", "total_ms",
                "load_ms", "peak_rss_bytes"):
        assert got[key] > 0, key
    print(f"public-{ckpt} {img} {task}: {len(want)} golden token ids reproduced")
PY
ours=""
[ -n "$cli" ] && ours="fp32"
"$root/bench/engine-compare/engine-compare" --model-dir "$fixtures/public-a/ckpt" \
  --image "$fixtures/images/img0_378x378.png" --cli "${cli:-/nonexistent}" --ours "$ours" \
  --eager fp32 --threads 1 --max-tokens 4 --out-file "$out/report.md" > "$out/table.md" 2>/dev/null
grep -q "^| decode tokens/s | " "$out/report.md"
grep -q "^| same token ids as eager fp32 | yes" "$out/report.md"
if [ -n "$cli" ]; then
  grep -q "^| stage | ours fp32 | eager fp32 |" "$out/report.md"
  grep -q "^| same token ids as eager fp32 | yes | yes |" "$out/report.md"
  grep -Eq "^\| CPU kernels \(cpu_isa\) \| [a-z0-9-]+ \| – \|$" "$out/report.md"
fi
echo "engine-compare report ok"
