//! The catalog commands end to end on a temporary catalog: runs recorded by `cohort run`,
//! metrics from `cohort log metric`, queries, exports, checkpoints, and bad input.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;
use std::process::{Command, Output};

const COHORT: &str = env!("CARGO_BIN_EXE_cohort");

fn cohort(catalog: &Path, args: &[&str]) -> Output {
    Command::new(COHORT)
        .args(args)
        .env("COHORT_CATALOG", catalog)
        .env_remove("COHORT_EXPERIMENT")
        .env_remove("COHORT_TRIAL")
        .output()
        .expect("cohort runs")
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.starts_with("cohort: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Runs a shell script under `cohort run -n 1` as a trial of `experiment`.
fn run_trial(catalog: &Path, experiment: &str, lr: &str, script: &str) -> Output {
    let script = script.replace("COHORT", COHORT);
    cohort(
        catalog,
        &[
            "run",
            "-n",
            "1",
            "--experiment",
            experiment,
            "--hparam",
            &format!("lr={lr}"),
            "--",
            "sh",
            "-c",
            &script,
        ],
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn runs_become_trials_and_queries_find_the_best() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    for (lr, losses) in [
        ("0.1", [0.9, 0.5]),
        ("0.01", [0.8, 0.2]),
        ("0.001", [0.7, 0.6]),
    ] {
        let script = format!(
            "COHORT log metric loss={} acc=0.5 --step 1 && COHORT log metric loss={} acc=0.7 --step 2",
            losses[0], losses[1]
        );
        ok(&run_trial(&cat, "sweep", lr, &script));
    }
    let failed = run_trial(
        &cat,
        "sweep",
        "1.0",
        "COHORT log metric loss=9 --step 1; exit 3",
    );
    assert_eq!(failed.status.code(), Some(3));

    let list = json(&ok(&cohort(&cat, &["exp", "list", "--json"])));
    assert_eq!(list[0]["name"], "sweep");
    assert_eq!(list[0]["trials"], 4);

    let best = json(&ok(&cohort(
        &cat,
        &[
            "trials", "sweep", "--sort", "loss", "--limit", "1", "--json",
        ],
    )));
    assert_eq!(best[0]["trial"], 2);
    assert_eq!(best[0]["hparams"]["lr"], 0.01);
    assert_eq!(best[0]["state"], "completed");
    assert_eq!(best[0]["metrics"]["loss"]["last"], 0.2);
    assert_eq!(best[0]["metrics"]["loss"]["count"], 2);

    let worst = json(&ok(&cohort(
        &cat,
        &["trials", "sweep", "--sort", "loss:min", "--desc", "--json"],
    )));
    assert_eq!(worst[0]["trial"], 4);
    assert_eq!(worst[0]["state"], "failed");
    assert_eq!(worst[0]["exit_status"], 3);

    let small = json(&ok(&cohort(
        &cat,
        &[
            "trials",
            "sweep",
            "--where",
            "lr<0.05",
            "--where",
            "state=completed",
            "--json",
        ],
    )));
    let ids: Vec<i64> = small
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trial"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![2, 3]);

    let table = ok(&cohort(&cat, &["trials", "sweep", "--sort", "loss"]));
    let first_row = table.lines().nth(1).unwrap();
    assert!(
        first_row.starts_with("2 ") && first_row.contains("completed"),
        "{table}"
    );

    let show = ok(&cohort(&cat, &["trial", "show", "sweep/4"]));
    assert!(
        show.contains("failed") && show.contains("exit status  3"),
        "{show}"
    );
    assert!(show.contains("rank 0 ended with exit status 3"), "{show}");

    let csv = ok(&cohort(
        &cat,
        &["metrics", "sweep/2", "--name", "loss", "--format", "csv"],
    ));
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.lines().nth(2).unwrap().starts_with("loss,2,0.2,"),
        "{csv}"
    );

    let compare = ok(&cohort(&cat, &["compare", "sweep/1", "sweep/2"]));
    assert!(compare.contains("loss (last)") && compare.contains("0.5") && compare.contains("0.2"));

    let plot = ok(&cohort(
        &cat,
        &["plot", "sweep/2", "--metric", "loss", "--height", "4"],
    ));
    assert!(plot.starts_with("loss of sweep/2"), "{plot}");
    let png = dir.path().join("loss.png");
    ok(&cohort(
        &cat,
        &[
            "plot",
            "sweep",
            "--metric",
            "loss",
            "--png",
            png.to_str().unwrap(),
        ],
    ));
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );

    let export = ok(&cohort(&cat, &["export", "sweep", "--format", "csv"]));
    assert_eq!(
        export.lines().next(),
        Some("trial,metric,step,value,wall_time")
    );
    assert_eq!(export.lines().count(), 1 + 3 * 4 + 1);
    let export = json(&ok(&cohort(&cat, &["export", "sweep", "--format", "json"])));
    assert_eq!(export["trials"].as_array().unwrap().len(), 4);
    assert_eq!(export["trials"][1]["metrics"]["loss"][1][1], 0.2);
    let parquet = dir.path().join("sweep.parquet");
    ok(&cohort(
        &cat,
        &[
            "export",
            "sweep",
            "--format",
            "parquet",
            "-o",
            parquet.to_str().unwrap(),
        ],
    ));
    let bytes = std::fs::read(&parquet).unwrap();
    assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));

    let index = ok(&cohort(&cat, &["index"]));
    assert!(index.contains("sweep: indexed 4 trial(s)"), "{index}");
}

#[test]
fn checkpoints_are_listed_and_collected() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    // A trial with three checkpoints written through the library.
    let catalog = cohort_catalog::Catalog::open_or_create(&cat).unwrap();
    let tracker = cohort_catalog::Tracker::open(&catalog, "ck", None, Default::default()).unwrap();
    for (step, loss) in [(1, 0.5), (2, 0.1), (3, 0.4)] {
        tracker.log_metrics(step, &[("val_loss", loss)]).unwrap();
        let path = dir.path().join(format!("c{step}"));
        std::fs::write(&path, b"weights").unwrap();
        tracker.checkpoint(&path, step, Default::default()).unwrap();
    }
    tracker
        .finish(cohort_proto::catalog::TrialState::Completed)
        .unwrap();
    let list = json(&ok(&cohort(&cat, &["ckpt", "list", "ck", "--json"])));
    assert_eq!(list.as_array().unwrap().len(), 3);
    let dry = ok(&cohort(
        &cat,
        &[
            "ckpt",
            "gc",
            "ck",
            "--keep-best",
            "1",
            "--by",
            "val_loss",
            "--dry-run",
        ],
    ));
    assert!(dry.contains("would delete 2"), "{dry}");
    assert!(dir.path().join("c1").exists());
    let done = ok(&cohort(
        &cat,
        &["ckpt", "gc", "ck", "--keep-best", "1", "--by", "val_loss"],
    ));
    assert!(done.contains("deleted 2"), "{done}");
    assert!(!dir.path().join("c1").exists() && dir.path().join("c2").exists());
    let list = json(&ok(&cohort(&cat, &["ckpt", "list", "ck/1", "--json"])));
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["step"], 2);
    let err = error(&cohort(
        &cat,
        &["ckpt", "gc", "ck", "--keep-best", "1", "--by", "nope"],
    ));
    assert!(err.contains("\"nope\""), "{err}");
    let err = error(&cohort(&cat, &["ckpt", "gc", "ck"]));
    assert!(err.contains("--keep-latest"), "{err}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    let err = error(&cohort(&cat, &["exp", "list"]));
    assert!(err.contains("not a Cohort catalog"), "{err}");
    ok(&run_trial(
        &cat,
        "e",
        "1",
        "COHORT log metric loss=1 --step 0",
    ));
    let err = error(&cohort(&cat, &["trials", "nope"]));
    assert!(err.contains("no experiment named \"nope\""), "{err}");
    let err = error(&cohort(&cat, &["trials", "e", "--sort", "accuracy"]));
    assert!(
        err.contains("\"accuracy\"") && err.contains("metrics: loss"),
        "{err}"
    );
    let err = error(&cohort(&cat, &["trials", "e", "--where", "loss"]));
    assert!(err.contains("FIELD OP VALUE"), "{err}");
    let err = error(&cohort(&cat, &["trial", "show", "e/9"]));
    assert!(err.contains("has no trial 9"), "{err}");
    let err = error(&cohort(&cat, &["trial", "show", "e"]));
    assert!(err.contains("EXPERIMENT/NUMBER"), "{err}");
    let err = error(&cohort(&cat, &["metrics", "e/1", "--name", "acc"]));
    assert!(
        err.contains("no metric \"acc\"") && err.contains("loss"),
        "{err}"
    );
    let ckpt = dir.path().join("weights.pt");
    std::fs::write(&ckpt, b"w").unwrap();
    ok(&cohort(
        &cat,
        &[
            "log",
            "checkpoint",
            ckpt.to_str().unwrap(),
            "--step",
            "3",
            "--experiment",
            "e",
            "--trial",
            "1",
        ],
    ));
    let listed = json(&ok(&cohort(&cat, &["ckpt", "list", "e/1", "--json"])));
    assert_eq!(
        (listed[0]["step"].as_i64(), listed[0]["exists"].as_bool()),
        (Some(3), Some(true))
    );
    let err = error(&cohort(
        &cat,
        &[
            "log",
            "checkpoint",
            "/nonexistent/ckpt",
            "--step",
            "1",
            "--experiment",
            "e",
            "--trial",
            "1",
        ],
    ));
    assert!(err.contains("/nonexistent/ckpt"), "{err}");
    let err = error(&cohort(&cat, &["log", "metric", "loss=1", "--step", "1"]));
    assert!(err.contains("COHORT_EXPERIMENT"), "{err}");
    let err = error(&cohort(
        &cat,
        &[
            "log",
            "metric",
            "loss=x",
            "--step",
            "1",
            "--experiment",
            "e",
            "--trial",
            "1",
        ],
    ));
    assert!(err.contains("not a number"), "{err}");
    let err = error(&cohort(
        &cat,
        &["run", "-n", "1", "--hparam", "lr", "--", "true"],
    ));
    assert!(err.contains("KEY=VALUE"), "{err}");
    // A catalog path that cannot be created stops the run before any rank starts.
    let out = Command::new(COHORT)
        .args(["run", "-n", "1", "--catalog", "/proc/nope", "--", "true"])
        .output()
        .unwrap();
    let err = error(&out);
    assert!(
        err.contains("/proc/nope") && err.contains("--no-track"),
        "{err}"
    );
}
