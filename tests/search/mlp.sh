#!/usr/bin/env bash
# End to end: an ASHA search of the example MLP (libtorch) on this machine. Needs release builds:
#   cargo build --release -p cohort-cli && cargo build --release -p cohort-examples
# Runs examples/search/mlp.toml (4 trials, 2 at a time), checks that trials were stopped and
# promoted ones resumed from their checkpoints, and that one trial trained the full length.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
if [[ -d $ROOT/.deps/libtorch-2.13.0/lib ]]; then
    export LD_LIBRARY_PATH=$ROOT/.deps/libtorch-2.13.0/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
COHORT=$ROOT/target/release/cohort
CAT=$(mktemp -d /tmp/cohort-search-mlp.XXXXXX)
trap 'rm -rf "$CAT"' EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }
timeout 300 "$COHORT" search start examples/search/mlp.toml --local 2 --catalog "$CAT" \
    || fail "the search did not finish"
"$COHORT" search status mlp-asha --catalog "$CAT" --json > "$CAT/status.json"
python3 - "$CAT/status.json" <<'PY' || fail "search status:\n$(cat "$CAT/status.json")"
import json, sys
doc = json.load(open(sys.argv[1]))
trials = doc["trials"]
assert doc["finished"] == "done", doc
assert len(trials) == 4, trials
assert any(t["state"] == "completed" and t["length"] == 4 for t in trials), trials
assert sum(t["state"] == "killed" for t in trials) >= 2, trials
assert doc["best"]["value"] < 0.1, doc
PY
grep -q "resumed from" "$CAT"/experiments/*/trials/*/output.log || fail "no promoted trial resumed from a checkpoint"
echo "ok: ASHA over the MLP: trials stopped, the best promoted and resumed from checkpoints"
