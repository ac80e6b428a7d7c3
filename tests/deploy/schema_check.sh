#!/usr/bin/env bash
# Installs kubernetes-models + js-yaml (npm, once, into CACHE_DIR) and validates the
# rendered manifests in RENDER_DIR offline; a self-test first proves a broken Deployment fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
render="$1"; cache="$2"
if [ ! -f "$cache/node_modules/kubernetes-models/package.json" ]; then
  mkdir -p "$cache"
  npm install --prefix "$cache" --no-audit --no-fund --no-save --silent \
    kubernetes-models@5.1.0 js-yaml@4.1.0
fi
node "$here/k8s-schema-check.mjs" "$cache/node_modules" --self-test
node "$here/k8s-schema-check.mjs" "$cache/node_modules" "$render"/*.yaml
