#!/usr/bin/env bash
# Verbs (Soft-RoCE) against TCP between the same two VMs of the project's VM tests: `cohort
# bench allreduce` with COHORT_TRANSPORT=rdma, then =tcp, one rank per VM, and the time per
# size of each side by side, with rxe's retransmission counters during the verbs run. Needs what
# tests/vm/test.sh needs (root, qemu, a release build of cohort with the `rdma` feature).
# Emulated (TCG) machines run 20-50x slower than hardware: the figures compare the two paths
# through one kernel's network stack, not what a fabric gives.
#   bench/vm-verbs-vs-tcp.sh [ITERS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
iters=${1:-5}
out=$(mktemp -d /tmp/cohort-vm-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
for transport in rdma tcp; do
    COHORT_VM_ITERS=$iters "$ROOT/tests/vm/collectives.sh" 1 "$transport" > "$out/$transport" 2>&1 \
        || { cat "$out/$transport"; exit 1; }
done
table() { awk '/^# Cohort allreduce/ {on = 1; next} on && /^ +[0-9]/ {print $1, $5} /^# Avg/ {on = 0}' "$1" | sort -n -u; }
echo "allreduce, 2 ranks (one per VM), time per operation (us), $iters iterations per size"
printf '%12s %14s %14s %10s\n' size verbs tcp verbs/tcp
join <(table "$out/rdma") <(table "$out/tcp") | awk '{printf "%12d %14.1f %14.1f %10.2f\n", $1, $2, $3, $2 / $3}'
echo "rxe counters during the verbs run (both VMs, non-zero):"
awk '/^== rxe0 counters/ {on = 1; next} /^(==|----)/ {on = 0} on && NF == 2' "$out/rdma" | sed 's/^/  /'
