# Sourced by the other scripts: repo root, PATH, and small helpers.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# cargo-installed tools (wasm-bindgen, wasm-bindgen-test-runner) and npm bins (wasm-opt).
export PATH="$HOME/.cargo/bin:$ROOT/node_modules/.bin:$PATH"

# Browser used by every browser-driven step (tests, bench, wasm tests).
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"

# Flags every wasm32 build shares. `cargo test --target wasm32...` and the
# release build use the same ones, so the tests exercise the shipped SIMD code
# and cargo does not rebuild the world when switching between the two.
# Appended to any RUSTFLAGS the caller already set.
WASM_RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+simd128"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Runs a command silently; on failure prints its full output and exits.
quiet() {
  local out rc=0
  out="$(mktemp)"
  "$@" >"$out" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    cat "$out" >&2
    rm -f "$out"
    die "command failed (exit $rc): $*"
  fi
  rm -f "$out"
}

# Version of a package pinned in Cargo.lock (first match).
locked_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

# Commit being measured, for benchmark records.
commit_id() {
  git rev-parse --verify --quiet HEAD 2>/dev/null || echo uncommitted
}
