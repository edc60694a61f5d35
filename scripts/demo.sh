#!/usr/bin/env bash
# `make demo`: build the browser module and run the aggregator in demo mode: one
# process serves www/ (the demo news site at /demo/, the snippet at /hearth.js),
# the catalog (/v1/catalog.json) and the aggregator API (/v1/...). The site is
# committed; `cargo run -p xtask --release -- gen-demo` regenerates it.
# PORT=8080 make demo picks the port (default 8000); the database is
# target/demo/hearth.db (delete it to start over).
set -euo pipefail
. "$(dirname "$0")/common.sh"

scripts/setup.sh
scripts/build-wasm.sh

log "building hearth-aggregator"
cargo build --release -p hearth-aggregator
PORT="${PORT:-8000}"
log "open http://127.0.0.1:$PORT/demo/  (Ctrl-C to stop)"
HEARTH_AGG__LISTEN="\"127.0.0.1:$PORT\"" exec target/release/hearth-aggregator --config crates/aggregator/demo.toml
