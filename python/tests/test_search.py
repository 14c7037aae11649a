"""A Python training script as a search trial with no glue: the local ASHA search of
examples/python/train.py (examples/search/python.toml)."""

import glob
import json
import os
import subprocess

import pytest

pytest.importorskip("torch", reason="PyTorch is not installed in this environment")

from conftest import PYTHON, ROOT  # noqa: E402


def test_a_local_asha_search_of_the_python_example(cohort_bin, catalog):
    env = dict(os.environ)
    # `python` in the experiment file is the one running these tests.
    env["PATH"] = os.path.dirname(PYTHON) + os.pathsep + env["PATH"]
    env["PYTHONWARNINGS"] = "ignore::FutureWarning"
    run = subprocess.run(
        [cohort_bin, "search", "start", "examples/search/python.toml", "--local", "2", "--catalog", str(catalog)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    status = json.loads(
        subprocess.run(
            [cohort_bin, "search", "status", "python-asha", "--catalog", str(catalog), "--json"],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    trials = status["trials"]
    assert status["finished"] == "done", status
    assert len(trials) == 4, trials
    assert any(t["state"] == "completed" and t["length"] == 4 for t in trials), trials
    assert sum(t["state"] == "killed" for t in trials) >= 2, trials
    logs = "".join(open(p).read() for p in glob.glob(f"{catalog}/experiments/*/trials/*/output.log"))
    assert "resumed from" in logs, "no promoted trial resumed from its checkpoint"
    hparams = [t.get("hparams") for t in trials]
    assert all(h and "lr" in h and "hidden" in h for h in hparams), hparams
