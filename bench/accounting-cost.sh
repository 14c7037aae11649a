#!/usr/bin/env bash
# What cohortd's GPU accounting costs a node: two daemons side by side for the same time, one
# sampling every GPU every INTERVAL seconds, the reference with accounting off, each one's CPU
# time (user + system, from /proc/PID/stat) at the end. Prints both and the difference as a
# share of one core; the target is below 1%.
#   bench/accounting-cost.sh            NVML where the driver is (a GPU node), else scripted
#                                       samples of an 8-GPU topology file (the daemon's own
#                                       loop without NVML's calls)
# Settings (environment):
#   SECONDS_RUN=120   how long both daemons run
#   INTERVAL=5        the accounting's interval (cohortd.toml's default)
#   BIN=target/release  where cohort and cohortd are (built here when absent)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECONDS_RUN=${SECONDS_RUN:-120}
INTERVAL=${INTERVAL:-5}
BIN=${BIN:-$ROOT/target/release}
if [[ ! -x $BIN/cohortd || ! -x $BIN/cohort ]]; then
    cargo build --release --locked -p cohort-daemon -p cohort-cli
fi
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
"$BIN/cohortd" --gen-key "$dir/key" > /dev/null

topology=""
if ldconfig -p 2>/dev/null | grep -q libnvidia-ml.so.1; then
    echo "sampling through NVML (this node's driver)"
    scripted=""
else
    topology=topology/test_data/hgx-2s-8gpu-8nic.nccl.xml
    echo "no NVIDIA driver here: scripted samples of the 8 GPUs of $topology (the loop without NVML's own cost)"
    "$BIN/cohort" topo --from "$topology" --json | python3 -c '
import json, sys
gpus = json.load(sys.stdin)["gpus"]
sample = dict(util=90, memory_used=20 << 30, memory_total=80 << 30, power_mw=400000,
              temperature_c=60, ecc_uncorrected=0)
json.dump({g["bus_id"]: [sample] for g in gpus}, open(sys.argv[1], "w"))
' "$dir/script.json"
    scripted="scripted_gpus = \"$dir/script.json\""
fi

start_daemon() { # name interval
    local name=$1 interval=$2 port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    {
        echo "socket = \"$dir/$name.sock\""
        echo "node_name = \"$name\""
        echo "[peer]"
        echo "listen = \"127.0.0.1\""
        echo "port = $port"
        echo "key_file = \"$dir/key\""
        if [[ -n $topology ]]; then
            echo "[topology]"
            echo "source = \"$ROOT/$topology\""
        fi
        echo "[accounting]"
        echo "interval = $interval"
        [[ -z $scripted ]] || echo "$scripted"
    } > "$dir/$name.toml"
    "$BIN/cohortd" --config "$dir/$name.toml" 2> "$dir/$name.log" &
    pids+=($!)
}
start_daemon sampling "$INTERVAL"
start_daemon reference 0
for name in sampling reference; do
    for _ in $(seq 1 100); do [[ -S $dir/$name.sock ]] && break; sleep 0.1; done
    [[ -S $dir/$name.sock ]] || { cat "$dir/$name.log"; echo "cohortd ($name) did not start" >&2; exit 2; }
done
# Both serve; the sampling one has taken its first samples (cohort top shows them).
"$BIN/cohort" top --once --socket "$dir/sampling.sock" | head -n 3
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=($(ticks "${pids[0]}") $(ticks "${pids[1]}"))
sleep "$SECONDS_RUN"
after=($(ticks "${pids[0]}") $(ticks "${pids[1]}"))
hz=$(getconf CLK_TCK)
python3 - "$hz" "$SECONDS_RUN" "$INTERVAL" "${before[@]}" "${after[@]}" <<'EOF'
import sys
hz, seconds, interval = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
b_on, b_off, a_on, a_off = map(int, sys.argv[4:8])
on, off = (a_on - b_on) / hz, (a_off - b_off) / hz
share = lambda cpu: 100 * cpu / seconds
print(f"over {seconds:.0f} s: sampling every {interval} s used {on * 1000:.0f} ms of CPU "
      f"({share(on):.3f}% of a core); accounting off {off * 1000:.0f} ms ({share(off):.3f}%)")
cost = share(on - off)
print(f"the accounting's cost: {cost:.3f}% of one core (target < 1%): "
      + ("met" if cost < 1 else "NOT met"))
sys.exit(0 if cost < 1 else 1)
EOF
