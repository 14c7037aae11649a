#!/usr/bin/env bash
# The gang start's handoff to verbs between two VMs: cohortd runs in each VM (its topology
# discovered there, the two daemons peers over a shared cluster key), each VM joins one step
# through its daemon's local API as the SPANK plugin does (tests/vm/join.py; Slurm itself does
# not run in the VMs), and the ranks start from the plan the daemons agreed: its addresses, its
# store and its secret. `cohort bench allreduce` then shows how each rank reached the other.
# Needs what tests/vm/collectives.sh needs, and a release build of cohortd.
#   tests/vm/gang.sh [rdma|auto]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
transport=${1:-auto}
key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
script=$(mktemp /tmp/cohort-vm-gang.XXXXXX)
trap 'rm -f "$script"' EXIT
cat > "$script" <<SCRIPT
set -e
modprobe rdma_rxe
rdma link add rxe0 type rxe netdev eth0
n=\${COHORT_VM_NAME#vm}
mkdir -p /run/cohort /etc/cohort
echo $key > /etc/cohort/cluster.key
chmod 600 /etc/cohort/cluster.key
cat > /etc/cohort/cohortd.toml <<TOML
socket = "/run/cohort/cohortd.sock"
node_name = "\$COHORT_VM_NAME"
[peer]
listen = "\$COHORT_VM_ADDR"
key_file = "/etc/cohort/cluster.key"
[peer.nodes]
vm1 = "10.88.0.11:7107"
vm2 = "10.88.0.12:7107"
TOML
target/release/cohortd --config /etc/cohort/cohortd.toml > /tmp/cohortd.log 2>&1 &
for i in \$(seq 1 600); do [ -S /run/cohort/cohortd.sock ] && break; sleep 0.1; done
[ -S /run/cohort/cohortd.sock ] || { echo "cohortd did not start:"; cat /tmp/cohortd.log; exit 1; }
python3 tests/vm/join.py /run/cohort/cohortd.sock /tmp/plan.json 7 vm1,vm2 \$((n - 1)) \$((n - 1)) 2 > /tmp/step.env \
    || { echo "the join failed; cohortd's log:"; cat /tmp/cohortd.log; exit 1; }
. /tmp/step.env
echo "the daemons' plan: \$(cat /tmp/plan.json)"
echo "store \$COHORT_STORE"
export COHORT_PLAN COHORT_STORE COHORT_SECRET COHORT_RANK=\$((n - 1)) COHORT_WORLD_SIZE=2 \
    COHORT_LOCAL_RANK=0 COHORT_LOCAL_WORLD_SIZE=1 COHORT_TIMEOUT=600 COHORT_TRANSPORT=$transport
status=0
target/release/cohort bench allreduce -b 8 -e 8M -f 16 -n 1 -w 0 > /tmp/bench.out 2>&1 || status=\$?
cat /tmp/bench.out
echo "== cohortd's log"
tail -n 20 /tmp/cohortd.log
exit \$status
SCRIPT
exec "$HERE/run.sh" --timeout "${COHORT_VM_TIMEOUT:-600}" "$script" "$script"
