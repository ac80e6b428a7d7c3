#!/usr/bin/env bash
# Runs bench/stages/bench_stages on the tiny fixture checkpoint (fp32, bf16, int8 under every
# ISA this CPU runs; one repeat) and checks its JSON: every field, the crop count (from the
# fixture's upstream crops), the median/min arithmetic, the per-ISA speed-up ratios, the INT8
# decode bytes against the config, the probe, the roofline fractions and each target's
# PASS/FAIL/INVALID/SKIP; then a decode-only INT8 avx2 run (the other stages and targets
# skipped) and bad flags (exit 2).
#   bench_stages_smoke.sh BENCH_STAGES_BIN FIXTURES_DIR
set -euo pipefail
bin="$1" fixtures="$2"
ckpt="$fixtures/public-a/ckpt" image="img0_378x378"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
export GOMP_SPINCOUNT=100000
"$bin" --model-dir "$ckpt" --image "$fixtures/images/$image.png" --repeats 1 --decode-steps 3 \
  --probe-passes 2 --json "$out/all.json" >"$out/all.txt" 2>"$out/all.err" || { cat "$out/all.err"; exit 1; }
"$bin" --model-dir "$ckpt" --image "$fixtures/images/$image.png" --precisions int8 --int8-isas avx2 --stages decode \
  --repeats 2 --decode-steps 2 --probe-passes 2 --json "$out/decode.json" >"$out/decode.txt" 2>"$out/decode.err" ||
  { cat "$out/decode.err"; exit 1; }
rc=0
"$bin" --model-dir "$ckpt" --image "$fixtures/images/$image.png" --stages nope >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || { echo "bad --stages: exit $rc, want 2"; exit 1; }
rc=0
"$bin" --model-dir "$ckpt" --image "$fixtures/images/$image.png" --int8-isas nope >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || { echo "bad --int8-isas: exit $rc, want 2"; exit 1; }
/usr/bin/python3 "$(dirname "$0")/check_bench_stages.py" "$out" "$ckpt/config.json" \
  "$fixtures/crops/$image.crops.png"
