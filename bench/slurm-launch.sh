#!/usr/bin/env bash
# What --cohort adds to a step's launch on the 4-node Slurm cluster of tests/slurm/cluster.sh
# (network namespaces on this machine): `srun -N4 -n4 true` against `srun -N4 -n4 --cohort true`,
# RUNS of each, alternating, each timed whole; prints both medians and the difference. Needs
# root and the release builds tests/slurm/e2e.sh needs.
#   bench/slurm-launch.sh          RUNS=20 by default
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-20}
# A cohort built together with the examples links libtorch (scripts/dev fetches it into .deps/).
if [[ -d $ROOT/.deps/libtorch-2.13.0/lib ]]; then
    export LD_LIBRARY_PATH=$ROOT/.deps/libtorch-2.13.0/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
L=$(mktemp -d /tmp/cohort-slurm.XXXXXX)
chmod 755 "$L"
export SLURM_CONF=$L/etc/slurm.conf
trap '"$ROOT/tests/slurm/cluster.sh" down "$L"' EXIT
"$ROOT/tests/slurm/cluster.sh" up "$L" > "$L/up.log" 2>&1 || { cat "$L/up.log"; exit 2; }
cd "$ROOT"
# One of each first: the daemons' and slurmd's first step pays for warm-up.
srun -N4 -n4 true
srun -N4 -n4 --cohort true
python3 - "$RUNS" <<'EOF'
import statistics, subprocess, sys, time
runs = int(sys.argv[1])
plain, cohort = [], []
for _ in range(runs):
    for args, out in ((["srun", "-N4", "-n4", "true"], plain),
                      (["srun", "-N4", "-n4", "--cohort", "true"], cohort)):
        start = time.perf_counter()
        subprocess.run(args, check=True)
        out.append(time.perf_counter() - start)
p, c = statistics.median(plain) * 1e3, statistics.median(cohort) * 1e3
print(f"srun -N4 -n4 true: median {p:.0f} ms; with --cohort: median {c:.0f} ms "
      f"over {runs} runs each: --cohort adds {c - p:+.0f} ms")
EOF
