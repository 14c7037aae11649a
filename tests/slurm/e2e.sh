#!/usr/bin/env bash
# End-to-end tests of cohortd and spank_cohort.so on a real 4-node Slurm cluster made by
# tests/slurm/cluster.sh (network namespaces on this machine). Needs root and release builds:
#   cargo build --release -p cohort-daemon -p cohort-slurm-plugin -p cohort-cli
#   cargo build --release -p cohort-examples   (apart, so that cohort does not link libtorch)
# Each scenario prints "ok: ..." or fails the script with what went wrong (the cluster's logs
# are then left in the temporary directory it names). COHORT_E2E_ONLY=preemption runs only the
# preemption scenarios (tests/slurm/preemption.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
L=$(mktemp -d /tmp/cohort-slurm.XXXXXX)
chmod 755 "$L"
export SLURM_CONF=$L/etc/slurm.conf
trap '"$ROOT/tests/slurm/cluster.sh" down "$L"' EXIT
"$ROOT/tests/slurm/cluster.sh" up "$L"
cd "$ROOT"
COHORT=$ROOT/target/release/cohort
# The example links libtorch (scripts/dev fetches it into .deps/).
if [[ -d $ROOT/.deps/libtorch-2.13.0/lib ]]; then
    export LD_LIBRARY_PATH=$ROOT/.deps/libtorch-2.13.0/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
fail() { echo -e "FAILED: $*" >&2; exit 1; }
# What Slurm and the search saw, for a failure's message.
slurm_state() {
    echo "squeue:"; squeue 2>&1
    echo "sinfo -R:"; sinfo -R 2>&1
    echo "search events:"; tail -n 30 "$L"/search-catalog/experiments/*/search/events.jsonl 2>&1
    echo "slurmctld log:"; tail -n 30 "$L/log/slurmctld.log" 2>&1
    echo "the latest trials' job output:"
    ls -t "$L"/*catalog/experiments/*/trials/*/slurm-*.out 2>/dev/null | head -n 4 \
        | while read -r f; do echo "== $f"; tail -n 15 "$f"; done
}
ok() { echo "ok: $*"; }
PY=$ROOT/.deps/python/bin/python
# Lets a job Slurm requeued start soon rather than after the begin-time delay slurmctld gives a
# requeued job (the delay is Slurm's own policy; the tests wait for the behaviour after it). Not
# within the second of the requeue: slurmd refuses a launch whose credential is no newer than
# the revocation of the job's previous run ("Job credential revoked"), to the second. (A start
# time in the future instead leaves the start to the backfill scheduler, whose launch of a
# requeued job sent its --signal warning at once.)
hurry() {
    for _ in $(seq 1 300); do
        state=$(squeue -h -j "$1" -o %T 2>/dev/null || true)
        case $state in
            PENDING)
                sleep 1.2
                scontrol update JobId="$1" StartTime=now 2>/dev/null || true
                return 0
                ;;
            "") return 0 ;;
        esac
        sleep 0.2
    done
}
# Waits for Slurm job $1 to leave the queue: at most $2 looks, 0.2 s apart.
wait_job() {
    for _ in $(seq 1 "$2"); do
        squeue -h -j "$1" 2>/dev/null | grep -q . || return 0
        sleep 0.2
    done
}

if [[ ${COHORT_E2E_ONLY:-} == preemption ]]; then
    source "$ROOT/tests/slurm/preemption.sh"
    "$ROOT/tests/slurm/cluster.sh" down "$L"
    trap - EXIT
    rm -rf "$L"
    echo "the Slurm preemption tests passed"
    exit 0
fi

# 1. 16 ranks on 4 nodes: distinct ranks, each GPU with its own NIC, one store for all.
out=$(timeout 60 srun -N4 --ntasks-per-node=4 --gpus-per-task=1 --cohort sh -c \
    'echo "$COHORT_RANK $COHORT_WORLD_SIZE $CUDA_VISIBLE_DEVICES $COHORT_NIC $(hostname) $COHORT_STORE $RANK $MASTER_ADDR $COHORT_CPUS"' 2>&1)
out=$(echo "$out" | awk 'NF == 9 {print $1, $2, $3, $4, $5, $6, $7, $8; print $1, $3, $9 > "/dev/stderr"}' 2> "$L/cpus.out")
ranks=$(echo "$out" | awk 'NF == 8 {print $1}' | sort -n | uniq | tr '\n' ' ')
[[ $ranks == "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 " ]] || fail "ranks: $ranks\n$out"
[[ $(echo "$out" | awk 'NF == 8 {print $2}' | sort -u) == 16 ]] || fail "world size\n$out"
[[ $(echo "$out" | awk 'NF == 8 {print $6}' | sort -u | wc -l) == 1 ]] || fail "one store\n$out"
[[ $(echo "$out" | awk 'NF == 8 && $1 != $7' | wc -l) == 0 ]] || fail "RANK differs from COHORT_RANK"
if [[ -f $ROOT/../shared/fixtures/topologies/juwels-booster_4xA100_4xHDR.hwloc.xml ]]; then
    # JUWELS Booster: GPU i shares a PCIe switch with HCA mlx5_i.
    [[ $(echo "$out" | awk 'NF == 8 && "mlx5_" $3 != $4' | wc -l) == 0 ]] || fail "GPU-NIC pairs\n$out"
    # Each task's CPUs are its GPU's NUMA node's (JUWELS Booster: GPU0 on NUMA 3, CPUs 18-23,66-71).
    [[ $(wc -l < "$L/cpus.out") == 16 ]] || fail "COHORT_CPUS missing:\n$(cat "$L/cpus.out")"
    [[ $(awk '$2 == 0 && $3 != "18-23,66-71"' "$L/cpus.out" | wc -l) == 0 ]] || fail "GPU0's CPUs:\n$(cat "$L/cpus.out")"
    [[ $(awk '$2 == 3 && $3 != "30-35,78-83"' "$L/cpus.out" | wc -l) == 0 ]] || fail "GPU3's CPUs:\n$(cat "$L/cpus.out")"
fi
for node in node1 node2 node3 node4; do
    [[ $(echo "$out" | awk -v n=$node 'NF == 8 && $5 == n' | wc -l) == 4 ]] || fail "4 tasks on $node"
done
ok "16 ranks, one GPU and its NIC each, every node its share of one plan"
# 1b. NCCL's hints from the same plan: each rank's HCA (its NIC, port 1), the interface of its
#     node's address, and the topology its node's cohortd exported (the daemons read theirs
#     from a file, so NCCL must not probe the host's); a value the user sets wins.
out=$(timeout 60 srun -N4 --ntasks-per-node=4 --gpus-per-task=1 --cohort sh -c \
    'test -r "$NCCL_TOPO_FILE" && grep -q "<system" "$NCCL_TOPO_FILE" && t=readable; echo "$COHORT_RANK $COHORT_NIC $NCCL_IB_HCA $NCCL_SOCKET_IFNAME $NCCL_TOPO_FILE $(hostname) $t"' 2>&1)
[[ $(echo "$out" | awk 'NF == 7' | wc -l) == 16 ]] || fail "NCCL hints missing:\n$out"
[[ $(echo "$out" | awk 'NF == 7 && $3 != "=" $2 ":1"' | wc -l) == 0 ]] || fail "NCCL_IB_HCA is not each rank's NIC:\n$out"
[[ $(echo "$out" | awk 'NF == 7 && $4 !~ /^=[a-z]/' | wc -l) == 0 ]] || fail "NCCL_SOCKET_IFNAME:\n$out"
[[ $(echo "$out" | awk -v run="$L/run/" 'NF == 7 && ($5 != run $6 "/nccl-topo.xml" || $7 != "readable")' | wc -l) == 0 ]] \
    || fail "NCCL_TOPO_FILE is not the node's readable export:\n$out"
mine=$(NCCL_IB_HCA=mlx5_9 timeout 60 srun -N2 --ntasks-per-node=1 --cohort sh -c 'echo "$NCCL_IB_HCA"' 2>&1)
[[ $(echo "$mine" | sort -u) == mlx5_9 ]] || fail "the user's NCCL_IB_HCA was not kept:\n$mine"
ok "NCCL hints on every rank: its HCA, its interface, its node's topology file; the user's value kept"
# 1c. Device lists as Slurm hands them out: this Slurm sets NVIDIA's CUDA_VISIBLE_DEVICES and
#     AMD's ROCR_VISIBLE_DEVICES for its (fake) GPUs; each is narrowed to the task's own entry,
#     and --cohort-bind=none leaves both whole, LOCAL_RANK choosing. (UUID and MIG lists, which
#     this Slurm never hands out and blanks when a user sets them, are tested through the
#     plugin's reading of the list and the daemons' plan cases.)
out=$(timeout 60 srun -N1 -n2 -w node1 --gpus-per-node=2 --cohort sh -c \
    'echo "$COHORT_RANK $CUDA_VISIBLE_DEVICES $ROCR_VISIBLE_DEVICES $COHORT_NIC"' 2>&1)
[[ $(echo "$out" | sort) == $'0 0 0 mlx5_0\n1 1 1 mlx5_1' ]] || fail "narrowed device lists:\n$out"
out=$(timeout 60 srun -N1 -n2 -w node1 --gpus-per-node=2 --cohort --cohort-bind=none sh -c \
    'echo "$COHORT_RANK $CUDA_VISIBLE_DEVICES $ROCR_VISIBLE_DEVICES $LOCAL_RANK"' 2>&1)
[[ $(echo "$out" | sort) == $'0 0,1 0,1 0\n1 0,1 0,1 1' ]] || fail "--cohort-bind=none:\n$out"
ok "device lists: CUDA_VISIBLE_DEVICES and ROCR_VISIBLE_DEVICES narrowed per task, whole with --cohort-bind=none"
# 1d. GPU accounting: node1's cohortd samples the step's four GPUs every second (scripted
#     samples, these nodes having no GPUs; see cluster.sh): `cohort status` shows each with its
#     utilisation, the idle GPU, the ECC errors and the Xid flagged, the daemon's log says so,
#     another user sees none of it, and the GPUs leave the status with the step; `cohort top`
#     shows them, and node2's over the peer protocol; the step's trial gets their series.
export COHORT_CATALOG=$L/acct-catalog
timeout 60 srun -N1 -n4 -w node1 --gpus-per-task=1 --cohort --cohort-exp gpu-acct sleep 7 > "$L/acct-step.out" 2>&1 &
acct_step=$!
for _ in $(seq 1 100); do
    "$COHORT" status --socket "$L/run/node1/cohortd.sock" > "$L/acct.out" 2>&1 || true
    grep -q "IDLE for" "$L/acct.out" && grep -q "XID 79" "$L/acct.out" \
        && grep -q "GPU 1 allocated but idle for" "$L/log/cohortd-node1.log" && break
    sleep 0.1
done
grep -q "GPU 0 (.*); util 97% now" "$L/acct.out" || fail "GPU 0's utilisation:\n$(cat "$L/acct.out")"
grep -q "GPU 1 (.*); util 0% now.*IDLE for [0-9]* s" "$L/acct.out" || fail "GPU 1 idle:\n$(cat "$L/acct.out")"
grep -q "GPU 2 (.*ECC ERRORS +2" "$L/acct.out" || fail "GPU 2's ECC errors:\n$(cat "$L/acct.out")"
grep -q "GPU 3 (.*XID 79" "$L/acct.out" || fail "GPU 3's Xid:\n$(cat "$L/acct.out")"
grep -q "GPU 1 allocated but idle for" "$L/log/cohortd-node1.log" \
    || fail "the daemon's log does not flag the idle GPU:\n$(tail -n 20 "$L/log/cohortd-node1.log")"
grep -q "GPU 3 reported Xid 79" "$L/log/cohortd-node1.log" || fail "no Xid in the daemon's log"
other=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$COHORT" status --socket "$L/run/node1/cohortd.sock" 2>&1)
[[ $other != *"GPU 0"* ]] || fail "another user sees the step's GPUs:\n$other"
# cohort top: node1's GPUs with the step and its user, node2's through node1's daemon over
# the peer protocol; another user sees the GPUs held but not whose; an unknown node is named.
"$COHORT" top --once --socket "$L/run/node1/cohortd.sock" --nodes node2 > "$L/top.out" 2>&1 \
    || fail "cohort top:\n$(cat "$L/top.out")"
grep -q "^node1: 4 GPU(s), 4 held by running steps" "$L/top.out" || fail "top's node1:\n$(cat "$L/top.out")"
grep -Eq "^  0 .* 97% .* root" "$L/top.out" || fail "top's GPU 0:\n$(cat "$L/top.out")"
grep -q "IDLE for" "$L/top.out" || fail "top's idle GPU:\n$(cat "$L/top.out")"
grep -q "^node2: 4 GPU(s), 0 held by running steps" "$L/top.out" || fail "top's node2:\n$(cat "$L/top.out")"
other=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$COHORT" top --once --socket "$L/run/node1/cohortd.sock" 2>&1)
[[ $other == *"(another user's)"* && $other != *root* ]] || fail "another user's top:\n$other"
if "$COHORT" top --once --socket "$L/run/node1/cohortd.sock" --nodes node9 > "$L/top9.out" 2>&1; then
    fail "top of an unknown node exited 0"
fi
grep -q "^node9: cannot ask: " "$L/top9.out" || fail "top of an unknown node:\n$(cat "$L/top9.out")"
wait "$acct_step" || fail "the accounted step failed:\n$(cat "$L/acct-step.out")"
for _ in $(seq 1 50); do
    "$COHORT" status --socket "$L/run/node1/cohortd.sock" > "$L/acct.out" 2>&1
    grep -q "GPUs of running steps" "$L/acct.out" || break
    sleep 0.1
done
! grep -q "GPUs of running steps" "$L/acct.out" || fail "the ended step's GPUs are still shown:\n$(cat "$L/acct.out")"
# The step's trial got its GPUs' series as system metrics, written by node1 at the step's end.
for _ in $(seq 1 50); do
    "$COHORT" trials gpu-acct --json > "$L/acct-trials.json" 2>&1 && grep -q "sys/gpu3/util" "$L/acct-trials.json" && break
    sleep 0.2
done
python3 - "$L/acct-trials.json" <<'EOF' || fail "the trial's GPU metrics:\n$(cat "$L/acct-trials.json")"
import json, sys
[trial] = json.load(open(sys.argv[1]))
m = trial["metrics"]
assert m["sys/gpu0/util"]["last"] == 97 and m["sys/gpu0/util"]["count"] >= 3, m["sys/gpu0/util"]
assert m["sys/gpu1/util"]["max"] == 0, m["sys/gpu1/util"]
assert m["sys/gpu2/memory_gib"]["last"] == 20 and m["sys/gpu3/power_w"]["last"] == 250, m
assert m["sys/gpu3/temperature_c"]["last"] == 55, m
EOF
"$COHORT" metrics gpu-acct/1 > "$L/acct-metrics.out" 2>&1 || fail "cohort metrics:\n$(cat "$L/acct-metrics.out")"
grep -q "sys/gpu0/util" "$L/acct-metrics.out" || fail "cohort metrics shows no GPU metrics:\n$(cat "$L/acct-metrics.out")"
unset COHORT_CATALOG
ok "GPU accounting: utilisation per GPU, the idle one, ECC and Xid errors flagged in status and log; only root sees them; cohort top here and over peers; the series in the trial as sys/gpuN metrics"

# 2. The collectives across nodes (TCP between namespaces), checked; then the sbatch example.
timeout 120 srun -N4 --ntasks-per-node=2 --cohort "$COHORT" bench allreduce -b 4 -e 1M -f 16 -n 2 -w 1 \
    > "$L/bench.out" 2>&1 || fail "allreduce across nodes:\n$(cat "$L/bench.out")"
grep -q "8 ranks" "$L/bench.out" || fail "bench output:\n$(cat "$L/bench.out")"
ok "allreduce across 4 nodes, every size correct"
if [[ -x $ROOT/target/release/mlp ]]; then
    job=$(sbatch --parsable -o "$L/mlp.out" --export=ALL,COHORT_MLP="$ROOT/target/release/mlp" \
        examples/sbatch/mlp.sbatch)
    wait_job "$job" 300
    grep -q "loss fell" "$L/mlp.out" || fail "sbatch example:\n$(cat "$L/mlp.out")"
    grep -q "bit-identical on all 4 ranks" "$L/mlp.out" || fail "sbatch example:\n$(cat "$L/mlp.out")"
    ok "sbatch example: the loss falls, parameters bit-identical on 4 nodes"
fi

# 2b. The PyTorch example through the Python package's torch.distributed backend (DDP), from
# its sbatch script, when the Python environment scripts/dev makes is there.
if [[ -x $PY ]] && "$PY" -c 'import cohort.torch' 2>/dev/null; then
    job=$(sbatch --parsable -o "$L/python.out" --export=ALL,PYTHON="$PY",PYTHONWARNINGS=ignore \
        examples/sbatch/python.sbatch)
    wait_job "$job" 600
    grep -q "epoch 2: loss" "$L/python.out" || fail "Python sbatch example:\n$(cat "$L/python.out")"
    grep -q "ms per training step" "$L/python.out" || fail "Python sbatch example:\n$(cat "$L/python.out")"
    ok "Python sbatch example: DDP over the cohort backend on 4 nodes"
else
    echo "skipped: the Python sbatch example and its Slurm search (no $PY with the cohort package; scripts/dev setup makes it)"
fi

# 3. Bad option values and an unreachable daemon: a clear error and a non-zero exit.
if srun -N1 --cohort --cohort-bind=cpu true > "$L/bad.out" 2>&1; then fail "bad --cohort-bind accepted"; fi
grep -q "cohort: --cohort-bind=cpu: use all, gpu or none" "$L/bad.out" || fail "$(cat "$L/bad.out")"
ok "a bad --cohort-bind stops srun with a cohort: message"

# 4. A task killed mid-allreduce: the others fail within seconds, naming it; srun fails.
rm -f "$L"/pid.*
# (errexit holds in the subshell too: the status is caught, not let end it.)
(rc=0; timeout 60 srun -N2 -w node1,node2 --ntasks-per-node=1 --cohort sh -c \
    "echo \$\$ > $L/pid.\$COHORT_RANK; exec $COHORT bench allreduce -b 64K -e 64K -n 100000000 -w 0 -c 0" \
    > "$L/kill.out" 2>&1 || rc=$?; echo "$rc" > "$L/kill.rc") &
killed_step=$!
for _ in $(seq 1 300); do [[ -s $L/pid.1 ]] && break; sleep 0.1; done
[[ -s $L/pid.1 ]] || fail "rank 1 did not start:\n$(cat "$L/kill.out")"
start=$(date +%s)
sleep 2
kill -9 "$(cat "$L/pid.1")"
wait "$killed_step"
elapsed=$(($(date +%s) - start - 2))
[[ -f $L/kill.rc ]] || fail "srun's exit status was not recorded"
[[ $(cat "$L/kill.rc") != 0 ]] || fail "srun succeeded after a task was killed"
grep -q "rank 1 on node2" "$L/kill.out" || fail "the error does not name rank 1 on node2:\n$(cat "$L/kill.out")"
[[ $elapsed -le 15 ]] || fail "took ${elapsed}s"
# The daemons heard of it too: node1's knows that rank 1 failed on node2.
for _ in $(seq 1 50); do
    "$COHORT" status --socket "$L/run/node1/cohortd.sock" | grep -q "rank 1 on node2" && break
    sleep 0.1
done
"$COHORT" status --socket "$L/run/node1/cohortd.sock" | grep -q "failed: .*rank 1 on node2" || \
    fail "node1's cohortd did not hear of rank 1:\n$("$COHORT" status --socket "$L/run/node1/cohortd.sock")"
ok "a killed task is named by its peers (${elapsed}s) and its node's daemon tells the others; srun fails"

# 5. One node's cohortd stopped: the step fails on every node naming it; healthy nodes go on.
pid=$(pgrep -f "cohortd --config $L/etc/cohortd-node4.toml" | head -1)
kill "$pid"
for _ in $(seq 1 50); do [[ -S $L/run/node4/cohortd.sock ]] || break; sleep 0.1; done
start=$(date +%s)
if timeout 60 srun -N4 --cohort true > "$L/missing.out" 2>&1; then fail "a step with a dead daemon started"; fi
elapsed=$(($(date +%s) - start))
grep -q "cannot reach cohortd" "$L/missing.out" || fail "$(cat "$L/missing.out")"
[[ $(grep -c "nodes missing at the deadline.*node4" "$L/missing.out") -ge 3 ]] || \
    fail "healthy nodes do not name node4:\n$(cat "$L/missing.out")"
[[ $elapsed -le 30 ]] || fail "took ${elapsed}s"
[[ -z $(squeue -h) ]] || fail "steps left running:\n$(squeue)"
timeout 60 srun -N3 -w node[1-3] --cohort true || fail "healthy nodes cannot start a step"
# Started again, node4 serves steps again (the later scenarios use all four nodes).
"$ROOT/tests/slurm/cluster.sh" start-cohortd "$L" node4 || fail "node4's cohortd did not start again"
timeout 60 srun -N4 --cohort true > "$L/back.out" 2>&1 || fail "node4's daemon is back, yet:\n$(cat "$L/back.out")"
ok "a node without cohortd fails the step everywhere, named (${elapsed}s); the others go on; started again, it serves steps"
# 6. Another user cannot read a step's plan (the daemon also refuses their joins and exit
#    reports for it: see the daemon's tests).
timeout 60 srun -N1 -w node1 --cohort sh -c 'sleep 4' > /dev/null 2>&1 &
for _ in $(seq 1 40); do ls /tmp/cohort-plan-*.json > /dev/null 2>&1 && break; sleep 0.1; done
plan=$(ls /tmp/cohort-plan-*.json 2>/dev/null | head -1)
[[ -n $plan ]] || fail "no plan file while a step runs"
if setpriv --reuid=65534 --regid=65534 --clear-groups cat "$plan" > /dev/null 2>&1; then
    fail "another user can read $plan"
fi
wait
ok "another user cannot read a running step's plan"
# 6b. Another local user talks to the daemons directly: leader joins of the next jobs' steps
#     (claiming to own them, or with world size 0) and task reports, before and while a real
#     step of those jobs starts. Every one is refused, and the real steps start and succeed.
held=$(sbatch --parsable --hold --wrap true)
scancel "$held"
next=$((held + 1))
setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 tests/slurm/intruder.py \
    "$L/run/node1/cohortd.sock" node1,node2 "$next" 3 > "$L/intruder.out" 2>&1 \
    || fail "the daemon did not refuse another user:\n$(cat "$L/intruder.out")"
(setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 tests/slurm/intruder.py \
    "$L/run/node1/cohortd.sock" node1,node2 "$next" 3 > "$L/intruder2.out" 2>&1; echo $? > "$L/intruder2.rc") &
timeout 60 srun -N2 -w node[1-2] --cohort sh -c 'echo "rank $COHORT_RANK fd ${COHORT_STORE_FD:-none}"' > "$L/victim.out" 2>&1 \
    || fail "a step with an intruder around failed:\n$(cat "$L/victim.out")"
wait
[[ $(cat "$L/intruder2.rc") == 0 ]] || fail "the daemon did not refuse another user:\n$(cat "$L/intruder2.out")"
[[ $(grep -c "^rank" "$L/victim.out") == 2 ]] || fail "the step's ranks:\n$(cat "$L/victim.out")"
# Rank 0, and only rank 0, inherits the store's socket bound before the join.
grep -q "^rank 0 fd [0-9]" "$L/victim.out" && grep -q "^rank 1 fd none" "$L/victim.out" \
    || fail "the store's socket is not handed to rank 0 alone:\n$(cat "$L/victim.out")"
grep -q "may not join job $next" "$L/intruder.out" || fail "the refusal does not say why:\n$(cat "$L/intruder.out")"
"$COHORT" status --socket "$L/run/node1/cohortd.sock" > "$L/status.out"
grep -q "$next.0 attempt 0: 2 ranks on 2 nodes" "$L/status.out" || fail "status:\n$(cat "$L/status.out")"
ok "another user's joins and task reports are refused before and during a step; the step starts"
# 6c. `cohort run` and `srun --cohort` give a rank the same variables, built by one function;
#     only the hardware's differ (the simulated nodes have GPUs and RDMA NICs, this machine's
#     `cohort run` sees none).
names='env | grep -oE "^(COHORT_[A-Z_]+|RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|MASTER_ADDR|MASTER_PORT)=" | tr -d = | sort | tr "\n" " "'
slurm_names=$(timeout 60 srun -N1 -w node1 -n2 --gpus-per-task=1 --cohort sh -c "[ \$COHORT_RANK = 1 ] && $names; true" 2>&1 | grep COHORT_RANK)
local_names=$(timeout 60 "$COHORT" run --no-track --no-prefix -n 2 -- sh -c "[ \$COHORT_RANK = 1 ] && $names; true" 2>&1 | grep COHORT_RANK)
hardware() { echo "$1" | tr ' ' '\n' | grep -vE '^(COHORT_NIC|COHORT_CPUS)$' | tr '\n' ' '; }
[[ $(hardware "$slurm_names") == $(hardware "$local_names") ]] \
    || fail "the ranks' variables differ:\n srun:        $slurm_names\n cohort run:  $local_names"
[[ $slurm_names == *COHORT_NIC*COHORT_PLAN* && $slurm_names == *MASTER_PORT* ]] || fail "srun: $slurm_names"
ok "cohort run and srun --cohort give a rank the same variables"
# 7. Steps recorded in the catalog (--cohort-exp): rank 0's node creates the trial, rank 0
#    logs into it, and the state follows the ranks: completed, or failed with the failing
#    rank's status recorded by its own node.
export COHORT_CATALOG=$L/catalog
timeout 60 srun -N2 --ntasks-per-node=2 --cohort --cohort-exp e2e sh -c \
    'if [ "$COHORT_RANK" = 0 ]; then "$0" log metric loss=0.5 --step 1 && "$0" log metric loss=0.25 --step 2; fi' \
    "$COHORT" > "$L/rec.out" 2>&1 || fail "a recorded step:\n$(cat "$L/rec.out")"
if timeout 60 srun -N2 --ntasks-per-node=2 --cohort --cohort-exp e2e sh -c \
    '[ "$COHORT_RANK" != 3 ] || exit 7' > "$L/rec2.out" 2>&1; then
    fail "a step whose rank 3 exited 7 succeeded"
fi
# slurmstepd records the step's end after srun has returned, each node for itself: rank 0's
# node may record "completed" a moment before rank 3's node records its failure.
for _ in $(seq 1 50); do
    "$COHORT" trials e2e --json > "$L/trials.json" 2> "$L/trials.err" || fail "cohort trials: $(cat "$L/trials.err")"
    if ! grep -q '"running"' "$L/trials.json" && grep -q '"failed"' "$L/trials.json"; then break; fi
    sleep 0.2
done
python3 - "$L/trials.json" <<'EOF' || fail "recorded trials:\n$(cat "$L/trials.json")"
import json, sys
ok, bad = json.load(open(sys.argv[1]))
assert ok["state"] == "completed" and ok["exit_status"] == 0, ok
assert ok["metrics"]["loss"]["last"] == 0.25 and ok["metrics"]["loss"]["count"] == 2, ok
assert ok["slurm_job"] and len(ok["nodes"]) == 2, ok
assert len(bad["nodes"]) == 2, bad
assert bad["state"] == "failed" and bad["exit_status"] == 7, bad
EOF
# Slurm picks the step's two nodes (not always node1 and node2); rank 3 runs on the second.
rank3_node=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[1]["nodes"][1])' "$L/trials.json")
"$COHORT" trial show e2e/2 | grep -q "rank 3 on $rank3_node exited with status 7" \
    || fail "the failure's message (rank 3 ran on $rank3_node):\n$("$COHORT" trial show e2e/2)"
unset COHORT_CATALOG
ok "steps recorded as trials: metrics from rank 0, completed, failed naming rank 3 and its status"

# 7b. A requeued job (`scontrol requeue`, what PreemptMode=REQUEUE does): Slurm runs its step
#     again under the same ids; the daemons start it (the launch count is part of the step's
#     key) and it goes on in the same trial, which records the restart.
export COHORT_CATALOG=$L/requeue-catalog
job=$(sbatch --parsable -N2 --open-mode=append -o "$L/requeue.out" --wrap \
    "srun --cohort --cohort-exp requeue sh -c 'if [ \${SLURM_RESTART_COUNT:-0} = 0 ]; then sleep 120; else echo launch \$SLURM_RESTART_COUNT rank \$COHORT_RANK; fi'")
for _ in $(seq 1 150); do
    "$COHORT" trials requeue --json 2>/dev/null | grep -q '"running"' && break
    sleep 0.2
done
"$COHORT" trials requeue --json | grep -q '"running"' || fail "the job to requeue never ran:\n$(cat "$L/requeue.out")\n$(slurm_state)"
scontrol requeue "$job" || fail "scontrol requeue $job"
hurry "$job"
wait_job "$job" 900
grep -q "launch 1 rank 0" "$L/requeue.out" && grep -q "launch 1 rank 1" "$L/requeue.out" \
    || fail "the requeued job's step did not run again:\n$(cat "$L/requeue.out")\n$(slurm_state)"
"$COHORT" trials requeue --json > "$L/requeue.json"
python3 - "$L/requeue.json" <<'EOF' || fail "the requeued job's trial:\n$(cat "$L/requeue.json")"
import json, sys
trials = json.load(open(sys.argv[1]))
assert len(trials) == 1, "one trial for both launches"
assert trials[0]["state"] == "completed", trials
EOF
"$COHORT" trial show requeue/1 | grep -q "requeued: step 0 started again, launch 2" \
    || fail "the restart is not recorded:\n$("$COHORT" trial show requeue/1)"
unset COHORT_CATALOG
ok "a requeued --cohort job starts its step again, in the same trial, its restart recorded"
# 7c-7e, 10b: preemption, the time limit, the warning by hand, a search of preemptible trials.
source "$ROOT/tests/slurm/preemption.sh"
# 8. A search whose trials are Slurm jobs of 2 nodes each (ASHA, 8 trials): trial 3 is killed
#    mid-run and restarted from its checkpoint; the controller is killed mid-search and resumed.
cat > "$L/worker.py" <<'EOF'
# A trial: resumes after its latest checkpoint, logs loss and a checkpoint every step until
# COHORT_SEARCH_UNTIL. Trial 3's first attempt is killed with SIGKILL after its first step.
import json, os, signal, subprocess, sys
cohort = sys.argv[1]
if os.environ.get("COHORT_RANK") != "0":
    sys.exit(0)
trial, exp = os.environ["COHORT_TRIAL"], os.environ["COHORT_EXPERIMENT"]
x = json.loads(os.environ["COHORT_HPARAMS"])["x"]
until = int(os.environ["COHORT_SEARCH_UNTIL"])
listed = subprocess.run([cohort, "ckpt", "list", f"{exp}/{trial}", "--json"],
                        check=True, capture_output=True, text=True).stdout
done = max([c["step"] for c in json.loads(listed) if c["exists"]], default=0)
if done:
    print(f"resumed from step {done}", flush=True)
here = os.path.dirname(os.path.abspath(__file__))
marker = os.path.join(here, "crashed-once")
os.makedirs(os.path.join(here, "ckpt", trial), exist_ok=True)
for step in range(done + 1, until + 1):
    loss = (x - 0.3) ** 2 + 1.0 / step
    subprocess.run([cohort, "log", "metric", f"loss={loss}", "--step", str(step)], check=True)
    path = os.path.join(here, "ckpt", trial, f"step-{step}.json")
    with open(path, "w") as f:
        json.dump({"step": step}, f)
    subprocess.run([cohort, "log", "checkpoint", path, "--step", str(step)], check=True)
    if trial == "3" and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
EOF
cat > "$L/search.toml" <<EOF
name = "slurm-asha"
command = ["python3", "$L/worker.py", "$COHORT"]
[resources]
nodes = 2
[searcher]
name = "asha"
metric = "loss"
max_trials = 8
max_concurrent_trials = 2
max_length = 8
divisor = 2
max_rungs = 3
mode = "aggressive"
max_restarts = 2
[hyperparameters]
x = { type = "double", minval = 0.0, maxval = 1.0 }
EOF
export COHORT_CATALOG=$L/search-catalog
# The first controller's sbatch is slow, so that it is killed with a submission in flight: the
# next one must adopt that job rather than start the trial twice.
mkdir -p "$L/slow-sbatch"
printf '#!/bin/sh\nsleep 2\nexec %s "$@"\n' "$(command -v sbatch)" > "$L/slow-sbatch/sbatch"
chmod +x "$L/slow-sbatch/sbatch"
# Starts the search of FILE (experiment EXP) through the slow sbatch, SIGKILLs its controller
# once LAUNCHED launches are recorded and a submission is in flight, lets that submission
# complete, and resumes the search to its end; OUT prefixes the output files.
kill_mid_submission_and_resume() {
    local exp=$1 file=$2 launched_at_least=$3 out=$4 controller submitting= launched
    PATH=$L/slow-sbatch:$PATH "$COHORT" search start "$file" > "$out.out" 2>&1 &
    controller=$!
    for _ in $(seq 1 1200); do
        launched=$(cat "$COHORT_CATALOG"/experiments/"$exp"-*/search/events.jsonl 2>/dev/null \
            | grep -c '"launched"' || true)
        if [[ $launched -ge $launched_at_least ]] && pgrep -f "$L/slow-sbatch/sbatch" > /dev/null; then
            submitting=yes
            break
        fi
        sleep 0.1
    done
    [[ -n $submitting ]] || fail "the search $exp did not launch trials:\n$(cat "$out.out")\n$(slurm_state)"
    sleep 1
    kill -9 "$controller"
    wait "$controller" || true
    # The submission completes after its controller died.
    for _ in $(seq 1 300); do pgrep -f "$L/slow-sbatch/sbatch" > /dev/null || break; sleep 0.1; done
    timeout 300 "$COHORT" search resume "$exp" > "$out-resume.out" 2>&1 \
        || fail "resume of $exp:\n$(cat "$out-resume.out")\n$(slurm_state)"
}
kill_mid_submission_and_resume slurm-asha "$L/search.toml" 3 "$L/search"
"$COHORT" search status slurm-asha --json > "$L/search.json"
python3 - "$L/search.json" <<'EOF' || fail "search status:\n$(cat "$L/search.json")\n$("$COHORT" search status slurm-asha)\n$(slurm_state)"
import json, sys
doc = json.load(open(sys.argv[1]))
trials = doc["trials"]
assert doc["finished"] == "done", doc
assert len(trials) == 8, trials
assert all(t["state"] in ("completed", "killed") for t in trials), trials
assert any(t["state"] == "completed" and t["length"] == 8 for t in trials), trials
three = [t for t in trials if t["trial"] == 3][0]
assert three["restarts"] == 1, three
assert all(t["restarts"] == 0 for t in trials if t["trial"] != 3), trials
EOF
"$COHORT" trial show slurm-asha/3 | grep -q "slurm        job" || fail "trial 3 has no Slurm job:\n$("$COHORT" trial show slurm-asha/3)"
grep -q "resumed from step 1" "$L"/search-catalog/experiments/slurm-asha-*/trials/000003/slurm-*.out \
    || fail "trial 3 did not resume from its checkpoint:\n$(cat "$L"/search-catalog/experiments/slurm-asha-*/trials/000003/slurm-*.out)"
unset COHORT_CATALOG
ok "a search of 8 trials as 2-node Slurm jobs: a killed trial restarted from its checkpoint, the controller killed and resumed"
# 8b. The same search with its rounds submitted as Slurm job arrays ([resources] job_array):
#     trial 3's element is killed and restarted from its checkpoint; the controller is killed
#     while an array's sbatch is in flight, and the resumed one adopts that array's elements
#     by its name and manifest rather than submit them again.
mkdir -p "$L/array"
cp "$L/worker.py" "$L/array/worker.py"
sed -e 's/name = "slurm-asha"/name = "slurm-array"/' -e "s|$L/worker.py|$L/array/worker.py|" \
    -e 's/nodes = 2/nodes = 1\njob_array = true/' -e 's/max_concurrent_trials = 2/max_concurrent_trials = 4/' \
    "$L/search.toml" > "$L/array.toml"
grep -q "job_array = true" "$L/array.toml" || fail "array.toml:\n$(cat "$L/array.toml")"
export COHORT_CATALOG=$L/array-catalog
kill_mid_submission_and_resume slurm-array "$L/array.toml" 4 "$L/array"
"$COHORT" search status slurm-array --json > "$L/array.json"
search_dir=$(echo "$COHORT_CATALOG"/experiments/slurm-array-*/search)
python3 - "$L/array.json" "$search_dir" <<'PYEOF' || fail "array search:\n$(cat "$L/array.json")\n$(cat "$search_dir/events.jsonl")\n$(slurm_state)"
import glob, json, os, sys
doc = json.load(open(sys.argv[1]))
trials = doc["trials"]
assert doc["finished"] == "done", doc
assert len(trials) == 8, trials
assert all(t["state"] in ("completed", "killed") for t in trials), trials
assert any(t["state"] == "completed" and t["length"] == 8 for t in trials), trials
three = [t for t in trials if t["trial"] == 3][0]
assert three["restarts"] == 1, three
assert all(t["restarts"] == 0 for t in trials if t["trial"] != 3), trials
events = [json.loads(l) for l in open(os.path.join(sys.argv[2], "events.jsonl"))]
launched = [e for e in events if e["event"] == "launched"]
assert launched and all(e["launcher"] == "slurm_array" for e in launched), launched
# Each launch of a trial, length and attempt is recorded once: none submitted twice.
keys = [(e["trial"], e["until"], e["attempt"]) for e in launched]
assert len(keys) == len(set(keys)), keys
manifests = [json.load(open(m)) for m in glob.glob(os.path.join(sys.argv[2], "arrays", "*.json"))]
# The first round, 4 new trials, was one array of 4.
assert [1, 2, 3, 4] in [m["trials"] for m in manifests], manifests
PYEOF
"$COHORT" trial show slurm-array/3 | grep -q "(array element [0-9]*_[0-9]*)" \
    || fail "trial 3 does not name its array element:\n$("$COHORT" trial show slurm-array/3)"
grep -q "resumed from step 1" "$COHORT_CATALOG"/experiments/slurm-array-*/trials/000003/slurm-*.out \
    || fail "trial 3 did not resume from its checkpoint:\n$(cat "$COHORT_CATALOG"/experiments/slurm-array-*/trials/000003/slurm-*.out)"
unset COHORT_CATALOG
ok "a search submitting its rounds as Slurm job arrays: a killed element restarted from its checkpoint, the controller killed mid-submission and resumed, nothing submitted twice"
# 9. The controller itself as a Slurm job: it submits its trials from a compute node.
sed -e 's/name = "slurm-asha"/name = "slurm-controller"/' -e 's/max_trials = 8/max_trials = 4/' \
    -e 's/nodes = 2/nodes = 1/' "$L/search.toml" > "$L/search2.toml"
export COHORT_CATALOG=$L/search-catalog
job=$(sbatch --parsable -N1 -o "$L/controller.out" --wrap "$COHORT search start $L/search2.toml")
wait_job "$job" 1500
"$COHORT" search status slurm-controller --json > "$L/search2.json" \
    || fail "status:\n$(cat "$L/controller.out")"
python3 - "$L/search2.json" <<'EOF' || fail "the search run as a job:\n$(cat "$L/search2.json")\n$(cat "$L/controller.out")"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["finished"] == "done", doc
assert len(doc["trials"]) == 4, doc
EOF
unset COHORT_CATALOG
ok "a search whose controller is itself a Slurm job"
# 10. A Slurm search of the PyTorch example: each trial a job of 2 nodes running
# `python train.py` (a shell line in the experiment file) under srun --cohort.
if [[ -x $PY ]] && "$PY" -c 'import cohort.torch' 2>/dev/null; then
    sed -e 's/name = "python-asha"/name = "python-slurm"/' \
        -e 's/^max_concurrent_trials = 2/max_concurrent_trials = 4/' \
        examples/search/python.toml > "$L/python-search.toml"
    printf '\n[resources]\nnodes = 2\n' >> "$L/python-search.toml"
    PATH=$(dirname "$PY"):$PATH PYTHONWARNINGS=ignore timeout 600 "$COHORT" search start \
        "$L/python-search.toml" --catalog "$L/python-catalog" > "$L/python-search.out" 2>&1 \
        || fail "Python search:\n$(cat "$L/python-search.out")\n$(slurm_state)"
    "$COHORT" search status python-slurm --catalog "$L/python-catalog" --json > "$L/python-search.json"
    python3 - "$L/python-search.json" <<'EOF' || fail "Python search:\n$(cat "$L/python-search.json")"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["finished"] == "done", doc
assert len(doc["trials"]) == 4, doc
assert any(t["state"] == "completed" and t["length"] == 4 for t in doc["trials"]), doc
EOF
    ok "a Slurm search of the PyTorch example, trials of 2 nodes each"
fi
"$ROOT/tests/slurm/cluster.sh" down "$L"
trap - EXIT
rm -rf "$L"
echo "all Slurm end-to-end tests passed"
