#!/usr/bin/env bash
# Fuzzes Cohort's decoders with cargo fuzz (libFuzzer): each target in fuzz/ runs for
# SECONDS_PER_TARGET (default 300), one after the other, from its seed corpus
# (fuzz/corpus/<target>) and past crashes (fuzz/regressions/<target>), with its dictionary
# (fuzz/dicts/<target>.dict). Prints per target the executions and whether it crashed, then the
# total; exits 1 if a target crashed (the input is kept under fuzz/artifacts/<target>/), 2 if
# the targets cannot be built.
#
#   bench/fuzz.sh [SECONDS_PER_TARGET]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`; `scripts/dev test` installs it). A
# stable toolchain is enough: cargo fuzz passes nightly-only flags (-Zsanitizer,
# -Cpasses=sancov-module), which RUSTC_BOOTSTRAP=1 lets stable rustc accept. The targets are
# built with debug assertions and overflow checks but without a sanitizer (`--sanitizer
# none`): the fuzzed code is safe Rust, and AddressSanitizer doubles the build (6.5 instead of 3
# minutes on two cores) and divides the executions per second by seven to eight (daemon_api:
# 2,100/s instead of 15,500/s). COHORT_FUZZ_SANITIZER=address brings it back.
# Inputs found during a run go to a scratch folder under fuzz/target and are dropped at the
# end: the committed corpora stay small (grow them by hand with `cargo fuzz cmin`).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-300}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bench/fuzz.sh [SECONDS_PER_TARGET]" >&2
    exit 2
fi
targets=(daemon_api peer_msg catalog_readers experiment_file)
export RUSTC_BOOTSTRAP=1
build_flags=(--sanitizer "${COHORT_FUZZ_SANITIZER:-none}" --codegen-units 16)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "bench/fuzz.sh: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)" >&2
    exit 2
fi
# cargo fuzz has no --locked: check that fuzz/Cargo.lock needs no change first.
cargo fetch --locked --quiet --manifest-path fuzz/Cargo.toml || exit 2
mkdir -p fuzz/target
scratch=$(mktemp -d "$PWD/fuzz/target/run.XXXXXX")
# The catalog target's fixture (a small catalog, rewritten for every input) goes to TMPDIR:
# memory when there is /dev/shm.
tmp=$(mktemp -d /dev/shm/cohort-fuzz.XXXXXX 2>/dev/null) || tmp=$(mktemp -d "$scratch/tmp.XXXXXX")
trap 'rm -rf "$scratch" "$tmp"' EXIT

echo "building the fuzz targets (sanitizer: ${build_flags[1]})"
started=$SECONDS
if ! (cd fuzz && cargo fuzz build "${build_flags[@]}") >"$scratch/build.log" 2>&1; then
    tail -n 30 "$scratch/build.log"
    echo "bench/fuzz.sh: the fuzz targets do not build" >&2
    exit 2
fi
echo "built in $((SECONDS - started)) s; fuzzing each target for $seconds s"
total=0
crashed=()
root=$PWD
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
    inputs=("$scratch/$target" "$root/fuzz/corpus/$target")
    if [[ -d fuzz/regressions/$target ]]; then inputs+=("$root/fuzz/regressions/$target"); fi
    options=(-max_total_time="$seconds" -timeout=20 -print_final_stats=1
             -artifact_prefix="$root/fuzz/artifacts/$target/")
    if [[ -f fuzz/dicts/$target.dict ]]; then options+=(-dict="$root/fuzz/dicts/$target.dict"); fi
    log=$scratch/$target.log
    status=0
    (cd fuzz && TMPDIR=$tmp cargo fuzz run "${build_flags[@]}" "$target" \
        "${inputs[@]}" -- "${options[@]}") >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    runs=${runs:-0}
    total=$((total + runs))
    if ((status == 0)); then
        printf '%-16s %12s executions in %s s (%s/s), no crash\n' "$target" "$runs" "$seconds" \
            "$((runs / seconds))"
    else
        crashed+=("$target")
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
        printf '%-16s %12s executions, CRASHED (exit %s): %s\n' "$target" "$runs" "$status" \
            "${artifact#"$root"/}"
        grep -E "panicked at|ERROR: |SUMMARY: " "$log" | head -n 5 | sed 's/^/    /' || true
        cp "$log" "fuzz/artifacts/$target/last-run.log"
    fi
done
printf '%-16s %12s executions in all, %s crash(es)\n' total "$total" "${#crashed[@]}"
if ((${#crashed[@]})); then
    echo "crashed: ${crashed[*]} (logs in fuzz/artifacts/<target>/last-run.log)"
    exit 1
fi
