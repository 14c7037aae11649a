#!/usr/bin/env python3
"""Cohort's experiment catalog against MLflow's file store, on the same synthetic data.

bench/compare-mlflow.sh runs this inside a virtual environment that has MLflow. It has Cohort
generate a synthetic experiment, exports it, writes the same trials, parameters and metric
points into an MLflow file store, then times two queries on each side:

  best trial   the trial with the lowest last reported val_loss
  history      every point of trial 7's val_loss

Cohort is timed as a whole command (process start included), MLflow as in-process calls of
MlflowClient (imports excluded). Both sides must give the same best trial and the same number of
history points, or this exits with an error.

When the `cohort` Python package is installed here (compare-mlflow.sh installs its wheel), the
Python API is timed too, in-process like MLflow's: `Catalog.trials(..., sort=..., limit=1)`
against `search_runs`, and logging from a Python loop (4 metrics a call) with `Tracker.log`
against MLflow's `log_metrics` to a file store on the same disk, as points per second.

  --self-test  fabricates Cohort's two exports in-process (no cohort binary needed) and runs
               only the MLflow half on them, checked against the fabricated data; its default
               size is 20 trials x 3 metrics x 100 steps.
"""

import argparse
import csv
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

# MLflow 3 refuses its file store unless this is set.
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

EXPERIMENT = "synth"
HISTORY_TRIAL = 7


def fail(msg):
    sys.exit(f"compare_mlflow: {msg}")


def parse_export(lines):
    """Reads `cohort export --format csv` into {trial: {metric: [(step, ts_ms, value)]}}."""
    series = {}
    rows = csv.reader(lines)
    header = next(rows, None)
    if header != ["trial", "metric", "step", "value", "wall_time"]:
        fail(f"unexpected export header {header}")
    for trial, metric, step, value, wall_time in rows:
        points = series.setdefault(int(trial), {}).setdefault(metric, [])
        points.append((int(step), round(float(wall_time) * 1000), float(value)))
    for metrics in series.values():
        for points in metrics.values():
            points.sort()
    return series


def build_mlflow(uri, hparams, series):
    """Writes one MLflow run per trial through MlflowClient; returns {trial: run_id}."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(EXPERIMENT)
    run_ids = {}
    for trial in sorted(series):
        metrics = [
            Metric(name, value, ts, step)
            for name, points in series[trial].items()
            for step, ts, value in points
        ]
        start = min(m.timestamp for m in metrics)
        end = max(m.timestamp for m in metrics)
        run = client.create_run(exp_id, start_time=start, run_name=str(trial))
        params = [Param(k, str(v)) for k, v in sorted(hparams[trial].items())]
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        client.set_terminated(run.info.run_id, end_time=end)
        run_ids[trial] = run.info.run_id
    return exp_id, run_ids


def timed(fn, repeat):
    """Median wall time in ms of `repeat` calls after one warm-up call, and the last result."""
    result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, result


def python_package():
    """The cohort Python package, or None when it is not installed here."""
    try:
        import cohort
    except ImportError:
        return None
    return cohort


def log_rates(work, cohort, calls_cohort=250_000, calls_mlflow=2_000):
    """Points per second logged from a Python loop, 4 metrics a call: cohort's Tracker.log
    (ended by finish, which makes every point durable) and MLflow's log_metrics (each call
    written to the file store). Returns (cohort rate, mlflow rate)."""
    import mlflow

    values = {"loss": 0.5, "acc": 0.25, "lr": 0.001, "grad_norm": 1.5}
    tracker = cohort.init("logbench", catalog=os.path.join(work, "cohort-log"))
    t0 = time.perf_counter()
    for step in range(calls_cohort):
        values["loss"] = 1.0 / (step + 1)
        tracker.log(values, step)
    tracker.finish()
    cohort_rate = 4 * calls_cohort / (time.perf_counter() - t0)

    mlflow.set_tracking_uri("file://" + os.path.abspath(os.path.join(work, "mlruns-log")))
    mlflow.set_experiment("logbench")
    with mlflow.start_run():
        t0 = time.perf_counter()
        for step in range(calls_mlflow):
            values["loss"] = 1.0 / (step + 1)
            mlflow.log_metrics(values, step=step)
        mlflow_rate = 4 * calls_mlflow / (time.perf_counter() - t0)
    return cohort_rate, mlflow_rate


def cohort_cmd(cohort, catalog, *args):
    out = subprocess.run([cohort, *args, "--catalog", catalog], check=True,
                         stdout=subprocess.PIPE, text=True)
    return out.stdout


def count_csv_points(text):
    """Data rows of `cohort metrics --format csv` output: the lines after the header."""
    return max(0, len([line for line in text.splitlines() if line.strip()]) - 1)


def fabricate(trials, metrics, steps):
    """Cohort's two exports, made up: (trials JSON text, export CSV text)."""
    rng = random.Random(1)
    names = ["val_loss"] + [f"m{i}" for i in range(1, metrics)]
    hp = [{"trial": t, "hparams": {"lr": round(10 ** rng.uniform(-4, -1), 6),
                                   "layers": rng.randint(1, 8)}} for t in range(1, trials + 1)]
    out = io.StringIO()
    out.write("trial,metric,step,value,wall_time\n")
    t0 = 1.7e9
    for t in range(1, trials + 1):
        floor = rng.uniform(0.05, 0.5)
        for name in names:
            for s in range(steps):
                value = floor + 2.0 / (1 + s) + rng.uniform(0, 0.01)
                out.write(f"{t},{name},{s},{value!r},{t0 + t * 1000 + s * 0.25:.3f}\n")
    return json.dumps(hp), out.getvalue()


def disk_mb(path):
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(path) for f in files) / 1e6


def mlflow_version():
    for dist in ("mlflow-skinny", "mlflow"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            pass
    return "mlflow (unknown version)"


def run(a):
    if a.trials < HISTORY_TRIAL or a.metrics < 1 or a.steps < 1:
        fail(f"need at least {HISTORY_TRIAL} trials, 1 metric and 1 step")

    catalog = os.path.join(a.work, "cohort")
    mlruns = os.path.join(a.work, "mlruns")
    for path in (catalog, mlruns):
        if os.path.exists(path):
            fail(f"{path} exists already: remove it or choose another WORK")
    os.makedirs(a.work, exist_ok=True)
    points = a.trials * a.metrics * a.steps

    # Cohort's side: generate the experiment and export it (or make both exports up).
    if a.self_test:
        trials_json, export_csv = fabricate(a.trials, a.metrics, a.steps)
        series = parse_export(io.StringIO(export_csv))
    else:
        t0 = time.perf_counter()
        cohort_cmd(a.cohort, catalog, "bench", "catalog", "generate", "--experiment", EXPERIMENT,
                   "--trials", str(a.trials), "--metrics", str(a.metrics),
                   "--steps", str(a.steps))
        print(f"cohort catalog generated in {time.perf_counter() - t0:.1f} s")
        trials_json = cohort_cmd(a.cohort, catalog, "trials", EXPERIMENT, "--json")
        with subprocess.Popen([a.cohort, "export", EXPERIMENT, "--catalog", catalog,
                               "--format", "csv"], stdout=subprocess.PIPE, text=True) as p:
            series = parse_export(p.stdout)
        if p.returncode:
            fail(f"cohort export exited with {p.returncode}")
    hparams = {t["trial"]: t["hparams"] for t in json.loads(trials_json)}
    got = sum(len(v) for m in series.values() for v in m.values())
    if set(hparams) != set(series) or len(series) != a.trials or got != points:
        fail(f"export holds {len(series)} trials with {got} points and {len(hparams)} trials "
             f"with hyperparameters; expected {a.trials} trials, {points} points")

    # MLflow's side, built from the export.
    uri = "file://" + os.path.abspath(mlruns)
    t0 = time.perf_counter()
    exp_id, run_ids = build_mlflow(uri, hparams, series)
    build_s = time.perf_counter() - t0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run_id = run_ids[HISTORY_TRIAL]
    ml_best_ms, best = timed(lambda: client.search_runs(
        [exp_id], order_by=["metrics.val_loss ASC"], max_results=1), a.repeat)
    ml_hist_ms, hist = timed(lambda: client.get_metric_history(run_id, "val_loss"), a.repeat)
    ml_all_ms, _ = timed(lambda: [client.get_metric_history(r, "val_loss")
                                  for r in run_ids.values()], a.repeat)
    ml_best, ml_points = int(best[0].info.run_name), len(hist)

    if a.self_test:
        # The fabricated data stands in for Cohort's answers.
        co_best = min(series, key=lambda t: series[t]["val_loss"][-1][2])
        co_points = len(series[HISTORY_TRIAL]["val_loss"])
        co_best_ms = co_hist_ms = None
    else:
        co_best_ms, out = timed(lambda: cohort_cmd(
            a.cohort, catalog, "trials", EXPERIMENT, "--sort", "val_loss", "--limit", "1",
            "--json"), a.repeat)
        co_best = json.loads(out)[0]["trial"]
        co_hist_ms, out = timed(lambda: cohort_cmd(
            a.cohort, catalog, "metrics", f"{EXPERIMENT}/{HISTORY_TRIAL}", "--name", "val_loss",
            "--format", "csv"), a.repeat)
        co_points = count_csv_points(out)
        # The same queries in-process (the library calls the commands make), like MLflow's.
        out = cohort_cmd(a.cohort, catalog, "bench", "catalog", "query", "--experiment",
                         EXPERIMENT, "--runs", str(a.repeat), "--history-trial",
                         str(HISTORY_TRIAL), "--json")
        inproc = json.loads(out)
        if inproc["best_trial"] != co_best:
            fail(f"cohort's in-process best trial {inproc['best_trial']} differs from {co_best}")

    package = None if a.self_test else python_package()
    if package is not None:
        view = package.Catalog(catalog)
        py_best_ms, best_trials = timed(
            lambda: view.trials(EXPERIMENT, sort="val_loss", limit=1), a.repeat)
        if best_trials[0].trial != co_best:
            fail(f"Catalog.trials gave trial {best_trials[0].trial}, the CLI {co_best}")
        py_rate, ml_rate = log_rates(a.work, package)

    if co_best != ml_best or co_points != ml_points or ml_points != a.steps:
        fail(f"the two sides disagree: best trial cohort {co_best}, mlflow {ml_best}; "
             f"trial {HISTORY_TRIAL} val_loss points cohort {co_points}, mlflow {ml_points} "
             f"(expected {a.steps})")

    print(f"data: {a.trials} trials x {a.metrics} metrics x {a.steps} steps = {points:,} points")
    print(f"{mlflow_version()} file store, built from the export in {build_s:.1f} s")
    on_disk = f"mlflow {disk_mb(mlruns):.1f} MB"
    if not a.self_test:
        on_disk = f"cohort {disk_mb(catalog):.1f} MB, " + on_disk
    print(f"on disk: {on_disk}")
    print(f"agreed: best trial {ml_best}, {ml_points} points in trial {HISTORY_TRIAL}'s val_loss")
    print(f"median of {a.repeat} runs after a warm-up")
    rows = [("best trial by val_loss", co_best_ms, ml_best_ms),
            (f"val_loss history, trial {HISTORY_TRIAL}", co_hist_ms, ml_hist_ms)]
    if not a.self_test:
        print("cohort: whole commands (process start included); in-process: library calls")
        rows += [("best trial, in-process", inproc["best_indexed_ms"], ml_best_ms),
                 ("  ... no index, in-process", inproc["best_no_index_ms"], ml_best_ms),
                 (f"history trial {HISTORY_TRIAL}, in-process", inproc["history_ms"], ml_hist_ms),
                 ("history, every trial", inproc["history_all_trials_ms"], ml_all_ms)]
    else:
        rows.append(("history, every trial", None, ml_all_ms))
    if package is not None:
        rows.append(("best trial, Python Catalog.trials", py_best_ms, ml_best_ms))
    print(f"{'query':<34} {'cohort ms':>10} {'mlflow ms':>10} {'mlflow/cohort':>14}")
    for name, co, ml in rows:
        if co is None:
            print(f"{name:<34} {'-':>10} {ml:10.2f} {'-':>14}")
        else:
            print(f"{name:<34} {co:10.2f} {ml:10.2f} {ml / co:14.2f}")
    if package is not None:
        print("logging from a Python loop, 4 metrics a call (points per second)")
        print(f"{'cohort Tracker.log':<34} {py_rate:14,.0f}")
        print(f"{'mlflow log_metrics (file store)':<34} {ml_rate:14,.0f}")
        print(f"{'cohort / mlflow':<34} {py_rate / ml_rate:14.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cohort", default="target/release/cohort")
    ap.add_argument("--work", help="folder for both stores (default: a temporary one)")
    ap.add_argument("--trials", type=int)
    ap.add_argument("--metrics", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs after one warm-up")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    size = (20, 3, 100) if a.self_test else (200, 10, 1000)
    a.trials, a.metrics, a.steps = (x or d for x, d in zip((a.trials, a.metrics, a.steps), size))
    if a.work:
        run(a)
    else:
        with tempfile.TemporaryDirectory() as work:
            a.work = work
            run(a)


if __name__ == "__main__":
    main()
