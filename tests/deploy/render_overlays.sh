#!/usr/bin/env bash
# Renders every kustomize overlay under deploy/kustomize/overlays with `kubectl kustomize`
# into OUT_DIR/<overlay>.yaml (later tests check those files). Fails on any render error.
set -euo pipefail
repo="$1"; out="$2"
mkdir -p "$out"
rm -f "$out"/*.yaml
count=0
for dir in "$repo"/deploy/kustomize/overlays/*/; do
  name="$(basename "$dir")"
  kubectl kustomize "$dir" > "$out/$name.yaml"
  grep -q '^kind: Deployment$' "$out/$name.yaml" || { echo "$name: no Deployment rendered" >&2; exit 1; }
  echo "rendered $name ($(grep -c '^kind:' "$out/$name.yaml") objects)"
  count=$((count + 1))
done
[ "$count" -gt 0 ] || { echo "no overlays found" >&2; exit 1; }
