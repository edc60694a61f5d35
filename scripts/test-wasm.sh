#!/usr/bin/env bash
# Runs hearth-core's test suite compiled to wasm32 inside headless Chromium.
#
# cargo runs each wasm test binary through wasm-bindgen-test-runner (the
# runner setting below), which serves it on a local port and drives Chromium
# through chromedriver. Tests opt in with
# `wasm_bindgen_test_configure!(run_in_browser)`; without it they would run in
# node instead. webdriver.json (repo root) tells chromedriver which binary and
# flags to use; the runner itself adds --headless and --no-sandbox.
#
# Extra arguments go to cargo test, e.g. `scripts/test-wasm.sh --test features`.
set -euo pipefail
. "$(dirname "$0")/common.sh"

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_WEBDRIVER_JSON="$ROOT/webdriver.json"
# Debug-profile tract is slow; the runner's default 20 s per binary is too tight.
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-300}"
export RUSTFLAGS="$WASM_RUSTFLAGS"

# chromedriver makes a Chromium profile (~110 MB) under $TMPDIR for each test binary and, killed
# by the runner, never removes it: give it a directory of its own and remove that afterwards.
mkdir -p "$ROOT/target"
TMPDIR="$(mktemp -d "$ROOT/target/wasm-test-tmp.XXXXXX")"
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

log "hearth-core tests in headless Chromium"
cargo test -p hearth-core --target wasm32-unknown-unknown "$@"
