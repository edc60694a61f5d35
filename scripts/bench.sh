#!/usr/bin/env bash
# `make bench`: native ranking benchmark (xtask), then the browser benchmark
# (www/bench/ in headless Chromium), then the aggregator under upload load;
# writes target/bench/score.json, train.json and aggregator.json.
set -euo pipefail
. "$(dirname "$0")/common.sh"

scripts/setup.sh
scripts/build-wasm.sh

log "native: xtask bench-native"
rm -f target/bench/score-native.json # never merge figures from an older run
cargo run -p xtask --release -- bench-native --out target/bench/score-native.json

log "native: xtask bench-train"
rm -f target/bench/train-native.json
cargo run -p xtask --release -- bench-train --out target/bench/train-native.json

log "aggregator: xtask bench-aggregator (load generator in its own process)"
cargo build --release -p hearth-aggregator
rm -f target/bench/aggregator.json
cargo run -p xtask --release -- bench-aggregator --out target/bench/aggregator.json

log "browser: www/bench/"
node scripts/bench.mjs "$@"
