# Preemption, time limits and requeue on the namespace cluster, sourced by tests/slurm/e2e.sh
# (its helpers: fail, ok, wait_job, slurm_state, $L, $COHORT, $PY). The worker is
# tests/slurm/preemptible.py, a training loop of the Python package's tracker: it checkpoints
# at the step its ranks agree to stop at and exits with the tracker's status.
WORKER=$ROOT/tests/slurm/preemptible.py
if ! { [[ -x $PY ]] && "$PY" -c 'import cohort' 2>/dev/null; }; then
    echo "skipped: preemption scenarios (7c-7e, 10b): no Python environment with the cohort package (scripts/dev setup makes .deps/python)"
    return 0
fi
# Prints trial $2 of experiment $1 (`cohort trial show --json`).
trial_json() { "$COHORT" trial show "$1/$2" --json; }
# Waits until trial $2 of experiment $1 has logged step $3 or more: at most $4 looks.
wait_step() {
    for _ in $(seq 1 "$4"); do
        "$COHORT" trial show "$1/$2" --json 2>/dev/null | python3 -c \
            'import json,sys; t=json.load(sys.stdin); sys.exit(0 if t["metrics"].get("loss",{}).get("last_step",0) >= int(sys.argv[1]) else 1)' "$3" 2>/dev/null \
            && return 0
        sleep 0.2
    done
    return 1
}
# The steps of metric loss of trial $2 of experiment $1, space-separated.
loss_steps() {
    "$PY" -c 'import sys, cohort; print(" ".join(str(int(s)) for s in cohort.Catalog().metrics(sys.argv[1], int(sys.argv[2]), "loss").steps))' "$1" "$2"
}
# 7c. Preemption: a 2-node training job in the default partition is preempted by a job of the
#     partition "high" (PriorityTier 10, PreemptType=preempt/partition_prio, PreemptMode=REQUEUE):
#     Slurm sends SIGTERM, both ranks stop and checkpoint at the same step, the trial shows
#     `preempted`, Slurm requeues the job, and its next launch goes on from that step in the
#     same trial: the loss's history has every step once.
export COHORT_CATALOG=$L/preempt-catalog
job=$(sbatch --parsable -N2 -w node[1-2] -o "$L/preempt.out" --open-mode=append --wrap \
    "srun --cohort --cohort-exp preempt $PY $WORKER 40")
wait_step preempt 1 5 600 || fail "the job to preempt never logged 5 steps:\n$(cat "$L/preempt.out")\n$(slurm_state)"
high=$(sbatch --parsable -p high -N2 -w node[1-2] --exclusive -o "$L/high.out" --wrap "sleep 2")
seen=
for _ in $(seq 1 300); do
    if trial_json preempt 1 2>/dev/null | grep -q '"state": "preempted"'; then seen=yes; break; fi
    sleep 0.2
done
[[ $seen ]] || fail "the trial was never preempted:\n$(trial_json preempt 1)\n$(cat "$L/preempt.out")\n$(slurm_state)"
wait_job "$high" 600
hurry "$job"
wait_job "$job" 1500
at=$(sed -n 's/^rank 0 stopped at step \([0-9]*\): terminated$/\1/p' "$L/preempt.out")
[[ $at ]] || fail "rank 0 did not stop at SIGTERM:\n$(cat "$L/preempt.out")\n$(slurm_state)"
grep -q "^rank 1 stopped at step $at: terminated$" "$L/preempt.out" \
    || fail "the ranks did not stop at the same step:\n$(cat "$L/preempt.out")"
grep -q "^rank 0 launch 1 from step $at$" "$L/preempt.out" && grep -q "^rank 1 launch 1 from step $at$" "$L/preempt.out" \
    || fail "the requeued job did not go on from step $at:\n$(cat "$L/preempt.out")\n$(slurm_state)"
trial_json preempt 1 > "$L/preempt.json"
python3 - "$L/preempt.json" "$at" <<'EOF' || fail "the preempted trial:\n$(cat "$L/preempt.json")"
import json, sys
t, at = json.load(open(sys.argv[1])), sys.argv[2]
assert t["state"] == "completed", t["state"]
restarts = t["state_record"]["restarts"]
assert len(restarts) == 1 and f"was preempted: stopped at step {at} (SIGTERM" in restarts[0]["reason"], restarts
EOF
[[ $("$COHORT" trials preempt --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') == 1 ]] \
    || fail "one trial for both launches:\n$("$COHORT" trials preempt)"
[[ $(loss_steps preempt 1) == "$(seq -s ' ' 1 40)" ]] \
    || fail "the loss's steps across the preemption: $(loss_steps preempt 1)"
unset COHORT_CATALOG
ok "a preempted 2-node job: both ranks stopped at step $at, the trial went preempted then on from there, every step logged once"

# 7d. Time limit: a job of two minutes with `--signal=USR2@50` and `--cohort-requeue`: the
#     warning stops both ranks at one step, they checkpoint and exit 75, rank 0's node requeues
#     the job, and the next launch finishes the run in the same trial. Slurm may send the
#     signal up to 60 s before it is due (sbatch(1), --signal): with a one-minute job it could
#     come as the job starts, before the workers are running.
export COHORT_CATALOG=$L/timelimit-catalog
job=$(sbatch --parsable -N2 -w node[3-4] --time=2 --signal=USR2@50 --requeue -o "$L/timelimit.out" \
    --open-mode=append --wrap \
    "srun --cohort --cohort-exp timelimit --cohort-requeue=2 $PY $WORKER 100000 --step-seconds 0.1 --after-resume 20")
for _ in $(seq 1 900); do
    grep -q "^rank 0 stopped at step" "$L/timelimit.out" 2>/dev/null && break
    sleep 0.2
done
hurry "$job"
wait_job "$job" 1500
at=$(sed -n 's/^rank 0 stopped at step \([0-9]*\): warning$/\1/p' "$L/timelimit.out" | head -n 1)
[[ $at ]] || fail "rank 0 did not stop at the time-limit warning:\n$(cat "$L/timelimit.out")\n$(slurm_state)"
grep -q "^rank 1 stopped at step $at: warning$" "$L/timelimit.out" \
    || fail "the ranks did not stop at the same step:\n$(cat "$L/timelimit.out")"
grep -q "^rank 0 launch 1 from step $at$" "$L/timelimit.out" \
    || fail "the job was not requeued to go on from step $at:\n$(cat "$L/timelimit.out")\n$(slurm_state)\n$(grep -h requeue "$L"/log/slurmd-node3.log | tail -n 5)"
trial_json timelimit 1 > "$L/timelimit.json"
python3 - "$L/timelimit.json" "$at" <<'EOF' || fail "the time-limited trial:\n$(cat "$L/timelimit.json")"
import json, sys
t, at = json.load(open(sys.argv[1])), sys.argv[2]
assert t["state"] == "completed", t["state"]
s = t["state_record"]
assert s["requeues"] == 1, s
assert f"stopped at step {at} (SIGUSR2" in s["restarts"][0]["reason"], s["restarts"]
assert "requeued by --cohort-requeue" in s["restarts"][0]["reason"], s["restarts"]
EOF
[[ $(loss_steps timelimit 1) == "$(seq -s ' ' 1 $((at + 20)))" ]] \
    || fail "the loss's steps across the requeue: $(loss_steps timelimit 1)"
"$COHORT" trial show timelimit/1 | grep -q "requeued     1 time by --cohort-requeue" \
    || fail "trial show:\n$("$COHORT" trial show timelimit/1)"
unset COHORT_CATALOG
ok "a time-limited job stopped at --signal's warning (step $at), was requeued by --cohort-requeue and finished as one trial"

# 7e. The warning by hand (`scancel --signal=USR2`): the ranks stop at one step and the trial
#     is preempted (no --cohort-requeue: the job ends). Then a rank that ignores the agreement
#     (the warning kills it): the step fails cleanly, the other rank naming it.
export COHORT_CATALOG=$L/signal-catalog
job=$(sbatch --parsable -N2 -w node[1-2] -o "$L/signal.out" --wrap \
    "srun --cohort --cohort-exp signal $PY $WORKER 100000 --step-seconds 0.1")
wait_step signal 1 3 600 || fail "the job to warn never ran:\n$(cat "$L/signal.out")\n$(slurm_state)"
scancel --signal=USR2 "$job"
wait_job "$job" 600
at=$(sed -n 's/^rank 0 stopped at step \([0-9]*\): warning$/\1/p' "$L/signal.out")
[[ $at ]] && grep -q "^rank 1 stopped at step $at: warning$" "$L/signal.out" \
    || fail "the ranks did not stop at one step:\n$(cat "$L/signal.out")"
trial_json signal 1 > "$L/signal.json"
python3 - "$L/signal.json" "$at" <<'EOF' || fail "the warned trial:\n$(cat "$L/signal.json")"
import json, sys
t, at = json.load(open(sys.argv[1])), sys.argv[2]
assert t["state"] == "preempted" and t["exit_status"] == 75, t
assert f"stopped at step {at} (SIGUSR2" in t["state_record"]["message"], t["state_record"]
EOF
job=$(sbatch --parsable -N2 -w node[1-2] -o "$L/ignored.out" --wrap \
    "srun --cohort --cohort-exp signal $PY $WORKER 100000 --step-seconds 0.1 --die-on-warning-rank 1")
wait_step signal 2 3 600 || fail "the job to warn never ran:\n$(cat "$L/ignored.out")\n$(slurm_state)"
scancel --signal=USR2 "$job"
wait_job "$job" 600
for _ in $(seq 1 50); do
    trial_json signal 2 | grep -q '"state": "failed"' && break
    sleep 0.2
done
trial_json signal 2 > "$L/ignored.json"
python3 - "$L/ignored.json" <<'EOF' || fail "the trial whose rank 1 ignored the agreement:\n$(cat "$L/ignored.json")\n$(cat "$L/ignored.out")"
import json, sys
t = json.load(open(sys.argv[1]))
assert t["state"] == "failed", t["state"]
assert "rank 1 on node2 was killed by SIGKILL" in t["state_record"]["message"], t["state_record"]
EOF
grep -q "could not agree whether to stop at step" "$L/ignored.out" && grep -qE "rank 1\b" "$L/ignored.out" \
    || fail "rank 0 does not name rank 1:\n$(cat "$L/ignored.out")"
unset COHORT_CATALOG
ok "scancel --signal: both ranks stopped at step $at, trial preempted; a rank killed by the warning fails the step, named"

# 10b. A search whose trials are preempted: 4 trials of 2 nodes, 2 at a time; a job of the
#      partition "high" takes all 4 nodes back while both run. Slurm requeues the trials' jobs;
#      the search follows them and ends with every trial completed once, none failed or
#      submitted twice, and max_restarts = 0 untouched.
cat > "$L/preempt-search.toml" <<EOF
name = "preemptible-search"
command = ["$PY", "$WORKER", "100000", "--step-seconds", "0.2"]
[resources]
nodes = 2
[searcher]
name = "random"
metric = "loss"
max_trials = 4
max_concurrent_trials = 2
max_length = 30
max_restarts = 0
[hyperparameters]
x = { type = "double", minval = 0.0, maxval = 1.0 }
EOF
export COHORT_CATALOG=$L/preempt-search-catalog
timeout 900 "$COHORT" search start "$L/preempt-search.toml" > "$L/preempt-search.out" 2>&1 &
controller=$!
for _ in $(seq 1 600); do
    running=0
    for t in 1 2; do
        "$COHORT" trial show "preemptible-search/$t" --json 2>/dev/null | python3 -c \
            'import json,sys; t=json.load(sys.stdin); sys.exit(0 if t["metrics"].get("loss",{}).get("last_step",0) >= 3 else 1)' 2>/dev/null \
            && running=$((running + 1))
    done
    [[ $running == 2 ]] && break
    sleep 0.2
done
[[ $running == 2 ]] || fail "the search's first trials never ran:\n$(cat "$L/preempt-search.out")\n$(slurm_state)"
high=$(sbatch --parsable -p high -N4 --exclusive -o "$L/high2.out" --wrap "sleep 2")
wait_job "$high" 600
for job in $(squeue -h -o "%i %j" | awk '$2 ~ /^cohort-preemptible-search/ {print $1}'); do hurry "$job"; done
wait "$controller" || fail "the search with preempted trials:\n$(cat "$L/preempt-search.out")\n$(slurm_state)"
"$COHORT" search status preemptible-search --json > "$L/preempt-search.json"
python3 - "$L/preempt-search.json" "$COHORT_CATALOG"/experiments/preemptible-search-*/search/events.jsonl <<'EOF' \
    || fail "the search with preempted trials:\n$(cat "$L/preempt-search.json")\n$(cat "$COHORT_CATALOG"/experiments/preemptible-search-*/search/events.jsonl)"
import collections, json, sys
doc = json.load(open(sys.argv[1]))
assert doc["finished"] == "done", doc
assert len(doc["trials"]) == 4 and all(t["state"] == "completed" for t in doc["trials"]), doc["trials"]
events = [json.loads(line) for line in open(sys.argv[2])]
assert not [e for e in events if e["event"] == "failed"], "a trial counted as failed"
launched = collections.Counter(e["trial"] for e in events if e["event"] == "launched")
assert all(n == 1 for n in launched.values()), f"a trial submitted twice: {launched}"
EOF
preempted=0
for t in 1 2; do
    trial_json preemptible-search "$t" | grep -q "was preempted" && preempted=$((preempted + 1))
done
[[ $preempted -ge 1 ]] || fail "no trial records its preemption:\n$(trial_json preemptible-search 1)"
unset COHORT_CATALOG
ok "a search whose running trials were preempted: Slurm requeued them, the search followed, 4 trials completed, none failed or submitted twice"
