#!/usr/bin/env bash
# torch.distributed through Cohort's backend against Gloo, side by side on this machine:
# all_reduce busbw of float32 tensors from 1 MiB to 128 MiB with 2 and 4 ranks, the 8-byte
# latency, and the time of a DDP training step of examples/python/train.py. Prints each figure
# for both backends and their ratio (cohort / gloo for bandwidth, gloo / cohort for times, so
# above 1 means Cohort is faster).
# Needs the Python environment of `scripts/dev setup` (.deps/python) with the package built
# (scripts/dev test, or: VIRTUAL_ENV=.deps/python maturin develop --release -m python/Cargo.toml).
#   ITERS=10 WARMUP=3   timed iterations per size (the 8-byte latency uses 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.deps/python/bin/python}
"$PY" -c 'import cohort.torch' || { echo "no cohort package in $PY: see the header of $0" >&2; exit 1; }
if [[ -z ${COHORT:-} ]]; then
    cargo build --release --locked --bin cohort -q
    COHORT=target/release/cohort
fi
ITERS=${ITERS:-10}
WARMUP=${WARMUP:-3}
out=target/bench
mkdir -p "$out"
export PYTHONWARNINGS=ignore OMP_NUM_THREADS=1

run() { # ranks backend extra-args...
    local ranks=$1 backend=$2; shift 2
    "$COHORT" run -n "$ranks" --no-prefix --no-track -- "$PY" bench/allreduce_torch.py \
        --backend "$backend" "$@"
}
compare() { # title, cohort file, gloo file, bw|lat
    echo "== $1"
    printf '%12s %14s %14s %8s\n' size cohort gloo ratio
    join <(sort -k1,1 "$2") <(sort -k1,1 "$3") | sort -n | while read -r size ct cb gt gb; do
        if [[ $4 == lat ]]; then
            printf '%12s %11.2f us %11.2f us %8.2f\n' "$size" "$ct" "$gt" "$(echo "$gt / $ct" | bc -l)"
        else
            printf '%12s %9.3f GB/s %9.3f GB/s %8.2f\n' "$size" "$cb" "$gb" "$(echo "$cb / $gb" | bc -l)"
        fi
    done
}

for ranks in 2 4; do
    run "$ranks" cohort --iters "$ITERS" --warmup "$WARMUP" > "$out/t_cohort_$ranks"
    run "$ranks" gloo --iters "$ITERS" --warmup "$WARMUP" > "$out/t_gloo_$ranks"
    compare "all_reduce, $ranks ranks, busbw (target: cohort >= 2x gloo at >= 1 MiB)" \
        "$out/t_cohort_$ranks" "$out/t_gloo_$ranks" bw
    run "$ranks" cohort --min 8 --max 8 --iters 2000 --warmup 100 > "$out/t_cohort_lat_$ranks"
    run "$ranks" gloo --min 8 --max 8 --iters 2000 --warmup 100 > "$out/t_gloo_lat_$ranks"
    compare "all_reduce, $ranks ranks, 8 B latency (target: cohort <= half of gloo's)" \
        "$out/t_cohort_lat_$ranks" "$out/t_gloo_lat_$ranks" lat
done

echo "== DDP training step of examples/python/train.py (3 epochs, 64-sample batches)"
printf '%6s %14s %14s %8s\n' ranks cohort gloo ratio
for ranks in 2 4; do
    step() {
        "$COHORT" run -n "$ranks" --no-prefix --no-track -- "$PY" examples/python/train.py \
            --epochs 3 --backend "$1" | awk '/ms per training step/ {print $(NF-4)}'
    }
    c=$(step "cpu:cohort,cuda:nccl")
    g=$(step gloo)
    printf '%6s %11.3f ms %11.3f ms %8.2f\n' "$ranks" "$c" "$g" "$(echo "$g / $c" | bc -l)"
done
