#!/usr/bin/env bash
# The catalog on NFS with two clients: vm1 serves an export (the kernel's nfsd) and mounts it,
# vm2 mounts it too, with NFS version VERS (4.2 or 3; both clients run rpcbind and rpc.statd, so
# NFSv3's locks go through the server's lock manager as on a cluster). Then:
#  1. both create trials of one experiment at the same moment (unique numbers, none lost), and
#     each client's queries see what the other committed;
#  2. a writer on vm1 is SIGKILLed while vm2 queries its trial and rebuilds the index over and
#     over: every point it committed is read on vm2, in order, nothing torn;
#  3. vm2 writes checkpoints while vm1 collects them (--keep-latest 2) over and over: the latest
#     is never deleted, the listing never names a deleted file, the end state is the policy's;
#  4. the catalog's own crash and concurrency tests (catalog/tests/processes.rs, built on the
#     host) run on vm2 with their directories on the mount.
#   tests/vm/nfs.sh [4.2|3]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
vers=${1:-4.2}
ROOT=$(cd "$HERE/../.." && pwd)
# The catalog's crash and concurrency tests (catalog/tests/processes.rs), as cargo built them.
tests=$(cd "$ROOT" && cargo test --locked -p cohort-catalog --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == "processes":
        print(m["executable"])' | tr '\n' ' ')
[[ -n $tests ]] || { echo "nfs.sh: cargo test -p cohort-catalog --no-run gave no test binaries" >&2; exit 1; }
script=$(mktemp /tmp/cohort-vm-nfs.XXXXXX)
trap 'rm -f "$script"' EXIT
cat > "$script" <<SCRIPT
set -e
# Every client's lock manager needs rpcbind and statd (NFSv3; harmless on v4).
rpcbind -w 2>/dev/null || rpcbind
mkdir -p /var/lib/nfs/sm /var/lib/nfs/sm.bak
rpc.statd --no-notify 2>/dev/null || rpc.statd
if [ "\$COHORT_VM_NAME" = vm1 ]; then
    mkdir -p /export
    echo "/export 10.88.0.0/24(rw,sync,no_subtree_check,no_root_squash)" > /etc/exports
    mount -t nfsd nfsd /proc/fs/nfsd
    echo 10 > /proc/fs/nfsd/nfsv4gracetime 2>/dev/null || true
    echo 10 > /proc/fs/nfsd/nfsv4leasetime 2>/dev/null || true
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
echo "mounted: \$(grep " /mnt/nfs " /proc/mounts)"
M=/mnt/nfs
export COHORT_CATALOG=\$M/catalog
other=vm2; [ "\$COHORT_VM_NAME" = vm2 ] && other=vm1
# Waits (at most \$2 seconds, default 120) for the file \$1 on the mount, which the other VM makes.
await() { for i in \$(seq 1 \$((4 * \${2:-120}))); do [ -e "\$M/\$1" ] && return 0; sleep 0.25; done; echo "waited for \$1 in vain"; exit 1; }
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
await checked-\$other

# 2. A writer SIGKILLed on vm1 (each point one cohort log, committed when it returns) while
# vm2 queries the trial and rebuilds the experiment's index, over and over.
C=target/release/cohort
if [ "\$COHORT_VM_NAME" = vm1 ]; then
    \$C run -n 1 --experiment killed --no-prefix -- sh -c "echo \\\$\\\$ > \$M/writer.pid; i=0; while :; do i=\\\$((i + 1)); \$C log metric loss=\\\$i --step \\\$i || exit 1; echo \\\$i > /tmp/logged.t; mv /tmp/logged.t /tmp/logged; done" > /tmp/killed.out 2>&1 &
    run=\$!
    await readers-vm2
    for i in \$(seq 1 480); do [ "\$(cat /tmp/logged 2>/dev/null || echo 0)" -ge 40 ] && break; sleep 0.25; done
    sleep 2
    kill -9 -\$(cat \$M/writer.pid)
    committed=\$(cat /tmp/logged)
    if wait \$run; then echo "cohort run succeeded although its rank was SIGKILLed"; cat /tmp/killed.out; exit 1; fi
    echo \$committed > \$M/killed-at
    echo "ok: the writer SIGKILLed after committing \$committed points"
else
    await writer.pid
    touch \$M/readers-vm2
    rounds=0
    while [ ! -e \$M/killed-at ]; do
        \$C trials killed --json > /tmp/q.json 2> /tmp/q.err || { echo "a query failed while the writer ran:"; cat /tmp/q.err; exit 1; }
        \$C metrics killed/1 --format json > /tmp/m.json 2> /tmp/m.err || { echo "a history read failed while the writer ran:"; cat /tmp/m.err; exit 1; }
        \$C index killed > /dev/null 2> /tmp/i.err || { echo "an index rebuild failed while the writer ran:"; cat /tmp/i.err; exit 1; }
        rounds=\$((rounds + 1))
    done
    \$C index killed > /dev/null
    \$C metrics killed/1 --format json > /tmp/m.json
    \$C trials killed --json > /tmp/q.json
    python3 - \$(cat \$M/killed-at) \$rounds <<'PY'
import json, sys
committed, rounds = int(sys.argv[1]), int(sys.argv[2])
points = json.load(open("/tmp/m.json"))["metrics"]["loss"]
steps = [p["step"] for p in points]
assert steps == list(range(1, len(steps) + 1)), f"steps not 1..n in order: {steps}"
assert all(p["value"] == p["step"] for p in points), "a value differs from what was logged"
assert len(steps) >= committed, f"{committed} points committed, {len(steps)} read"
trials = json.load(open("/tmp/q.json"))
assert [t["state"] for t in trials] == ["failed"], trials
print(f"ok: the other client read all {committed} committed points ({len(steps)} in all) of the SIGKILLed writer, after {rounds} rounds of queries and index rebuilds during the writes")
PY
fi
touch \$M/killed-checked-\$COHORT_VM_NAME
await killed-checked-\$other

# 3. Checkpoints written on vm2 while vm1 collects them (keep the latest 2), over and over.
if [ "\$COHORT_VM_NAME" = vm2 ]; then
    mkdir -p \$M/ckpt
    \$C run -n 1 --experiment gc --no-prefix -- sh -c "for i in \\\$(seq 1 40); do [ \\\$i = 2 ] && while [ ! -e \$M/collecting ]; do sleep 0.25; done; echo step \\\$i > \$M/ckpt/step-\\\$i; \$C log checkpoint \$M/ckpt/step-\\\$i --step \\\$i || exit 1; test -e \$M/ckpt/step-\\\$i || { echo step \\\$i deleted while latest; exit 1; }; done" > /tmp/gc-writer.out 2>&1 \
        || { echo "the checkpoint writer failed:"; cat /tmp/gc-writer.out; exit 1; }
    touch \$M/gc-written
else
    # The writer waits after its first checkpoint until this client sees the experiment.
    for i in \$(seq 1 480); do \$C trials gc > /dev/null 2>&1 && break; sleep 0.25; done
    touch \$M/collecting
    rounds=0
    while [ ! -e \$M/gc-written ]; do
        \$C ckpt gc gc --keep-latest 2 --json > /dev/null 2> /tmp/gc.err || { echo "collection failed while the writer ran:"; cat /tmp/gc.err; exit 1; }
        \$C ckpt list gc --json > /tmp/list.json 2> /tmp/list.err || { echo "listing failed:"; cat /tmp/list.err; exit 1; }
        python3 -c 'import json; l = json.load(open("/tmp/list.json")); gone = [c["path"] for c in l if not c["exists"]]; assert not gone, f"listed but deleted: {gone}"'
        rounds=\$((rounds + 1))
    done
    \$C ckpt gc gc --keep-latest 2 --json > /dev/null
    \$C ckpt list gc --json > /tmp/list.json
    python3 - \$rounds <<'PY'
import json, os, sys
listed = json.load(open("/tmp/list.json"))
steps = sorted(c["step"] for c in listed)
assert steps == [39, 40], f"kept {steps}, not the latest 2"
assert all(c["exists"] for c in listed), listed
left = sorted(int(n.split("-")[1]) for n in os.listdir("/mnt/nfs/ckpt"))
assert left == [39, 40], f"files left: {left}"
print(f"ok: 40 checkpoints written on one client, collected {sys.argv[1]} times on the other meanwhile: the latest never deleted, none listed once deleted, the latest 2 left")
PY
fi
touch \$M/gc-checked-\$COHORT_VM_NAME
await gc-checked-\$other

# 4. The catalog's crash and concurrency tests on vm2, their directories on the mount.
if [ "\$COHORT_VM_NAME" = vm2 ]; then
    mkdir -p \$M/tmp
    for t in $tests; do
        TMPDIR=\$M/tmp \$t --test-threads 1 -q > /tmp/unit.out 2>&1 || { echo "\$t on NFS:"; tail -n 40 /tmp/unit.out; exit 1; }
        grep "test result" /tmp/unit.out
    done
    echo "ok: the catalog's crash and concurrency tests pass on the NFS client (TMPDIR on the mount)"
fi
touch \$M/tests-\$COHORT_VM_NAME
# The server stays up until the other client has finished with it.
[ "\$COHORT_VM_NAME" = vm1 ] && await tests-vm2 1500
true
SCRIPT
exec "$HERE/run.sh" --timeout "${COHORT_VM_TIMEOUT:-1500}" "$script" "$script"
