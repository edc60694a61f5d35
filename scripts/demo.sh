#!/usr/bin/env bash
# `make demo`: build the browser module and run the aggregator in demo mode: one
# process serves www/ (demo page at /demo/) and the aggregator API (/v1/...).
# PORT=8080 make demo picks the port (default 8000); the database is
# target/demo/hearth.db (delete it to start over).
set -euo pipefail
. "$(dirname "$0")/common.sh"

scripts/setup.sh
scripts/build-wasm.sh
# Demo data (www/demo/catalog.json, sample-profile.json) is committed; the
# xtask that regenerates it runs when it exists.
if grep -q '"gen-demo"' xtask/src/main.rs; then
  cargo run -p xtask --release -- gen-demo
fi

log "building hearth-aggregator"
cargo build --release -p hearth-aggregator
PORT="${PORT:-8000}"
log "open http://127.0.0.1:$PORT/demo/  (Ctrl-C to stop)"
HEARTH_AGG__LISTEN="\"127.0.0.1:$PORT\"" exec target/release/hearth-aggregator --config crates/aggregator/demo.toml
