"""Catalog queries from Python give what the CLI's JSON gives for the same catalog."""

import csv
import io
import json
import subprocess

import pytest

import cohort


@pytest.fixture
def filled(catalog):
    """An experiment of six trials with different hyperparameters and losses, one failed."""
    for i in range(6):
        with cohort.init("sweep", hparams={"lr": 10.0 ** -(i % 3 + 1), "width": 16 * (i + 1)}) as t:
            for step in range(20):
                t.log({"loss": (i + 1) / (step + 1), "acc": step / 20 - i / 100}, step)
            if i == 4:
                t.finish("failed", "diverged")
    with cohort.init("other") as t:
        t.log({"x": 1.0}, 0)
    return catalog


def cli_json(cohort_bin, catalog, *args):
    out = subprocess.run(
        [cohort_bin, *args, "--catalog", str(catalog), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def test_experiments_equal_the_clis(filled, cohort_bin):
    ours = [e.to_dict() for e in cohort.Catalog(filled).experiments()]
    assert ours == cli_json(cohort_bin, filled, "exp", "list")
    assert {e["name"]: e["trials"] for e in ours} == {"sweep": 6, "other": 1}


@pytest.mark.parametrize(
    "kwargs, cli",
    [
        ({}, []),
        ({"sort": "loss:min", "limit": 1}, ["--sort", "loss:min", "--limit", "1"]),
        ({"sort": "hparams.width", "desc": True}, ["--sort", "hparams.width", "--desc"]),
        ({"where": "state=completed", "sort": "acc"}, ["--where", "state=completed", "--sort", "acc"]),
        ({"where": ["hparams.lr<0.05", "loss<0.3"]}, ["--where", "hparams.lr<0.05", "--where", "loss<0.3"]),
    ],
)
def test_trials_equal_the_clis(filled, cohort_bin, kwargs, cli):
    ours = [t.to_dict() for t in cohort.Catalog(filled).trials("sweep", **kwargs)]
    assert ours == cli_json(cohort_bin, filled, "trials", "sweep", *cli)


def test_the_best_trial_is_one_call(filled):
    best = cohort.Catalog(filled).trials("sweep", sort="loss:min", limit=1)
    assert [t.trial for t in best] == [1]
    assert best[0].hparams == {"lr": 0.1, "width": 16}
    assert best[0].metrics["loss"]["min"] == pytest.approx(1 / 20)
    assert cohort.Catalog(filled).trials("sweep", where="state=failed")[0].trial == 5


def test_metrics_equal_the_clis(filled, cohort_bin):
    metric = cohort.Catalog(filled).metrics("sweep", 3, "loss")
    cli = subprocess.run(
        [cohort_bin, "metrics", "sweep/3", "--name", "loss", "--catalog", str(filled), "--format", "json"],
        check=True, capture_output=True, text=True,
    ).stdout
    points = json.loads(cli)["metrics"]["loss"]
    assert list(metric.steps) == [p["step"] for p in points]
    assert list(metric.values) == [float(p["value"]) for p in points]
    assert list(metric.wall_times) == [p["wall"] for p in points]
    assert len(metric) == 20


def test_frames_have_the_columns_and_rows_of_cohort_export(filled, cohort_bin):
    exported = subprocess.run(
        [cohort_bin, "export", "sweep", "--catalog", str(filled), "--format", "csv"],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    frame = cohort.Catalog(filled).to_pandas("sweep")
    assert list(frame.columns) == ["trial", "metric", "step", "value", "wall_time"]
    assert len(frame) == len(rows) == 6 * 20 * 2
    table = cohort.Catalog(filled).to_arrow("sweep")
    assert table.column_names == list(frame.columns) and table.num_rows == len(rows)
    ours = sorted(zip(frame.trial, frame.metric, frame.step, frame.value))
    theirs = sorted((int(r["trial"]), r["metric"], int(r["step"]), float(r["value"])) for r in rows)
    assert ours == theirs


def test_errors_name_what_is_wrong(filled, tmp_path):
    with pytest.raises(cohort.CatalogError, match="not a Cohort catalog"):
        cohort.Catalog(tmp_path / "nowhere")
    view = cohort.Catalog(filled)
    with pytest.raises(cohort.CatalogError, match='no experiment named "nope"'):
        view.trials("nope")
    with pytest.raises(ValueError, match="los"):
        view.trials("sweep", sort="los")
    with pytest.raises(ValueError, match="limit"):
        view.trials("sweep", limit=-1)
    with pytest.raises(KeyError, match=r"no metric \"lost\" \(it has: acc, loss\)"):
        view.metrics("sweep", 1, "lost")
    with pytest.raises(cohort.CatalogError, match="has no trial 99"):
        view.metrics("sweep", 99, "loss")


def test_models_equal_the_clis_and_name_their_versions(catalog, cohort_bin, tmp_path):
    with cohort.init("train", hparams={"lr": 0.01}) as t:
        for step, loss in [(1, 0.5), (2, 0.2), (3, 0.4)]:
            t.log({"val_loss": loss}, step)
            weights = tmp_path / f"w{step}.pt"
            weights.write_bytes(b"weights %d" % step)
            t.checkpoint(weights, step)
    run = lambda *args: subprocess.run(  # noqa: E731
        [cohort_bin, "model", *args, "--catalog", str(catalog)],
        check=True, capture_output=True, text=True,
    )
    run("register", "mlp", "--from", "train/1", "--checkpoint", "best:val_loss")
    run("register", "mlp", "--from", "train/1")
    run("alias", "mlp@1", "production")
    run("alias", "mlp@2", "production")

    models = cohort.Catalog(catalog).models()
    assert [m.name for m in models] == ["mlp"]
    mlp = models[0]
    assert mlp.aliases == {"production": 2}
    assert [(h["from"], h["to"]) for h in mlp.alias_history] == [(None, 1), (1, 2)]
    best = mlp.version(1)
    assert best.checkpoint["step"] == 2
    assert best.metrics["val_loss"] == {"step": 2, "value": 0.2}
    assert best.hparams == {"lr": 0.01}
    assert best.checkpoint_present
    assert mlp.version("production").number == 2
    assert mlp.version().number == 2
    with pytest.raises(KeyError, match="aliases"):
        mlp.version("canary")

    shown = cli_json(cohort_bin, catalog, "model", "show", "mlp")
    assert [v.to_dict() for v in cohort.Catalog(catalog).model("mlp").versions] == [
        {"description": None, **version} for version in shown["versions"]
    ]
    with pytest.raises(cohort.CatalogError, match="no model named"):
        cohort.Catalog(catalog).model("nope")
