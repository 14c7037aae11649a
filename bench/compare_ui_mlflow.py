#!/usr/bin/env python3
"""`cohort ui` against MLflow's UI in the same headless Chromium, on the same experiment (the
200 trials x 10 metrics x 1,000 steps of bench/compare-mlflow.sh, both stores), one page load
of each after the other: how long from asking for the page until

  - the runs table shows its first 20 rows (Cohort: #/e/synth; MLflow: its experiment's runs
    page), and
  - a chart of val_loss for the 20 best trials is drawn with all 20 curves (Cohort: the compare
    page; MLflow: its metric page for those 20 runs, the page its "compare" leads to).

Each time is measured the same way for both: a wall clock from the browser's navigation
request until the page's DOM shows the finished table or chart (polled every 10 ms). Median of
--runs fresh loads, A and B in turn. Run by bench/compare-ui-mlflow.sh.
"""

import argparse
import json
import os
import statistics
import subprocess
import time
import urllib.parse

import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ui", "tests", "browser"))
from chromium import chromium  # noqa: E402  (the tests' own browser set-up)


def until(d, url, condition, timeout=120):
    """Seconds from asking for `url` until the script `condition` returns true."""
    d.get("about:blank")
    start = time.perf_counter()
    d.get(url)
    end = start + timeout
    while time.perf_counter() < end:
        if d.execute_script(condition):
            return time.perf_counter() - start
        time.sleep(0.01)
    raise SystemExit(f"{url}: not ready within {timeout} s")


COHORT_TABLE = "return document.querySelectorAll('.tablewrap tbody tr td a').length >= 20"
COHORT_CHART = "const l = document.querySelector('.legend'); return !!l && l.textContent.includes('20 curves')"
MLFLOW_TABLE = "return document.querySelectorAll('.ag-center-cols-container .ag-row').length >= 20"
MLFLOW_CHART = """
const lines = [...document.querySelectorAll('.js-plotly-plot .scatterlayer .trace path.js-line')]
  .filter(p => (p.getAttribute('d') || '').length > 200);
return lines.length >= 20"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cohort-url", required=True, help="cohort ui's URL, with ?token=")
    p.add_argument("--mlflow-url", required=True)
    p.add_argument("--mlruns", required=True)
    p.add_argument("--cohort", required=True, help="the cohort binary")
    p.add_argument("--catalog", required=True)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()

    from mlflow.tracking import MlflowClient
    client = MlflowClient("file://" + os.path.abspath(a.mlruns))
    exp = client.get_experiment_by_name("synth").experiment_id
    best = json.loads(subprocess.run(
        [a.cohort, "trials", "synth", "--sort", "val_loss:min", "--limit", "20", "--json", "--catalog", a.catalog],
        check=True, capture_output=True, text=True).stdout)
    trials = [t["trial"] for t in best]
    runs = {int(r.info.run_name): r.info.run_id
            for r in client.search_runs([exp], max_results=1000)}
    run_ids = [runs[t] for t in trials]

    base, token = a.cohort_url.split("?token=")
    mlflow = a.mlflow_url.rstrip("/")
    q = (f"?runs={json.dumps(run_ids)}&metric={urllib.parse.quote(json.dumps('val_loss'))}"
         f"&experiments={json.dumps([exp])}&plot_metric_keys={urllib.parse.quote(json.dumps(['val_loss']))}"
         "&plot_layout={}&x_axis=step&y_axis_scale=linear&line_smoothness=1&show_point=false"
         "&deselected_curves=[]&last_linear_y_axis_range=[]")
    pages = {
        "runs table, first 20 rows": (
            (f"{base}#/e/synth", COHORT_TABLE),
            (f"{mlflow}/#/experiments/{exp}/runs", MLFLOW_TABLE)),
        "val_loss of 20 trials, drawn": (
            (f"{base}#/e/synth/compare?ids={','.join(map(str, trials))}&metric=val_loss", COHORT_CHART),
            (f"{mlflow}/#/metric{q}", MLFLOW_CHART)),
    }
    d = chromium(window="1400,1000")
    try:
        d.get(f"{base}?token={token}#/")  # cohort ui's cookie
        time.sleep(1)
        print(f"{'page':<32}{'cohort ui (s)':>15}{'MLflow UI (s)':>15}{'MLflow / cohort':>17}")
        for name, (ours, theirs) in pages.items():
            until(d, *ours), until(d, *theirs)  # warm-up: caches, bundles
            mine, others = [], []
            for _ in range(a.runs):
                mine.append(until(d, *ours))
                others.append(until(d, *theirs))
            m, o = statistics.median(mine), statistics.median(others)
            print(f"{name:<32}{m:>15.3f}{o:>15.3f}{o / m:>16.1f}x")
            print(f"{'  (min .. max)':<32}{min(mine):>8.3f}..{max(mine):<5.3f}{min(others):>8.3f}..{max(others):<5.3f}")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
