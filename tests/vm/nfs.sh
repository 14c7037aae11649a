#!/usr/bin/env bash
# The catalog on NFS with two clients: vm1 serves an export (the kernel's nfsd) and mounts it,
# vm2 mounts it too, with NFS version VERS (4.2 or 3). Both then create trials of one experiment
# at the same moment (unique numbers, none lost), and each client's queries see what the
# other committed (trials, metrics, states) once the attribute cache has let it through.
#   tests/vm/nfs.sh [4.2|3]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
vers=${1:-4.2}
script=$(mktemp /tmp/cohort-vm-nfs.XXXXXX)
trap 'rm -f "$script"' EXIT
cat > "$script" <<SCRIPT
set -e
if [ "\$COHORT_VM_NAME" = vm1 ]; then
    mkdir -p /export
    echo "/export 10.88.0.0/24(rw,sync,no_subtree_check,no_root_squash)" > /etc/exports
    mount -t nfsd nfsd /proc/fs/nfsd
    echo 10 > /proc/fs/nfsd/nfsv4gracetime 2>/dev/null || true
    echo 10 > /proc/fs/nfsd/nfsv4leasetime 2>/dev/null || true
    rpcbind -w 2>/dev/null || rpcbind
    exportfs -ra
    rpc.mountd
    rpc.nfsd 4
fi
mkdir -p /mnt/nfs
for i in \$(seq 1 240); do
    mount -t nfs -o vers=$vers,hard 10.88.0.11:/export /mnt/nfs 2>/tmp/mount.err && break
    sleep 0.5
done
mount | grep -q " /mnt/nfs type nfs" || { cat /tmp/mount.err; exit 1; }
M=/mnt/nfs
export COHORT_CATALOG=\$M/catalog
other=vm2; [ "\$COHORT_VM_NAME" = vm2 ] && other=vm1
# Waits (at most 120 s) for the file \$1 on the mount, which the other VM makes.
await() { for i in \$(seq 1 480); do [ -e "\$M/\$1" ] && return 0; sleep 0.25; done; echo "waited for \$1 in vain"; exit 1; }
[ "\$COHORT_VM_NAME" = vm1 ] && target/release/cohort bench catalog generate --catalog \$COHORT_CATALOG --trials 3 --metrics 2 --steps 50 --experiment first >/dev/null
touch \$M/up-\$COHORT_VM_NAME
await up-\$other
await up-vm1
# Both clients at once: 15 trials each of one experiment.
for i in \$(seq 1 15); do target/release/cohort run -n 1 --experiment both --no-prefix --hparam vm=\$COHORT_VM_NAME -- true >/dev/null 2>&1; done
touch \$M/done-\$COHORT_VM_NAME
await done-\$other
sleep 4   # past the attribute cache's window (acregmax 60 s is the bound; directories change here)
target/release/cohort trials both --json > /tmp/both.json
python3 - <<'PY'
import json
trials = json.load(open("/tmp/both.json"))
ids = [t["trial"] for t in trials]
by = {}
for t in trials:
    by[t["hparams"]["vm"]] = by.get(t["hparams"]["vm"], 0) + 1
assert len(ids) == 30 and sorted(ids) == list(range(1, 31)), f"trials {sorted(ids)}"
assert by == {"vm1": 15, "vm2": 15}, by
assert all(t["state"] == "completed" for t in trials), [t["state"] for t in trials]
print("ok: 30 trials created by two clients at once: numbers 1-30, each once, all completed")
PY
target/release/cohort trials first --sort val_loss:min --json | python3 -c 'import json,sys; t=json.load(sys.stdin); assert len(t)==3 and all(x["metrics"]["val_loss"]["count"]==50 for x in t), t; print("ok: the other client reads the 3 trials of first with all 50 points")'
touch \$M/checked-\$COHORT_VM_NAME
# The server stays up until the other client has finished with it.
[ "\$COHORT_VM_NAME" = vm1 ] && await checked-vm2
true
SCRIPT
exec "$HERE/run.sh" --timeout "${COHORT_VM_TIMEOUT:-600}" "$script" "$script"
