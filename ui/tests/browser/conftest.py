"""What the browser tests share: the cohort binary, a catalog with a finished experiment, a
search and a live trial, `cohort ui` serving it, and a headless Chromium driven by Selenium
(Debian's chromium and chromium-driver). Screenshots go to target/ui-screenshots/."""

import os
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest
from chromium import chromium

ROOT = pathlib.Path(__file__).resolve().parents[3]
TOKEN = "browser-test-token-0123456789"
SHOTS = ROOT / "target" / "ui-screenshots"


def cohort_binary() -> str:
    for candidate in (os.environ.get("COHORT_BIN"), ROOT / "target" / "release" / "cohort"):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("no cohort binary: cargo build --release --bin cohort, or set COHORT_BIN")


def run(*args, **kw):
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)
    assert out.returncode == 0, f"{args}: {out.stderr}"
    return out.stdout


@pytest.fixture(scope="session")
def cohort_bin():
    return cohort_binary()


@pytest.fixture(scope="session")
def catalog(tmp_path_factory, cohort_bin):
    """A catalog with `synth` (60 finished trials, 3 metrics, 200 steps), a model registered
    from its trial 3, and `search` (a local ASHA search of a shell worker)."""
    root = tmp_path_factory.mktemp("ui") / "catalog"
    run(cohort_bin, "bench", "catalog", "generate", "--catalog", str(root), "--trials", "60",
        "--metrics", "3", "--steps", "200")
    # A model: trial 3's checkpoint, registered twice, its alias moved once.
    weights = root.parent / "weights.pt"
    weights.write_bytes(b"weights")
    run(cohort_bin, "log", "checkpoint", str(weights), "--step", "150", "--experiment", "synth",
        "--trial", "3", "--catalog", str(root))
    for version in ("1", "2"):
        run(cohort_bin, "model", "register", "synth-best", "--from", "synth/3", "--catalog", str(root))
        run(cohort_bin, "model", "alias", "synth-best@" + version, "production", "--catalog", str(root))
    worker = root.parent / "worker.sh"
    worker.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        x=$(echo "$COHORT_HPARAMS" | sed 's/.*"x": *\\([0-9.e-]*\\).*/\\1/')
        s=1
        while [ $s -le "$COHORT_SEARCH_UNTIL" ]; do
            {cohort_bin} log metric "loss=$(awk -v x="$x" -v s="$s" 'BEGIN {{ print (x - 0.3) ^ 2 + 1 / s }}')" --step $s
            s=$((s + 1))
        done
        """))
    worker.chmod(0o755)
    spec = root.parent / "search.toml"
    spec.write_text(textwrap.dedent(f"""\
        name = "search"
        command = ["{worker}"]
        [searcher]
        name = "asha"
        metric = "loss"
        max_trials = 6
        max_concurrent_trials = 3
        max_length = 8
        divisor = 2
        max_rungs = 3
        [hyperparameters]
        x = {{ type = "double", minval = 0.0, maxval = 1.0 }}
        """))
    run(cohort_bin, "search", "start", str(spec), "--local", "3", "--catalog", str(root))
    return root


@pytest.fixture(scope="session")
def ui(cohort_bin, catalog):
    """`cohort ui` on a free port: its base URL."""
    proc = subprocess.Popen(
        [cohort_bin, "ui", "--bind", "127.0.0.1:0", "--token", TOKEN, "--catalog", str(catalog)],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    url = line.split("on ", 1)[1].split("?")[0]
    yield url
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def driver():
    d = chromium(console=True)
    yield d
    d.quit()


def open_page(driver, ui, fragment):
    """Loads the UI at `fragment` (the token in the URL the first time, the cookie after)."""
    driver.get(f"{ui}?token={TOKEN}{fragment}")


def console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def shot(driver, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}", file=sys.stderr)
    return path


def wait_for(predicate, timeout=20.0, what="the page"):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # a page still building
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s (last: {last!r})")
