#!/usr/bin/env bash
# Every test (`make test`, and CI through .ci/run):
#   0. lint:     rustfmt and clippy (native and wasm32), warnings are errors
#   1. native:   cargo test --workspace
#   2. wasm:     hearth-core's suite in headless Chromium (test-wasm.sh)
#   3. browser:  build www/pkg, type-check the SDK (tsc --checkJs), then the Playwright
#                tests in tests/browser/
#                (module API, parity with native and onnxruntime-web, demo page served
#                by the aggregator in demo mode, server)
set -euo pipefail
. "$(dirname "$0")/common.sh"

scripts/setup.sh

log "lint: cargo fmt --check; clippy -D warnings, native and wasm32"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTFLAGS="$WASM_RUSTFLAGS" cargo clippy -p hearth -p hearth-core -p hearth-gpu --target wasm32-unknown-unknown --all-targets -- -D warnings

log "native: cargo test --workspace"
cargo test --workspace

scripts/test-wasm.sh

scripts/build-wasm.sh

log "types: tsc --checkJs on the SDK (www/tsconfig.json, www/hearth/tsconfig.json)"
tsc -p www
tsc -p www/hearth

log "browser: node --test tests/browser/"
cargo build -p hearth-aggregator # the demo test runs target/debug/hearth-aggregator
node --test tests/browser/

log "all tests passed"
