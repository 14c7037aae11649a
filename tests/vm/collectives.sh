#!/usr/bin/env bash
# Cohort's collectives between two VMs over real verbs (Soft-RoCE on each VM's virtual NIC):
# RANKS_PER_VM ranks in each VM (default 1; 2 runs the two-level algorithm: shared memory
# inside a VM, verbs across), one job, its plan written as the daemons hand it out (each rank's
# host and address), `cohort bench allreduce` checking every size, with TRANSPORT=rdma (verbs
# or fail) or auto (the default negotiation). Each VM's NIC holds two addresses (10.88.0.1N
# from boot, then 10.88.0.2N), and the plan gives the ranks the second: Soft-RoCE then has a
# RoCE v2 GID for each, and the ranks must use the one of their plan address. Needs root, qemu, and a release build of cohort
# with the `rdma` feature (cargo build --release -p cohort-cli --features cohort-cli/rdma).
#   tests/vm/collectives.sh [RANKS_PER_VM] [rdma|auto|tcp]
# COHORT_VM_NO_RXE=vm2 leaves that VM without Soft-RoCE; COHORT_VM_MEMLOCK=KIB lowers the
# locked-memory limit (ulimit -l) in both VMs and runs the ranks as nobody under it;
# COHORT_VM_TYPES=1 also runs every other element type (8 B to 1 MiB);
# COHORT_VM_OPS=1 also runs broadcast, allgather and reduce_scatter: float 8 B to 32 MiB, every
# other type 8 B to 1 MiB;
# COHORT_VM_KILL_AFTER=S kills vm2's ranks with SIGKILL S seconds after they start.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
per=${1:-1}
transport=${2:-rdma}
world=$((2 * per))
ranks=""
for r in $(seq 0 $((world - 1))); do
    vm=$((r / per + 1))
    ranks+="${ranks:+,}{\"rank\":$r,\"host\":\"vm$vm\",\"local_rank\":$((r % per)),\"address\":\"10.88.0.2$vm\"}"
done
ring=$(seq -s, 0 $((world - 1)))
plan="{\"format\":\"cohort.plan\",\"version\":1,\"ranks\":[$ranks],\"rings\":[[$ring]]}"
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
script=$(mktemp /tmp/cohort-vm-collectives.XXXXXX)
trap 'rm -f "$script"' EXIT
cat > "$script" <<SCRIPT
set -e
ip addr add "10.88.0.2\${COHORT_VM_NAME#vm}/24" dev eth0
if [ "\$COHORT_VM_NAME" != "${COHORT_VM_NO_RXE:-none}" ]; then
    modprobe rdma_rxe
    rdma link add rxe0 type rxe netdev eth0
fi
as=""
if [ -n "${COHORT_VM_MEMLOCK:-}" ]; then
    # Root may lock any amount (CAP_IPC_LOCK): the ranks run as nobody under the limit.
    ulimit -l ${COHORT_VM_MEMLOCK:-0}
    chmod 0666 /dev/infiniband/* 2>/dev/null || true
    as="setpriv --reuid=65534 --regid=65534 --clear-groups"
fi
echo '$plan' > /tmp/plan.json
export COHORT_PLAN=/tmp/plan.json COHORT_STORE=10.88.0.21:29500 COHORT_SECRET=$secret
export COHORT_VM_ITERS=${COHORT_VM_ITERS:-3} COHORT_WORLD_SIZE=$world COHORT_LOCAL_WORLD_SIZE=$per COHORT_TIMEOUT=600 COHORT_TRANSPORT=$transport
base=\$(( (\${COHORT_VM_NAME#vm} - 1) * $per ))
pids=""
for l in \$(seq 0 $((per - 1))); do
    COHORT_RANK=\$((base + l)) COHORT_LOCAL_RANK=\$l \$as target/release/cohort bench allreduce \
        -b 8 -e 32M -f 4 -n \${COHORT_VM_ITERS:-3} -w 1 > /tmp/rank\$((base + l)).out 2>&1 &
    pids="\$pids \$!"
done
if [ "\$COHORT_VM_NAME" = vm2 ] && [ -n "${COHORT_VM_KILL_AFTER:-}" ]; then
    sleep ${COHORT_VM_KILL_AFTER:-0}
    kill -9 \$pids
    echo "killed rank(s) \$base.. of vm2 with SIGKILL"
fi
started=\$(date +%s)
status=0
for p in \$pids; do wait \$p || status=\$?; done
# Every other element type and reduction, smaller sizes (COHORT_VM_TYPES=1).
if [ "\$status" = 0 ] && [ -n "${COHORT_VM_TYPES:-}" ]; then
    for t in double half bfloat16 int32 int64 uint8; do
        op=sum; case \$t in int32) op=max ;; int64) op=min ;; uint8) op=max ;; esac
        pids=""
        for l in \$(seq 0 $((per - 1))); do
            COHORT_RANK=\$((base + l)) COHORT_LOCAL_RANK=\$l \$as target/release/cohort bench allreduce \
                -b 8 -e 1M -f 16 -n 1 -w 0 -d \$t -o \$op > /tmp/rank\$((base + l))-\$t.out 2>&1 &
            pids="\$pids \$!"
        done
        for p in \$pids; do wait \$p || status=\$?; done
    done
fi
# The other operations (COHORT_VM_OPS=1): float over the whole range, the other types smaller.
if [ "\$status" = 0 ] && [ -n "${COHORT_VM_OPS:-}" ]; then
    for op in broadcast allgather reduce_scatter; do
        for t in float double half bfloat16 int32 int64 uint8; do
            range="-b 8 -e 32M -f 4"; [ \$t = float ] || range="-b 8 -e 1M -f 32"
            pids=""
            for l in \$(seq 0 $((per - 1))); do
                COHORT_RANK=\$((base + l)) COHORT_LOCAL_RANK=\$l \$as target/release/cohort bench \$op \
                    \$range -n 1 -w 0 -d \$t > /tmp/rank\$((base + l))-\$op-\$t.out 2>&1 &
                pids="\$pids \$!"
            done
            for p in \$pids; do wait \$p || status=\$?; done
        done
    done
fi
echo "ranks ended \$(( \$(date +%s) - started )) s after the kill (or the start)"
for f in /tmp/rank*.out; do echo "== \$f"; cat "\$f"; done
echo "== rxe0 GIDs (index, GID, type)"
[ -d /sys/class/infiniband/rxe0 ] && for g in /sys/class/infiniband/rxe0/ports/1/gids/*; do
    i=\${g##*/}; v=\$(cat "\$g")
    [ "\$v" = 0000:0000:0000:0000:0000:0000:0000:0000 ] \
        || echo "gid \$i \$v \$(cat /sys/class/infiniband/rxe0/ports/1/gid_attrs/types/\$i 2>/dev/null)"
done
echo "== rxe0 counters"
[ -d /sys/class/infiniband/rxe0 ] && for c in /sys/class/infiniband/rxe0/ports/1/hw_counters/*; do
    v=\$(cat "\$c"); [ "\$v" = 0 ] || printf '%s %s\n' "\${c##*/}" "\$v"
done
exit \$status
SCRIPT
exec "$HERE/run.sh" --timeout "${COHORT_VM_TIMEOUT:-900}" "$script" "$script"
