#!/usr/bin/env bash
# The VM tests: Cohort's collectives between two Debian 12 VMs over real verbs (Soft-RoCE),
# and the catalog on NFS with two clients, under qemu (tests/vm/run.sh; the image is built once, tests/vm/image.sh). Each case prints
# "ok: ..." or fails naming what went wrong, with the VMs' output. Needs root, qemu-system-x86
# and release builds of cohortd and of cohort with the `rdma` feature.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp /tmp/cohort-vm-test.XXXXXX)
trap 'rm -f "$out"' EXIT
fail() { echo -e "FAILED: $*\n$(cat "$out")" >&2; exit 1; }
ok() { echo "ok: $*"; }
# Runs tests/vm/collectives.sh with the given environment and arguments into $out.
case_run() { env "$@" > "$out" 2>&1; }

start=$SECONDS
case_run COHORT_VM_TYPES=1 COHORT_VM_OPS=1 "$HERE/collectives.sh" 1 rdma || fail "collectives over verbs between two VMs"
[[ $(grep -c "2 ranks (shm:0 tcp:0 rdma:1)" "$out") == 28 ]] || fail "the peers were not reached over verbs for every operation and type"
for op in allreduce broadcast allgather reduce_scatter; do
    grep -A30 "^# Cohort $op: 2 ranks .*, float" "$out" | grep -q "^ *33554432 .* 0$" \
        || fail "$op: 32 MiB was not checked correct"
done
ok "allreduce, broadcast, allgather, reduce_scatter between two VMs over verbs (COHORT_TRANSPORT=rdma): float 8 B to 32 MiB, every other type to 1 MiB, every size correct"
# Each NIC has two IPv4 addresses, so two RoCE v2 GIDs: each rank uses its plan address's.
for a in 0a58:000b 0a58:0015 0a58:000c 0a58:0016; do
    grep -q "^gid [0-9]* 0000:0000:0000:0000:0000:ffff:$a RoCE v2$" "$out" || fail "no RoCE v2 GID for ::ffff:$a"
done
grep -q "^#  Rank   0 reaches rdma rxe0 port 1 GID [0-9]* 10.88.0.21 (RoCE v2) to 1$" "$out" \
    && grep -q "^#  Rank   1 reaches rdma rxe0 port 1 GID [0-9]* 10.88.0.22 (RoCE v2) to 0$" "$out" \
    || fail "the ranks did not use the RoCE v2 GID of their plan address"
ok "device and GID chosen by the rank's address: rxe0, the RoCE v2 GID of 10.88.0.21 and 10.88.0.22, not of the NIC's other address"

case_run "$HERE/gang.sh" auto || fail "ranks started from the daemons' plan"
grep -q '"host": "vm1", "local_rank": 0, "address": "10.88.0.11"' "$out" \
    && grep -q "^store 10.88.0.11:[0-9]*$" "$out" || fail "the daemons' plan does not place rank 0 on vm1 at its address"
grep -q "2 ranks (shm:0 tcp:0 rdma:1)" "$out" \
    && grep -q "^#  Rank   1 reaches rdma rxe0 port 1 GID [0-9]* 10.88.0.12 (RoCE v2) to 0$" "$out" \
    || fail "ranks started from the daemons' plan did not reach each other over verbs"
ok "cohortd in each VM agreed on a step's plan (joined through the local API, as the plugin does); ranks started from it reached each other over verbs by the plan's addresses"

case_run "$HERE/collectives.sh" 2 auto || fail "the two-level allreduce"
grep -q "4 ranks (shm:1 tcp:0 rdma:2)" "$out" || fail "not shared memory inside a VM and verbs across"
ok "the default negotiation with two ranks per VM: shared memory inside each VM, verbs across"

case_run COHORT_VM_NO_RXE=vm2 "$HERE/collectives.sh" 1 auto || fail "the fallback to TCP"
grep -q "using TCP between hosts: a peer has no RDMA device" "$out" && grep -q "(shm:0 tcp:1)" "$out" \
    || fail "one VM without Soft-RoCE: no fallback to TCP, or it did not say why"
ok "one VM without an RDMA device: both sides use TCP and say why"

case_run COHORT_VM_MEMLOCK=64 "$HERE/collectives.sh" 1 auto || fail "the fallback under a low memlock limit"
grep -q "ulimit -l" "$out" && grep -q "(shm:0 tcp:1)" "$out" \
    || fail "a 64 KiB memlock limit: no fallback to TCP, or it did not say why"
ok "a locked-memory limit too low for the slots: TCP, saying to raise ulimit -l"

if case_run COHORT_VM_KILL_AFTER=12 COHORT_VM_ITERS=50 "$HERE/collectives.sh" 1 rdma; then
    fail "a rank SIGKILLed mid-allreduce, yet the job succeeded"
fi
grep -q "rank 1 on vm2 is gone" "$out" || fail "rank 0 does not name the killed rank"
ok "a rank killed mid-allreduce over verbs: the other fails naming it"
for vers in 4.2 3; do
    case_run "$HERE/nfs.sh" $vers || fail "the catalog on NFSv$vers with two clients"
    [[ $(grep -c "^mounted: .* nfs4\? .*vers=$vers," "$out") == 2 ]] || fail "not mounted with NFSv$vers"
    [[ $(grep -c "^ok: 30 trials created by two clients at once" "$out") == 2 ]] || fail "NFSv$vers: concurrent trial creation"
    [[ $(grep -c "^ok: the other client reads" "$out") == 2 ]] || fail "NFSv$vers: reads across clients"
    grep -q "^ok: the other client read all [0-9]* committed points" "$out" || fail "NFSv$vers: the SIGKILLed writer's points"
    grep -q "^ok: 40 checkpoints written on one client, collected [1-9][0-9]* times" "$out" || fail "NFSv$vers: collection while writing"
    grep -q "^ok: the catalog's crash and concurrency tests pass" "$out" || fail "NFSv$vers: the catalog's tests"
    ok "the catalog on NFSv$vers, two VMs as clients: trials created at once numbered uniquely, none lost; each reads what the other committed; a writer SIGKILLed on one while the other queried and rebuilt the index lost no committed point; checkpoints collected on one while the other wrote them kept the latest; the catalog's crash and concurrency tests pass on the mount"
done
echo "the VM tests passed in $((SECONDS - start)) s"
