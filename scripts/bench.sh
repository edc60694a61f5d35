#!/usr/bin/env bash
# `make bench`: native ranking benchmark (xtask), then the browser benchmark
# (www/bench/ in headless Chromium); writes target/bench/score.json and train.json.
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

log "browser: www/bench/"
node scripts/bench.mjs "$@"
