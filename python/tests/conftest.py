"""What the tests share: the cohort binary, a fresh catalog, free ports, and ranks started by
hand (each with the COHORT_* environment a launcher would give it)."""

import os
import pathlib
import secrets
import socket
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def cohort_binary() -> str:
    """The `cohort` CLI the tests compare with: COHORT_BIN, else the release build, else the
    debug build of this checkout."""
    for candidate in (
        os.environ.get("COHORT_BIN"),
        ROOT / "target" / "release" / "cohort",
        ROOT / "target" / "debug" / "cohort",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("no cohort binary: build it (cargo build --release --bin cohort) or set COHORT_BIN")


@pytest.fixture
def cohort_bin() -> str:
    return cohort_binary()


@pytest.fixture
def catalog(tmp_path, monkeypatch) -> pathlib.Path:
    """A fresh catalog directory, also in COHORT_CATALOG for code that looks there."""
    path = tmp_path / "catalog"
    monkeypatch.setenv("COHORT_CATALOG", str(path))
    for var in ("COHORT_EXPERIMENT", "COHORT_TRIAL", "COHORT_RANK", "RANK", "COHORT_SEARCH_UNTIL"):
        monkeypatch.delenv(var, raising=False)
    return path


def free_port() -> int:
    """A port free now, with the next one free too (MASTER_PORT is the store's port + 1)."""
    while True:
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port


def rank_env(rank: int, size: int, port: int, secret: str, extra=None) -> dict:
    """The environment `cohort run` gives rank `rank` of `size` on one machine (no plan)."""
    env = dict(os.environ)
    env.update(
        COHORT_RANK=str(rank),
        COHORT_WORLD_SIZE=str(size),
        COHORT_LOCAL_RANK=str(rank),
        COHORT_LOCAL_WORLD_SIZE=str(size),
        COHORT_STORE=f"127.0.0.1:{port}",
        COHORT_SECRET=secret,
        RANK=str(rank),
        WORLD_SIZE=str(size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port + 1),
        OMP_NUM_THREADS="1",
    )
    env.pop("COHORT_PLAN", None)
    env.pop("COHORT_STORE_FD", None)
    env.update(extra or {})
    return env


def start_ranks(size: int, argv, extra=None):
    """Starts `size` processes of `argv` as the ranks of one job; returns them (stdout and
    stderr piped, text)."""
    port = free_port()
    secret = secrets.token_hex(16)
    return [
        subprocess.Popen(
            argv,
            env=rank_env(rank, size, port, secret, extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(size)
    ]


def finish_ranks(procs, timeout=120):
    """Waits for every rank; returns (returncode, stdout, stderr) per rank. A rank still
    running at `timeout` is killed and the test fails naming it."""
    results = []
    for rank, proc in enumerate(procs):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            out, err = proc.communicate()
            pytest.fail(f"rank {rank} still running after {timeout} s:\n{out}\n{err}")
        results.append((proc.returncode, out, err))
    return results


PYTHON = sys.executable
