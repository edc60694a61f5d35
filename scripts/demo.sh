#!/usr/bin/env bash
# `make demo`: build the module and serve www/ (demo page at /demo/).
# PORT=8080 make demo picks the port (default 8000).
set -euo pipefail
. "$(dirname "$0")/common.sh"

scripts/setup.sh
scripts/build-wasm.sh
# Demo data (www/demo/catalog.json, sample-profile.json) is committed; the
# xtask that regenerates it runs when it exists.
if grep -q '"gen-demo"' xtask/src/main.rs; then
  cargo run -p xtask --release -- gen-demo
fi

PORT="${PORT:-8000}"
log "open http://127.0.0.1:$PORT/demo/  (Ctrl-C to stop)"
exec node scripts/serve.mjs --port "$PORT" --quiet
