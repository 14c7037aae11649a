"""The tracker from Python: every call, its errors, the guarantees of the Rust tracker (a
SIGKILLed writer loses no committed point, memory stays bounded), and rank 0 only."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import cohort


def trial_record(cohort_bin, catalog, experiment, trial):
    out = subprocess.run(
        [cohort_bin, "trial", "show", f"{experiment}/{trial}", "--catalog", str(catalog), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def test_init_records_hparams_metrics_checkpoints_and_the_end(catalog, tmp_path, cohort_bin):
    tracker = cohort.init("mnist", hparams={"lr": 0.01, "layers": 3, "act": "relu"})
    assert tracker.enabled and tracker.experiment == "mnist" and tracker.trial == 1
    assert tracker.hparams == {"lr": 0.01, "layers": 3, "act": "relu"}
    for step in range(100):
        tracker.log({"loss": 1.0 / (step + 1), "acc": step / 100}, step)
    assert tracker.latest_checkpoint() is None
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"x" * 1000)
    tracker.checkpoint(weights, 99, metadata={"epoch": 3})
    latest = tracker.latest_checkpoint()
    assert (latest.path, latest.step, latest.size, latest.metadata) == (str(weights), 99, 1000, {"epoch": 3})
    assert not tracker.should_stop(99)
    tracker.finish()
    tracker.finish()  # a second call does nothing
    with pytest.raises(RuntimeError, match="finished"):
        tracker.log({"loss": 1.0}, 100)
    shown = trial_record(cohort_bin, catalog, "mnist", 1)
    assert shown["state"] == "completed"
    assert shown["metrics"]["loss"]["count"] == 100
    assert shown["metrics"]["loss"]["last"] == pytest.approx(0.01)
    assert [c["step"] for c in shown["checkpoints"]] == [99]


@pytest.mark.parametrize(
    "metrics, step, error, words",
    [
        ({"loss": "high"}, 1, TypeError, ['metric "loss"', "'high'", "not a number"]),
        ({"loss": None}, 1, TypeError, ['metric "loss"', "None"]),
        ({7: 1.0}, 1, TypeError, ["metric names are strings", "7"]),
        ({"": 1.0}, 1, ValueError, ["metric name", "empty"]),
        ({"bad\nname": 1.0}, 1, ValueError, ["control character"]),
        ({"x" * 300: 1.0}, 1, ValueError, ["longer than 256 bytes"]),
        ({"loss": 1.0}, -1, ValueError, ["step", "-1", "negative"]),
        ({"loss": 1.0}, 1.5, TypeError, ["step", "1.5", "not an int"]),
    ],
)
def test_bad_input_names_the_key_and_value_and_records_nothing(catalog, cohort_bin, metrics, step, error, words):
    tracker = cohort.init("errors")
    tracker.log({"loss": 0.5}, 0)
    with pytest.raises(error) as raised:
        tracker.log({"ok": 2.0, **metrics}, step)
    for word in words:
        assert word in str(raised.value)
    tracker.finish()
    shown = trial_record(cohort_bin, catalog, "errors", 1)
    assert set(shown["metrics"]) == {"loss"}, "nothing of the refused call is recorded"
    assert shown["metrics"]["loss"]["count"] == 1


def test_bad_arguments_to_init_checkpoint_and_finish(catalog):
    with pytest.raises(TypeError, match="hparams must be a dict"):
        cohort.init("x", hparams=[1, 2])
    with pytest.raises(TypeError, match="hparams"):
        cohort.init("x", hparams={"f": object()})
    with pytest.raises(ValueError, match="name is empty"):
        cohort.init("  ")
    tracker = cohort.init("x")
    with pytest.raises(cohort.CatalogError, match="cannot read the checkpoint"):
        tracker.checkpoint("/nonexistent/weights.pt", 1)
    with pytest.raises(ValueError, match="negative"):
        tracker.checkpoint("/", -2)
    with pytest.raises(ValueError, match="running"):
        tracker.finish("running")
    tracker.finish("killed")


def test_a_raising_block_fails_the_trial_with_the_exception(catalog, cohort_bin):
    with pytest.raises(ZeroDivisionError):
        with cohort.init("ctx") as tracker:
            tracker.log({"loss": 1.0}, 0)
            1 / 0
    with cohort.init("ctx") as tracker:
        tracker.log({"loss": 1.0}, 0)
    first = trial_record(cohort_bin, catalog, "ctx", 1)
    assert first["state"] == "failed"
    assert first["state_record"]["message"] == "ZeroDivisionError: division by zero"
    assert trial_record(cohort_bin, catalog, "ctx", 2)["state"] == "completed"


def test_ranks_other_than_0_record_nothing(catalog, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    tracker = cohort.init("ranks", hparams={"lr": 1})
    assert not tracker.enabled and tracker.trial is None
    tracker.log({"loss": "not even checked"}, -5)
    assert tracker.hparams == {}
    assert tracker.latest_checkpoint() is None
    tracker.finish()
    assert not catalog.exists(), "rank 1 wrote nothing"


def test_from_env_inside_cohort_run_records_into_the_runs_trial(catalog, cohort_bin):
    script = textwrap.dedent(
        """
        import cohort
        tracker = cohort.Tracker.from_env()
        print("hparams", sorted(tracker.hparams.items()), "enabled", tracker.enabled, flush=True)
        for step in range(5):
            tracker.log({"loss": 5.0 - step}, step)
        tracker.finish()
        """
    )
    run = subprocess.run(
        [cohort_bin, "run", "-n", "2", "--catalog", str(catalog), "--experiment", "launched",
         "--hparam", "lr=0.5", "--", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "[0] hparams [('lr', 0.5)] enabled True" in run.stdout
    assert "[1] hparams [('lr', 0.5)] enabled False" in run.stdout, "rank 1 reads the run's trial"
    shown = trial_record(cohort_bin, catalog, "launched", 1)
    assert shown["state"] == "completed"
    assert shown["metrics"]["loss"]["count"] == 5


WRITER = """
import sys, cohort
tracker = cohort.init("killed", catalog=sys.argv[1])
step = 0
while True:
    tracker.log({"loss": 1.0 / (step + 1), "acc": 0.5, "lr": 0.1, "gn": 2.0}, step)
    if step % 5000 == 4999:
        tracker.sync()
        print(step, flush=True)
    step += 1
"""


def test_a_writer_killed_mid_log_loses_no_committed_point(catalog, cohort_bin):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(catalog)], stdout=subprocess.PIPE, text=True)
    committed = -1
    for line in writer.stdout:
        committed = int(line)
        if committed >= 50_000 - 1:
            break
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert committed >= 49_999
    catalog_view = cohort.Catalog(catalog)
    for name in ("loss", "acc", "lr", "gn"):
        metric = catalog_view.metrics("killed", 1, name)
        steps = list(metric.steps)
        assert len(steps) >= committed + 1, f"{name}: {len(steps)} points, {committed + 1} committed"
        assert steps == list(range(len(steps))), f"{name}: steps are not 0..n in order"
    shown = trial_record(cohort_bin, catalog, "killed", 1)
    assert shown["damage"] == [], shown["damage"]


def test_memory_stays_bounded_however_long_the_run(catalog):
    def rss_kib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    tracker = cohort.init("long")
    metrics = {"loss": 0.5, "acc": 0.25, "lr": 0.1, "gn": 2.0}
    for step in range(200_000):
        tracker.log(metrics, step)
    before = rss_kib()
    for step in range(200_000, 1_200_000):
        tracker.log(metrics, step)
    grown = rss_kib() - before
    tracker.finish()
    assert grown < 16 * 1024, f"RSS grew {grown} KiB over 4M points"


def test_threads_log_sync_and_checkpoint_at_once(catalog, tmp_path, cohort_bin):
    import threading

    tracker = cohort.init("threads")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"w")
    errors = []

    def logger(name):
        try:
            for step in range(20_000):
                tracker.log({name: float(step)}, step)
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    def saver():
        try:
            for step in range(20):
                tracker.sync()
                tracker.checkpoint(weights, step)
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=logger, args=(n,)) for n in ("a", "b")]
    threads.append(threading.Thread(target=saver))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tracker.finish()
    assert errors == []
    shown = trial_record(cohort_bin, catalog, "threads", 1)
    assert shown["metrics"]["a"]["count"] == shown["metrics"]["b"]["count"] == 20_000
    assert len(shown["checkpoints"]) == 20


def test_slurms_stop_signal_makes_should_stop_true(catalog):
    # In a process of its own: the handler is process-wide.
    script = textwrap.dedent(
        """
        import os, signal, cohort
        tracker = cohort.init("warned")
        assert not tracker.should_stop(0)
        os.kill(os.getpid(), signal.SIGUSR2)
        print("stop", tracker.should_stop(1), flush=True)
        tracker.finish()
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "stop True" in run.stdout


PREEMPTIBLE = '''
import os, signal, sys, time, cohort
tracker = cohort.Tracker.from_env()
rank = int(os.environ["COHORT_RANK"])
latest = tracker.latest_checkpoint()
start = latest.step if latest else 0
warn_at = int(sys.argv[1])
step = start
for step in range(start + 1, 13):
    tracker.log({"loss": 1.0 / step}, step)
    if rank == 1 and step == warn_at:
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))  # one rank alone is warned
    if rank == 0:
        time.sleep(0.05)  # rank 0 lags: without agreement it would stop a step later
    if tracker.should_stop(step):
        print("stopping after step", step, tracker.stop_reason(step), flush=True)
        break
if rank == 0 and tracker.enabled:
    path = os.path.join(tracker.trial_dir, f"ckpt-{step}")
    open(path, "w").write(str(step))
    tracker.checkpoint(path, step)
tracker.finish()
sys.exit(tracker.exit_status)
'''


@pytest.mark.parametrize("signal_name,status", [("SIGUSR2", 75), ("SIGTERM", 143)])
def test_ranks_agree_to_stop_at_one_step_when_one_is_warned_and_the_trial_goes_on(
    catalog, cohort_bin, tmp_path, signal_name, status
):
    script = tmp_path / "preemptible.py"
    script.write_text(PREEMPTIBLE)
    run_args = [cohort_bin, "run", "-n", "2", "--catalog", str(catalog), "--experiment", "preempt"]
    first = subprocess.run(
        run_args + ["--", sys.executable, str(script), "5", signal_name],
        capture_output=True, text=True, timeout=120,
    )
    assert first.returncode == status, first.stdout + first.stderr
    reason = "warning" if signal_name == "SIGUSR2" else "terminated"
    assert f"[0] stopping after step 5 {reason}" in first.stdout, first.stdout
    assert f"[1] stopping after step 5 {reason}" in first.stdout, first.stdout
    shown = trial_record(cohort_bin, catalog, "preempt", 1)
    assert shown["state"] == "preempted", shown
    message = shown["state_record"]["message"]
    assert f"stopped at step 5 ({signal_name}" in message and "checkpoint of step 5" in message, shown
    # The next launch goes on from step 5 in the same trial, with no gap and no repeat.
    second = subprocess.run(
        run_args + ["--trial", "1", "--", sys.executable, str(script), "0", signal_name],
        capture_output=True, text=True, timeout=120,
    )
    assert second.returncode == 0, second.stdout + second.stderr
    shown = trial_record(cohort_bin, catalog, "preempt", 1)
    assert shown["state"] == "completed", shown
    restarts = shown["state_record"]["restarts"]
    assert f"stopped at step 5 ({signal_name}" in restarts[0]["reason"], shown
    history = cohort.Catalog(catalog).metrics("preempt", 1, "loss")
    assert [int(s) for s in history.steps] == list(range(1, 13)), history


def test_a_rank_that_dies_instead_of_agreeing_fails_the_others_by_name(catalog, cohort_bin, tmp_path):
    script = tmp_path / "dies.py"
    script.write_text(textwrap.dedent(
        '''
        import os, signal, cohort
        tracker = cohort.Tracker.from_env()
        for step in range(1, 1000):
            if os.environ["COHORT_RANK"] == "1" and step == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            if tracker.should_stop(step):
                break
        '''
    ))
    run = subprocess.run(
        [cohort_bin, "run", "-n", "2", "--no-track", "--", sys.executable, str(script)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COHORT_TIMEOUT": "20"},
    )
    assert run.returncode != 0
    assert "rank 1" in run.stderr and "SIGKILL" in run.stderr, run.stderr
