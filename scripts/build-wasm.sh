#!/usr/bin/env bash
# Builds the browser module into www/pkg/ (hearth.js, hearth_bg.wasm, hearth.d.ts).
#
#   cargo (profile wasm-release, +simd128) -> wasm-bindgen --target web -> wasm-opt -O3
#
# Notes:
# - Keep debug info/producers in the cargo output and strip only at the end:
#   `strip = true` in cargo also drops the target_features section that
#   wasm-bindgen reads.
# - wasm-opt comes from the npm package `binaryen` (node_modules/.bin);
#   Debian's binaryen is too old for current rustc output.
# - Size: cargo opt-level "s" (profile wasm-release) is what keeps the module
#   under the 1.5 MB gzip budget; measured after wasm-opt -O3 and gzip -9,
#   opt-level 3 gave 1.73 MB, "s" 1.19 MB, "z" 0.98 MB. `make bench` reports
#   the size and the ranking speed of what this script builds.
set -euo pipefail
. "$(dirname "$0")/common.sh"

OUT="$ROOT/www/pkg"
WASM="$ROOT/target/wasm32-unknown-unknown/wasm-release/hearth.wasm"

log "cargo build (wasm32, profile wasm-release: opt-level s, simd128)"
RUSTFLAGS="$WASM_RUSTFLAGS" cargo build -p hearth --profile wasm-release --target wasm32-unknown-unknown

log "wasm-bindgen --target web"
rm -rf "$OUT"
wasm-bindgen --target web --out-dir "$OUT" "$WASM"
# wasm-bindgen declares `[Symbol.dispose](): void` on every class, which compiles only with
# TypeScript's esnext.disposable library: a publisher's strict browser project (ES2022 and DOM,
# no @types/node) fails on it (TS2550), through www/hearth.d.ts's import of these types. The glue
# sets the method only where the browser has Symbol.dispose, so the line promises what not every
# browser has; `free()` stays declared (tests/browser/types.test.mjs compiles it in isolation).
sed -i '/^ *\[Symbol\.dispose\](): void;$/d' "$OUT/hearth.d.ts"
if grep -q 'Symbol\.dispose' "$OUT/hearth.d.ts"; then die "wasm-bindgen declares Symbol.dispose in a new form: update build-wasm.sh"; fi

# Features rustc 1.95 emits by default for wasm32 (bulk memory, sign-ext,
# non-trapping float-to-int, multivalue, reference types, mutable globals)
# plus simd128 which we enabled; wasm-opt must be told about each one.
OPT_ARGS=("${WASM_OPT_LEVEL:--O3}"
  --enable-simd --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int
  --enable-mutable-globals --enable-multivalue --enable-reference-types
  --strip-debug --strip-producers)

# npm's wasm-opt is binaryen compiled to wasm: single-threaded, ~6 min on this
# module. Its output is cached by (input, wasm-opt version, flags), so a build
# whose Rust did not change skips it.
CACHE="$ROOT/target/wasm-opt-cache"
key="$( { sha256sum <"$OUT/hearth_bg.wasm"; wasm-opt --version; echo "${OPT_ARGS[*]}"; } | sha256sum | cut -c1-32)"
if [ -f "$CACHE/$key.wasm" ]; then
  log "wasm-opt: cached result ($key)"
else
  log "wasm-opt ${OPT_ARGS[0]} (several minutes)"
  mkdir -p "$CACHE"
  wasm-opt "${OPT_ARGS[@]}" "$OUT/hearth_bg.wasm" -o "$CACHE/$key.tmp"
  rm -f "$CACHE"/*.wasm # keep only the latest
  mv "$CACHE/$key.tmp" "$CACHE/$key.wasm"
fi
cp "$CACHE/$key.wasm" "$OUT/hearth_bg.wasm"

for f in hearth.js hearth_bg.wasm hearth.d.ts; do
  [ -s "$OUT/$f" ] || die "missing $OUT/$f"
done
log "$(wc -c <"$OUT/hearth_bg.wasm") bytes $OUT/hearth_bg.wasm"
