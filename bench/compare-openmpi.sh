#!/usr/bin/env bash
# Runs `cohort bench allreduce` and Open MPI's MPI_Allreduce side by side on this machine and
# prints the ratios the collectives are held to: shared memory and TCP with 2 ranks, 4 ranks
# oversubscribed, the 8-byte latency, single-thread memcpy as a yardstick, and each rank's peak
# memory beside the message.
# Needs: openmpi-bin libopenmpi-dev (apt). COHORT=path runs another cohort binary (an older
# build, to compare two versions against the same reference); by default a release build is
# made here.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench
mkdir -p "$out"
mpicc -O2 -o "$out/mpi_allreduce" bench/mpi_allreduce.c
cc -O2 -o "$out/memcpy_ref" bench/memcpy_ref.c
if [[ -n ${COHORT:-} ]]; then
    cohort=$COHORT
else
    cargo build --release --locked --bin cohort -q
    cohort=target/release/cohort
fi
ITERS=${ITERS:-10}
WARMUP=${WARMUP:-3}
mpirun_=(mpirun --allow-run-as-root --oversubscribe --bind-to none)

# Prints "size time_us busbw" lines for cohort.
cohort_bench() { # ranks extra-run-args... -- bench-args...
    local ranks=$1; shift
    local run_args=()
    while [[ $1 != -- ]]; do run_args+=("$1"); shift; done; shift
    "$cohort" run -n "$ranks" --no-prefix --no-track "${run_args[@]}" -- "$cohort" bench allreduce -c 0 \
        -n "$ITERS" -w "$WARMUP" "$@" | awk '!/^#/ {print $1, $5, $7}'
}
# Prints cohort's "# Peak memory per rank" line for one 128 MiB allreduce without the check.
cohort_memory() { # extra-run-args...
    "$cohort" run -n 2 --no-prefix --no-track "$@" -- "$cohort" bench allreduce -c 0 \
        -n 2 -w 1 -b 128M -e 128M | grep '^# Peak memory'
}
mpi_bench() { # ranks btl min max factor
    "${mpirun_[@]}" -np "$1" --mca btl "$2" "$out/mpi_allreduce" "$3" "$4" "$5" "$ITERS" "$WARMUP"
}
compare() { # title, cohort file, mpi file, what (bw|lat)
    echo "== $1"
    printf '%12s %14s %14s %8s\n' size "cohort" "open mpi" ratio
    join <(sort -k1,1 "$2") <(sort -k1,1 "$3") | sort -n | while read -r size ct cb mt mb; do
        if [[ $4 == lat ]]; then
            printf '%12s %11.2f us %11.2f us %8.2f\n' "$size" "$ct" "$mt" "$(echo "$ct / $mt" | bc -l)"
        else
            printf '%12s %9.3f GB/s %9.3f GB/s %8.2f\n' "$size" "$cb" "$mb" "$(echo "$cb / $mb" | bc -l)"
        fi
    done
}

memcpy=$("$out/memcpy_ref" $((64 << 20)) 20 | awk '{print $(NF-1)}')
echo "single-thread memcpy of 64 MiB: $memcpy GB/s"

cohort_bench 2 -- -b 1M -e 128M -f 2 > "$out/c_shm"
mpi_bench 2 self,vader $((1 << 20)) $((128 << 20)) 2 > "$out/m_shm"
compare "shared memory, 2 ranks, busbw (target: >= 2x at >= 32 MiB)" "$out/c_shm" "$out/m_shm" bw
awk -v m="$memcpy" '$1 >= 33554432 {printf "  %s bytes: cohort busbw is %.0f%% of memcpy (target >= 35%%)\n", $1, 100 * $3 / m}' "$out/c_shm"

ITERS=2000 WARMUP=100 cohort_bench 2 -- -b 8 -e 8 > "$out/c_lat"
ITERS=2000 WARMUP=100 mpi_bench 2 self,vader 8 8 1 > "$out/m_lat"
compare "shared memory, 2 ranks, 8 B latency (target: <= 1.5x)" "$out/c_lat" "$out/m_lat" lat

cohort_bench 2 --tcp -- -b 1M -e 128M -f 2 > "$out/c_tcp"
mpi_bench 2 self,tcp $((1 << 20)) $((128 << 20)) 2 > "$out/m_tcp"
compare "TCP, 2 ranks, busbw (target: >= 2x at >= 32 MiB)" "$out/c_tcp" "$out/m_tcp" bw
ITERS=500 WARMUP=50 cohort_bench 2 --tcp -- -b 8 -e 8 > "$out/c_tcplat"
ITERS=500 WARMUP=50 mpi_bench 2 self,tcp 8 8 1 > "$out/m_tcplat"
compare "TCP, 2 ranks, 8 B latency (target: <= 50 us)" "$out/c_tcplat" "$out/m_tcplat" lat

cohort_bench 4 -- -b 1M -e 64M -f 4 > "$out/c_4"
mpi_bench 4 self,vader $((1 << 20)) $((64 << 20)) 4 > "$out/m_4"
compare "shared memory, 4 ranks on 2 cores, busbw (target: >= 1x at >= 1 MiB)" "$out/c_4" "$out/m_4" bw

echo "== memory per rank, 128 MiB allreduce (target: at most the message plus 64 MiB)"
echo "shared memory: $(cohort_memory)"
echo "TCP:           $(cohort_memory --tcp)"
