#!/usr/bin/env bash
# Runs shell scripts in Debian 12 VMs under qemu (TCG), one VM per script, the VMs on one
# virtual network (10.88.0.11, 10.88.0.12; a qemu socket link, so at most two), each with the
# checkout mounted at its own path (9p). Waits for all of them, at most --timeout seconds,
# prints each VM's output, and exits with the first non-zero status (124 when the deadline
# passed, naming the VMs still running).
#   tests/vm/run.sh [--timeout SECONDS] SCRIPT [SCRIPT]
# In the VM, a script runs as root from the checkout's root, with COHORT_VM_NAME (vm1, vm2),
# COHORT_VM_ADDR and COHORT_VM_PEERS (the other VMs' addresses) set. The image is built on
# first use (tests/vm/image.sh). Needs root and qemu-system-x86.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
timeout=600
while [[ ${1:-} == --* ]]; do
    case $1 in
        --timeout) timeout=$2; shift 2 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
(($# >= 1 && $# <= 2)) || { echo "usage: tests/vm/run.sh [--timeout SECONDS] SCRIPT [SCRIPT]" >&2; exit 2; }
image=$("$HERE/image.sh")
run=$(mktemp -d /tmp/cohort-vm-run.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
addrs=()
for i in $(seq 1 $#); do addrs+=("10.88.0.1$i"); done
i=0
for script in "$@"; do
    i=$((i + 1))
    ctl=$run/vm$i
    mkdir -p "$ctl"
    cp "$script" "$ctl/command"
    peers=$(printf '%s\n' "${addrs[@]}" | grep -vx "10.88.0.1$i" | paste -sd, || true)
    printf 'COHORT_VM_NAME=vm%s\nCOHORT_VM_ADDR=10.88.0.1%s\nCOHORT_VM_PEERS=%s\nCOHORT_VM_REPO=%s\nexport COHORT_VM_NAME COHORT_VM_ADDR COHORT_VM_PEERS COHORT_VM_REPO\n' \
        "$i" "$i" "$peers" "$ROOT" > "$ctl/env"
    # The first VM listens on the link (alone, its NIC exists all the same), the second joins.
    if ((i == 1)); then link="listen=127.0.0.1:$port"; else link="connect=127.0.0.1:$port"; fi
    net=(-netdev "socket,id=net0,$link" -device "virtio-net-pci,netdev=net0,mac=52:54:00:88:00:1$i")
    qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 -nodefaults -no-reboot \
        -display none -monitor none -serial "file:$ctl/console.log" \
        -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
        -append "console=ttyS0 root=/dev/vda rw quiet panic=-1 init=/sbin/cohort-vm-init" \
        -drive "file=$image/root.img,if=virtio,format=raw,snapshot=on" \
        -device virtio-rng-pci \
        -virtfs "local,path=$ROOT,mount_tag=repo,security_model=none,multidevs=remap" \
        -virtfs "local,path=$ctl,mount_tag=ctl,security_model=none" \
        "${net[@]}" &
    pids+=($!)
    # The listening side first.
    ((i > 1)) || sleep 1
done
deadline=$((SECONDS + timeout))
status=0
for i in $(seq 1 $#); do
    while [[ ! -f $run/vm$i/status ]] && ((SECONDS < deadline)) && kill -0 "${pids[$((i - 1))]}" 2>/dev/null; do
        sleep 0.5
    done
done
for i in $(seq 1 $#); do
    echo "---- vm$i (10.88.0.1$i): $(basename "${!i}")"
    cat "$run/vm$i/output" 2>/dev/null || true
    if [[ -f $run/vm$i/status ]]; then
        s=$(cat "$run/vm$i/status")
        echo "---- vm$i exited with $s"
        ((status != 0 || s == 0)) || status=$s
    elif ((SECONDS >= deadline)); then
        echo "---- vm$i still running after ${timeout}s: stopped (console: $run/vm$i/console.log)"
        tail -n 20 "$run/vm$i/console.log" 2>/dev/null || true
        ((status != 0)) || status=124
    else
        echo "---- vm$i ended without a status (console: $run/vm$i/console.log)"
        tail -n 20 "$run/vm$i/console.log" 2>/dev/null || true
        ((status != 0)) || status=1
    fi
done
exit "$status"
