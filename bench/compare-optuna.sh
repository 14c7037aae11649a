#!/usr/bin/env bash
# Compares Cohort's ASHA searcher, with its TPE sampler and with random sampling, against
# Optuna's HyperbandPruner (TPE and Random samplers, both seeded) on the multi-fidelity
# benchmark functions (Hartmann 6-D, Hartmann 3-D, Branin) at 128, 256 and 512 trials, each
# searcher given Cohort TPE's mean budget (units of training). Prints each case's mean regrets
# with standard errors and the ratios Cohort TPE / the others (<= 1: Cohort at least as good),
# then whether Cohort TPE is within one standard error of Optuna TPE + Hyperband and below
# Cohort's random-sampling ASHA, case by case.
# The work is done by bench/compare_optuna.py (which explains every choice made on the Optuna
# side), in a virtual environment with Optuna (.deps/optuna-venv, made on first use).
#   bench/compare-optuna.sh                the comparison
#   bench/compare-optuna.sh --self-check   checks the Python implementation of the functions
#                                          (exact minima, known values, fidelity behaviour)
#
# Settings (environment):
#   EXPERIMENT=FILE     one experiment file instead of examples/search/{hartmann,hartmann3,
#                       branin}-tpe.toml (its [simulation] table names the function)
#   TRIALS=128,256,512  the numbers of trials
#   REPEAT=100          Optuna studies per sampler (seeds 1..REPEAT)
#   RANDOM_REPEAT=      Optuna random-sampler studies, when fewer than REPEAT
#   COHORT_REPEAT=100   Cohort simulation runs (seeds 1..COHORT_REPEAT)
#   BIAS= NOISE=        instead of the files' (default 0.5 and 0.1): how much low fidelities
#                       are shifted and how noisy they are
#   WORKERS=16          Cohort's parallel workers (Optuna runs trials one at a time)
#   PRUNERS=hyperband   Optuna pruners, comma-separated: hyperband, asha (Optuna's
#                       SuccessiveHalvingPruner, the counterpart of Cohort's aggressive mode)
#   COHORT=path         the cohort binary (default: a release build made here)
# At the defaults the whole comparison takes about 40 minutes on two cores (almost all of it
# Optuna's); REPEAT=20 TRIALS=256 takes about two.
set -euo pipefail
cd "$(dirname "$0")/.."

OPTUNA_VERSION=5.0.0
VENV=$PWD/.deps/optuna-venv

source bench/venv.sh
pinned_venv "$VENV" "optuna" "$OPTUNA_VERSION"

if [[ ${1:-} == --self-check ]]; then
    exec "$VENV/bin/python" bench/compare_optuna.py --self-check
fi

# Settings given in the environment become options (COHORT_REPEAT=50 -> --cohort-repeat 50).
args=()
for v in EXPERIMENT TRIALS REPEAT RANDOM_REPEAT COHORT_REPEAT BIAS NOISE WORKERS; do
    flag=${v,,}
    [[ -z ${!v:-} ]] || args+=("--${flag//_/-}" "${!v}")
done
IFS=, read -ra pruners <<<"${PRUNERS:-hyperband}"
for p in "${pruners[@]}"; do
    args+=(--pruner "$p")
done
if [[ -z ${COHORT:-} ]]; then
    cargo build --release --locked --bin cohort -q
    COHORT=target/release/cohort
fi
[[ -x $COHORT ]] || { echo "no cohort binary at $COHORT" >&2; exit 1; }
# A binary built with the tch feature (scripts/dev) loads libtorch at start.
LIBTORCH_LIB=$PWD/.deps/libtorch-2.13.0/lib
[[ ! -d $LIBTORCH_LIB ]] || export LD_LIBRARY_PATH=$LIBTORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
args+=(--cohort "$COHORT")
time_start=$SECONDS
"$VENV/bin/python" bench/compare_optuna.py "${args[@]}"
echo "total wall time: $((SECONDS - time_start)) s"
