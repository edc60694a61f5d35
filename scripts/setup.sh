#!/usr/bin/env bash
# Installs what this machine lacks for building and testing Hearth; each step
# is skipped when already satisfied, so it is cheap to run before every target.
#   - rustup components rustfmt and clippy
#   - rustup target wasm32-unknown-unknown
#   - wasm-bindgen-cli at exactly the wasm-bindgen version in Cargo.lock
#     (the CLI refuses modules built by another version)
#   - Debian chromium + chromium-driver (headless browser for all browser tests),
#     fonts-dejavu-core (text in hearth-sim's plots) and mesa-vulkan-drivers
#     (llvmpipe: the Vulkan adapter hearth-gpu's native tests run on)
#   - Debian postgresql (initdb, pg_ctl and postgres for hearth-testpg's throwaway
#     clusters, which the aggregator's PostgreSQL tests and benchmarks run on) and
#     nginx (the reverse proxy in front of the aggregator in its tests and benchmarks)
#   - npm devDependencies pinned in package-lock.json (playwright-core,
#     onnxruntime-web, binaryen's wasm-opt)
set -euo pipefail
. "$(dirname "$0")/common.sh"

command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm (node >= 20) are required"
node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' \
  || die "node >= 20 required, found $(node --version)"

# 0. rustfmt and clippy, which make test runs before any test.
for component in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$component"; then
    log "adding rust component $component"
    quiet rustup component add "$component"
  fi
done

# 1. wasm32 target.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding rust target wasm32-unknown-unknown"
  quiet rustup target add wasm32-unknown-unknown
fi

# 2. wasm-bindgen-cli matching Cargo.lock (also provides wasm-bindgen-test-runner).
want="$(locked_version wasm-bindgen)"
[ -n "$want" ] || die "wasm-bindgen not found in Cargo.lock"
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" != "$want" ]; then
  log "installing wasm-bindgen-cli $want (found: ${have:-none}); takes a few minutes"
  # No --locked: the CLI's own lockfile pins crates that no longer build on current Rust.
  quiet cargo install wasm-bindgen-cli --version "$want" --force
fi

# 3. Chromium + chromedriver from Debian (tools cannot download browsers here),
# the DejaVu font hearth-sim's plots (and their test) draw text with, and Mesa's
# software Vulkan driver for hearth-gpu's tests (they fail without an adapter).
if [ ! -x "$CHROMIUM" ] || [ ! -x "$CHROMEDRIVER" ] || [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] \
   || ! compgen -G '/usr/share/vulkan/icd.d/lvp_icd.*.json' >/dev/null; then
  log "installing chromium, chromium-driver, fonts-dejavu-core and mesa-vulkan-drivers with apt"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  quiet $sudo apt-get update
  quiet $sudo apt-get install -y --no-install-recommends chromium chromium-driver fonts-dejavu-core mesa-vulkan-drivers
fi

# 4. PostgreSQL and nginx from Debian. hearth-testpg runs the server binaries from
# /usr/lib/postgresql/<version>/bin (not on PATH); nginx's is /usr/sbin/nginx. The
# `nginx` package itself has the binary (nginx-light only adds a module on top).
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || [ ! -x /usr/sbin/nginx ]; then
  log "installing postgresql and nginx with apt"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  quiet $sudo apt-get update
  quiet $sudo apt-get install -y --no-install-recommends postgresql nginx
  # Tests start their own throwaway servers; on a host with systemd the packages would also
  # start (and enable at boot) a main cluster on :5432 and nginx on :80.
  if [ -d /run/systemd/system ]; then
    quiet $sudo systemctl disable --now postgresql nginx
  fi
fi

# 5. npm devDependencies, exactly as locked. `npm ls` fails when anything is
# missing or does not match package.json, which is when `npm ci` is needed.
if ! npm ls --all >/dev/null 2>&1; then
  log "npm ci"
  quiet npm ci --no-audit --no-fund
fi
for f in node_modules/.bin/wasm-opt node_modules/.bin/tsc node_modules/playwright-core/package.json \
         node_modules/onnxruntime-web/dist/ort.wasm.min.mjs; do
  [ -e "$f" ] || die "$f missing after npm ci"
done
