#!/usr/bin/env bash
# A real 4-node Slurm 22.05 cluster on this machine, for Cohort's end-to-end tests.
#
#   tests/slurm/cluster.sh up DIR      start munged, slurmctld, and per node (each in its own
#                                      network namespace and UTS namespace) slurmd and cohortd
#   tests/slurm/cluster.sh down DIR    stop everything started, by PID; delete the namespaces
#   tests/slurm/cluster.sh start-cohortd DIR NODE   start NODE's cohortd again (after a test
#                                      stopped it), waiting for its socket
#
# Needs root, Debian's slurmd slurmctld slurm-client munge, iproute2, and release builds of
# cohortd and spank_cohort.so (cargo build --release). Every file lives under DIR; nothing is
# written to /etc. Each node pretends to have 4 GPUs (character devices for GRES) and, through
# cohortd, the topology of a JUWELS Booster node (../shared/fixtures, when present) or of the
# project's own 8-GPU fixture.
set -euo pipefail

cmd=${1:?usage: cluster.sh up|down|start-cohortd DIR [NODE]}
L=${2:?usage: cluster.sh up|down|start-cohortd DIR [NODE]}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NODES=(node1 node2 node3 node4)
BRIDGE=cohortbr0
NETNS_PREFIX=cohort-

down() {
    if [[ -f $L/pids ]]; then
        # Daemons started by this harness only, newest first.
        tac "$L/pids" | while read -r pid; do kill "$pid" 2>/dev/null || true; done
        sleep 1
        tac "$L/pids" | while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done
        rm -f "$L/pids"
    fi
    for node in "${NODES[@]}"; do
        ip netns del "$NETNS_PREFIX$node" 2>/dev/null || true
        ip link del "veth-$node" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
}

# Starts NODE's cohortd in its namespaces, from the configuration `up` wrote.
start_cohortd() {
    local node=$1
    nsenter --net="/run/netns/$NETNS_PREFIX$node" unshare --uts sh -c \
        "hostname $node; exec $ROOT/target/release/cohortd --config $L/etc/cohortd-$node.toml" \
        >> "$L/log/cohortd-$node.log" 2>&1 &
    echo $! >> "$L/pids"
}

if [[ $cmd == down ]]; then
    down
    exit 0
fi
if [[ $cmd == start-cohortd ]]; then
    node=${3:?usage: cluster.sh start-cohortd DIR NODE}
    start_cohortd "$node"
    for _ in $(seq 1 50); do [[ -S $L/run/$node/cohortd.sock ]] && exit 0; sleep 0.1; done
    echo "cluster.sh: cohortd on $node did not start" >&2
    exit 1
fi
[[ $cmd == up ]] || { echo "usage: cluster.sh up|down DIR" >&2; exit 2; }

mkdir -p "$L"/{etc,run,log,spool,state,munge,dev}
chmod 711 "$L/munge"
: > "$L/pids"
trap 'echo "cluster.sh: failed; see $L/log" >&2; down' ERR

# Fake GPUs: character devices with /dev/null's numbers.
for i in 0 1 2 3; do
    [[ -e $L/dev/gpu$i ]] || mknod "$L/dev/gpu$i" c 1 3
done

# munge with a private socket and key.
dd if=/dev/urandom of="$L/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$L/munge/munge.key"
munged --force --socket="$L/munge/munge.socket" --key-file="$L/munge/munge.key" \
    --pid-file="$L/munge/munged.pid" --log-file="$L/log/munged.log" --seed-file="$L/munge/seed"
cat "$L/munge/munged.pid" >> "$L/pids"

# The network: a bridge here, one namespace per node.
ip link add "$BRIDGE" type bridge
ip addr add 10.99.0.1/24 dev "$BRIDGE"
ip link set "$BRIDGE" up
n=0
for node in "${NODES[@]}"; do
    n=$((n + 1))
    ns=$NETNS_PREFIX$node
    ip netns add "$ns"
    ip link add "veth-$node" type veth peer name eth0 netns "$ns"
    ip link set "veth-$node" master "$BRIDGE" up
    ip -n "$ns" addr add "10.99.0.1$n/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
done

topology=$ROOT/../shared/fixtures/topologies/juwels-booster_4xA100_4xHDR.hwloc.xml
[[ -f $topology ]] || topology=$ROOT/topology/test_data/hgx-2s-8gpu-8nic.nccl.xml

# These nodes have no GPUs: cohortd's GPU accounting replays scripted samples of the
# topology's GPUs instead of reading NVML (cohortd.toml's [accounting] scripted_gpus): GPU 0
# busy, GPU 1 idle, GPU 2 gaining uncorrected ECC errors, GPU 3 reporting Xid 79.
"$ROOT/target/release/cohort" topo --from "$topology" --json | python3 -c '
import json, sys
gpus = json.load(sys.stdin)["gpus"]
def sample(util, **extra):
    return dict(util=util, memory_used=20 << 30, memory_total=40 << 30, power_mw=250000,
                temperature_c=55, **extra)
script = {}
for gpu in gpus:
    i = gpu["index"]
    if i == 1:
        samples = [sample(0)]
    elif i == 2:
        samples = [sample(90, ecc_uncorrected=0), sample(90, ecc_uncorrected=2)]
    elif i == 3:
        samples = [sample(90), sample(90, xids=[79])]
    else:
        samples = [sample(97)]
    script[gpu["bus_id"]] = samples
json.dump(script, open(sys.argv[1], "w"), indent=1)
' "$L/etc/scripted-gpus.json"

cat > "$L/etc/slurm.conf" <<EOF
ClusterName=cohort
SlurmctldHost=localhost(10.99.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$L/munge/munge.socket
StateSaveLocation=$L/state
SlurmdSpoolDir=$L/spool/%n
SlurmctldPidFile=$L/run/slurmctld.pid
SlurmdPidFile=$L/run/slurmd-%n.pid
SlurmctldLogFile=$L/log/slurmctld.log
SlurmdLogFile=$L/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
PlugStackConfig=$L/etc/plugstack.conf
GresTypes=gpu
NodeName=node[1-4] NodeAddr=10.99.0.1[1-4] CPUs=4 Gres=gpu:4 State=UNKNOWN
# Preemption (tests/slurm/preemption.sh): a job of the partition "high" takes nodes back from
# the others' jobs, which Slurm requeues.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=debug Nodes=node[1-4] Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=high Nodes=node[1-4] MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
echo "NodeName=node[1-4] Name=gpu File=$L/dev/gpu[0-3]" > "$L/etc/gres.conf"
echo "required $ROOT/target/release/libspank_cohort.so socket=$L/run/%n/cohortd.sock timeout=10" \
    > "$L/etc/plugstack.conf"
export SLURM_CONF=$L/etc/slurm.conf

"$ROOT/target/release/cohortd" --gen-key "$L/etc/cluster.key" >/dev/null
slurmctld -D -i -f "$SLURM_CONF" > "$L/log/slurmctld.out" 2>&1 &
echo $! >> "$L/pids"

n=0
for node in "${NODES[@]}"; do
    n=$((n + 1))
    mkdir -p "$L/run/$node" "$L/spool/$node"
    {
        echo "socket = \"$L/run/$node/cohortd.sock\""
        echo "node_name = \"$node\""
        echo "[peer]"
        echo "listen = \"10.99.0.1$n\""
        echo "key_file = \"$L/etc/cluster.key\""
        echo "[peer.nodes]"
        for i in 1 2 3 4; do echo "node$i = \"10.99.0.1$i:7107\""; done
        echo "[topology]"
        echo "source = \"$topology\""
        echo "[accounting]"
        echo "interval = 1"
        echo "idle_after = 3"
        echo "scripted_gpus = \"$L/etc/scripted-gpus.json\""
    } > "$L/etc/cohortd-$node.toml"
    start_cohortd "$node"
    nsenter --net="/run/netns/$NETNS_PREFIX$node" unshare --uts sh -c \
        "hostname $node; exec slurmd -D -f $SLURM_CONF -N $node" > "$L/log/slurmd-$node.out" 2>&1 &
    echo $! >> "$L/pids"
done

# Ready when every node is idle.
for _ in $(seq 1 150); do
    idle=$(sinfo -h -t idle -o '%n' 2>/dev/null | wc -l)
    [[ $idle -eq ${#NODES[@]} ]] && break
    sleep 0.2
done
if [[ $(sinfo -h -t idle -o '%n' | wc -l) -ne ${#NODES[@]} ]]; then
    echo "cluster.sh: nodes not idle:" >&2
    sinfo >&2 || true
    false
fi
for node in "${NODES[@]}"; do
    for _ in $(seq 1 50); do [[ -S $L/run/$node/cohortd.sock ]] && break; sleep 0.1; done
    [[ -S $L/run/$node/cohortd.sock ]] || { echo "cluster.sh: cohortd on $node did not start" >&2; false; }
done
trap - ERR
echo "cluster up: SLURM_CONF=$SLURM_CONF"
