#!/usr/bin/env bash
# `make sim`: the federated simulation and quality benchmark on real data.
#   DATA=dir make sim       any MovieLens-layout directory (default ../shared/data/movielens-small)
#   SIM_ARGS="--rounds 10"  extra hearth-sim flags
# Writes target/sim/report.json, the PNG plots and scale.json, and prints the table.
set -euo pipefail
. "$(dirname "$0")/common.sh"

DATA="${DATA:-../shared/data/movielens-small}"
[ -f "$DATA/ratings.csv" ] || die "no ratings.csv in $DATA (set DATA=...)"

# Fonts for the plots' text (Debian's DejaVu) and Python's venv for the external baseline.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  log "installing fonts-dejavu-core and python3-venv with apt"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  quiet $sudo apt-get update
  quiet $sudo apt-get install -y --no-install-recommends fonts-dejavu-core python3-venv
fi

log "building hearth-sim"
cargo build --release -p hearth-sim
mkdir -p target/sim

# The external baseline: implicit's ALS, in its own virtualenv, on the very same split.
log "external baseline: implicit ALS (scripts/als_baseline.py)"
target/release/hearth-sim split --data "$DATA" --out target/sim/split
if [ ! -x target/sim/venv/bin/python ] || ! target/sim/venv/bin/python -c 'import implicit' 2>/dev/null; then
  python3 -m venv target/sim/venv
  quiet target/sim/venv/bin/pip install --quiet implicit==0.7.3
fi
OPENBLAS_NUM_THREADS=1 target/sim/venv/bin/python scripts/als_baseline.py target/sim/split target/sim/external-als.json 1

log "hearth-sim: popularity, centralized, federated, DP through secure aggregation at epsilon 1, 3, 8"
# shellcheck disable=SC2086
target/release/hearth-sim --data "$DATA" --out target/sim --external target/sim/external-als.json ${SIM_ARGS:-}

log "hearth-sim scale: one round with 10,000 simulated devices"
target/release/hearth-sim scale --data "$DATA" --devices 10000 --out target/sim
