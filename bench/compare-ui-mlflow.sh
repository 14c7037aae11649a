#!/usr/bin/env bash
# `cohort ui` against MLflow's UI on the same 200-trial experiment, in the same headless
# Chromium (Debian's chromium and chromium-driver): time until the runs table and a 20-trial
# metric chart are drawn. The data is bench/compare-mlflow.sh's (both stores, made here first
# when WORK lacks them); the work is done by bench/compare_ui_mlflow.py in a virtual environment
# with the full MLflow (its UI) and Selenium (.deps/mlflow-ui-venv).
#   WORK=dir   where the stores are or go (default: a temporary folder, removed at the end)
#   RUNS=5     page loads of each, after one warm-up
set -euo pipefail
cd "$(dirname "$0")/.."
MLFLOW_VERSION=3.17.2
SELENIUM_VERSION=4.51.0
VENV=$PWD/.deps/mlflow-ui-venv
export MLFLOW_ALLOW_FILE_STORE=true
source bench/venv.sh
pinned_venv "$VENV" mlflow "$MLFLOW_VERSION"
"$VENV/bin/python" -c "import selenium" 2>/dev/null || "$VENV/bin/pip" install -q "selenium==$SELENIUM_VERSION"

cargo build --release --locked --bin cohort -q
COHORT=$PWD/target/release/cohort
work=${WORK:-$(mktemp -d /tmp/cohort-ui-mlflow.XXXXXX)}
[[ -n ${WORK:-} ]] || trap 'rm -rf "$work"' EXIT
if [[ ! -d $work/mlruns ]]; then
    echo "==> the 200-trial experiment in both stores (MLflow's takes about two minutes)"
    "$VENV/bin/python" bench/compare_mlflow.py --cohort "$COHORT" --work "$work" --repeat 1 > /dev/null
fi
"$COHORT" index synth --catalog "$work/cohort" > /dev/null
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ml_port=$(port)
"$VENV/bin/mlflow" server --backend-store-uri "file://$work/mlruns" --host 127.0.0.1 --port "$ml_port" \
    > "$work/mlflow-server.log" 2>&1 &
ml_pid=$!
"$COHORT" ui --catalog "$work/cohort" --bind 127.0.0.1:0 > "$work/ui.out" &
ui_pid=$!
trap 'kill $ml_pid $ui_pid 2>/dev/null || true; [[ -n ${WORK:-} ]] || rm -rf "$work"' EXIT
for _ in $(seq 1 300); do
    curl -fs -o /dev/null "http://127.0.0.1:$ml_port/" && grep -q token= "$work/ui.out" && break
    sleep 0.2
done
url=$(grep -o 'http://[^ ]*token=[^ ]*' "$work/ui.out")
"$VENV/bin/python" bench/compare_ui_mlflow.py --cohort-url "$url" --mlflow-url "http://127.0.0.1:$ml_port" \
    --mlruns "$work/mlruns" --cohort "$COHORT" --catalog "$work/cohort" --runs "${RUNS:-5}"
