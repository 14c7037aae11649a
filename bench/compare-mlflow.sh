#!/usr/bin/env bash
# Compares Cohort's experiment catalog with MLflow's file store on the same synthetic data: Cohort
# generates an experiment, the same data goes into an MLflow file store, and both answer "best
# trial by val_loss" and "val_loss history of trial 7"; prints median times and their ratios.
# The work is done by bench/compare_mlflow.py, in a virtual environment with MLflow
# (.deps/mlflow-venv, made on first use).
#   bench/compare-mlflow.sh               the comparison
#   bench/compare-mlflow.sh --self-test   the MLflow half alone, on data made up in-process
#                                         (20 trials x 3 metrics x 100 steps unless set below)
#
# Settings (environment):
#   TRIALS=200 METRICS=10 STEPS=1000   size of the synthetic experiment
#   COHORT=path                        the cohort binary (default: a release build made here)
#   WORK=dir                           where both stores go, kept afterwards (default: a
#                                      temporary folder, removed at the end)
#   REPEAT=5                           timed runs of each query, after one warm-up run
# At the default size, writing the MLflow store takes about two minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

MLFLOW_PKG=mlflow-skinny   # holds mlflow.store.tracking.file_store; the full mlflow is not needed
MLFLOW_VERSION=3.17.2
VENV=$PWD/.deps/mlflow-venv
# MLflow 3 refuses its file store unless this is set.
export MLFLOW_ALLOW_FILE_STORE=true

source bench/venv.sh
pinned_venv "$VENV" "$MLFLOW_PKG" "$MLFLOW_VERSION"

# Settings given in the environment become options (TRIALS=50 -> --trials 50).
args=()
for v in TRIALS METRICS STEPS REPEAT WORK; do
    [[ -z ${!v:-} ]] || args+=("--${v,,}" "${!v}")
done
if [[ ${1:-} == --self-test ]]; then
    args+=(--self-test)
else
    if [[ -z ${COHORT:-} ]]; then
        cargo build --release --locked --bin cohort -q
        COHORT=target/release/cohort
    fi
    [[ -x $COHORT ]] || { echo "no cohort binary at $COHORT" >&2; exit 1; }
    args+=(--cohort "$COHORT")
    # The Python package too, when its wheel can be built here (maturin: scripts/dev setup).
    if packaging/build wheel > /dev/null 2>&1; then
        "$VENV/bin/pip" install --quiet --force-reinstall --no-deps target/packages/cohort-*.whl
    else
        echo "(the Python package is not compared: its wheel could not be built; run scripts/dev setup)"
    fi
fi
"$VENV/bin/python" bench/compare_mlflow.py "${args[@]}"
