#!/usr/bin/env bash
# `make demo`: build the browser module and run the aggregator pair in demo mode:
#   - the helper (crates/aggregator/demo-helper.toml) on http://127.0.0.1:8001/, in the
#     background: the key devices seal their seeds to, and its half of every sum;
#   - the leader (crates/aggregator/demo.toml): serves www/ (the demo news site at /demo/, the
#     snippet at /hearth.js), the catalog (/v1/catalog.json), the aggregator API (/v1/...) and
#     the measurement reports (/reports/).
# The helper stops when the leader does. The site is committed; `cargo run -p xtask --release --
# gen-demo` regenerates it. PORT=8080 make demo picks the leader's port (default 8000); the
# helper stays on 8001, the address the demo pages name in data-helper. The databases are
# target/demo/hearth.db, measure.db (the leader's), helper.db and helper-measure.db (the
# helper's), created by --init when missing (delete all four to start over).
set -euo pipefail
. "$(dirname "$0")/common.sh"

scripts/setup.sh
scripts/build-wasm.sh

log "building hearth-aggregator"
cargo build --release -p hearth-aggregator
PORT="${PORT:-8000}"

log "starting the helper on http://127.0.0.1:8001/"
target/release/hearth-aggregator --config crates/aggregator/demo-helper.toml --init &
HELPER=$!
trap 'kill "$HELPER" 2>/dev/null || true; wait "$HELPER" 2>/dev/null || true' EXIT
# Devices fetch the helper's key as soon as a round asks for a report: wait until it listens.
for _ in $(seq 100); do
  kill -0 "$HELPER" 2>/dev/null || die "the helper did not start"
  (exec 3<>/dev/tcp/127.0.0.1/8001) 2>/dev/null && break
  sleep 0.1
done

log "open http://127.0.0.1:$PORT/demo/  (Ctrl-C to stop)"
HEARTH_AGG__LISTEN="\"127.0.0.1:$PORT\"" target/release/hearth-aggregator --config crates/aggregator/demo.toml --init
