#!/usr/bin/env bash
# `make bench`: native ranking benchmark (xtask), then the browser benchmark
# (www/bench/ in headless Chromium), then the aggregator under upload load and under attack,
# then private measurement; writes target/bench/score.json, train.json, aggregator.json,
# attack.json and measure.json.
#
#   scripts/bench.sh [train | aggregator | measure] [scripts/bench.mjs flags]
#
# `train`: only the device's side (native and browser training, upload builds and sizes:
# train.json). `aggregator`: only the load generators (plaintext single server and secure-
# aggregation leader + helper, on SQLite and on a throwaway PostgreSQL cluster with one replica
# and with three behind nginx, then PostgreSQL's work per upload and a sizing estimate:
# aggregator.json; slow, idle and download floods beside honest uploads: attack.json), no
# browser. `measure`: only private measurement (report build natively and in the browser,
# report size, verify + aggregate per server, beside the prio crate's own figures in the same
# run: measure.json). Without any, everything.
set -euo pipefail
. "$(dirname "$0")/common.sh"

ONLY=all
case "${1:-}" in
  train | aggregator | measure)
    ONLY="$1"
    shift
    ;;
esac

scripts/setup.sh
[ "$ONLY" = aggregator ] || scripts/build-wasm.sh

if [ "$ONLY" = all ]; then
  log "native: xtask bench-native"
  rm -f target/bench/score-native.json # never merge figures from an older run
  cargo run -p xtask --release -- bench-native --out target/bench/score-native.json
fi

if [ "$ONLY" = all ] || [ "$ONLY" = train ]; then
  log "native: xtask bench-train"
  rm -f target/bench/train-native.json
  cargo run -p xtask --release -- bench-train --out target/bench/train-native.json
fi

if [ "$ONLY" = all ] || [ "$ONLY" = measure ]; then
  log "measurement: xtask bench-measure (native, prio's own figures, the browser's fixture)"
  rm -f target/bench/measure-native.json target/bench/measure-fixture.json
  cargo run -p xtask --release -- bench-measure --out target/bench/measure-native.json
fi

if [ "$ONLY" = all ] || [ "$ONLY" = aggregator ]; then
  log "aggregator: xtask bench-aggregator (load generator in its own process)"
  cargo build --release -p hearth-aggregator
  rm -f target/bench/aggregator.json
  cargo run -p xtask --release -- bench-aggregator --out target/bench/aggregator.json
  log "aggregator: xtask attack (hostile connections beside honest uploads)"
  rm -f target/bench/attack.json
  cargo run -p xtask --release -- attack --out target/bench/attack.json
fi

case "$ONLY" in
  all)
    log "browser: www/bench/"
    node scripts/bench.mjs "$@"
    ;;
  train)
    log "browser: www/bench/ (training and upload builds only)"
    node scripts/bench.mjs --only train "$@"
    ;;
  measure)
    log "browser: www/bench/?mode=measure (measurement reports only)"
    node scripts/bench.mjs --only measure "$@"
    ;;
esac
