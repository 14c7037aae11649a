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

#[test]
fn models_are_registered_aliased_shown_exported_and_kept_from_collection() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    let ck = dir.path().join("ckpts");
    std::fs::create_dir(&ck).unwrap();
    // A run that writes three checkpoints and logs its loss at each.
    let script = format!(
        "for s in 1 2 3; do printf 'weights %s\\n' $s > {ck}/w$s.pt; \
         COHORT log metric val_loss=0.$((5 - s)) --step $s && COHORT log checkpoint {ck}/w$s.pt --step $s; done",
        ck = ck.display()
    );
    ok(&run_trial(&cat, "train", "0.01", &script));
    let registered = json(&ok(&cohort(
        &cat,
        &[
            "model",
            "register",
            "mlp",
            "--from",
            "train/1",
            "--checkpoint",
            "best:val_loss",
            "--description",
            "the best of the first run",
            "--json",
        ],
    )));
    assert_eq!(registered["number"], 1);
    assert_eq!(registered["checkpoint"]["step"], 3);
    assert_eq!(registered["source"]["experiment"], "train");
    assert_eq!(registered["source"]["command"][0], "sh");
    assert_eq!(registered["hparams"]["lr"], 0.01);
    assert_eq!(registered["metrics"]["val_loss"]["value"], 0.2);
    assert_eq!(registered["checkpoint_present"], true);
    // The recorded sum is the one sha256sum computes.
    let sum = Command::new("sha256sum")
        .arg(ck.join("w3.pt"))
        .output()
        .unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert_eq!(
        registered["checkpoint"]["sha256"],
        sum.split_whitespace().next().unwrap()
    );
    let text = ok(&cohort(
        &cat,
        &[
            "model",
            "register",
            "mlp",
            "--from",
            "train/1",
            "--checkpoint",
            "1",
        ],
    ));
    assert!(
        text.starts_with("registered mlp@2: train/1 step 1"),
        "{text}"
    );

    // Four registrations at once, as four processes: four distinct versions.
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(COHORT)
                .args(["model", "register", "racy", "--from", "train/1", "--json"])
                .env("COHORT_CATALOG", &cat)
                .output()
        })
        .collect();
    let mut numbers: Vec<u64> = children
        .into_iter()
        .map(|out| json(&ok(&out.unwrap()))["number"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![1, 2, 3, 4]);

    // Aliases and their history.
    let moved = ok(&cohort(&cat, &["model", "alias", "mlp@1", "production"]));
    assert_eq!(moved, "mlp: production -> version 1\n");
    let moved = ok(&cohort(&cat, &["model", "alias", "mlp@2", "production"]));
    assert_eq!(moved, "mlp: production moved from version 1 to 2\n");
    ok(&cohort(
        &cat,
        &["model", "alias", "mlp@production", "staging"],
    ));
    let same = ok(&cohort(&cat, &["model", "alias", "mlp@2", "production"]));
    assert!(same.contains("already points at version 2"), "{same}");
    let shown = json(&ok(&cohort(&cat, &["model", "show", "mlp", "--json"])));
    assert_eq!(
        shown["aliases"],
        serde_json::json!({"production": 2, "staging": 2})
    );
    let history = shown["alias_history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(
        (history[1]["from"].as_u64(), history[1]["to"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(history[1]["by"]["user"].is_string() && history[1]["at"].is_f64());
    let table = ok(&cohort(&cat, &["model", "show", "mlp"]));
    assert!(
        table.contains("Alias history") && table.contains("production"),
        "{table}"
    );
    let version = json(&ok(&cohort(
        &cat,
        &["model", "show", "mlp@production", "--json"],
    )));
    assert_eq!(version["number"], 2);
    assert_eq!(
        version["aliases"],
        serde_json::json!(["production", "staging"])
    );
    let one = ok(&cohort(&cat, &["model", "show", "mlp@1"]));
    assert!(
        one.contains("the best of the first run") && one.contains("val_loss"),
        "{one}"
    );
    let list = json(&ok(&cohort(&cat, &["model", "list", "--json"])));
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["name"], "mlp");
    assert_eq!(list[0]["versions"], 2);
    assert_eq!(list[0]["latest"], 2);
    let listed = ok(&cohort(&cat, &["model", "list"]));
    assert!(listed.contains("production=2"), "{listed}");

    // Export: the copy, its sum verified, the model card.
    let out = dir.path().join("export");
    let exported = ok(&cohort(
        &cat,
        &["model", "export", "mlp@production", out.to_str().unwrap()],
    ));
    assert!(exported.contains("verified"), "{exported}");
    assert_eq!(std::fs::read(out.join("w1.pt")).unwrap(), b"weights 1\n");
    let card = json(&std::fs::read_to_string(out.join("model-card.json")).unwrap());
    assert_eq!(card["registered_version"]["number"], 2);
    assert!(std::fs::read_to_string(out.join("model-card.md"))
        .unwrap()
        .contains("## Provenance"));

    // Collection keeps both registered checkpoints and says so.
    let gc = ok(&cohort(
        &cat,
        &["ckpt", "gc", "train", "--keep-latest", "1"],
    ));
    assert!(gc.contains("registered as mlp@2"), "{gc}");
    assert!(gc.contains("deleted 1"), "{gc}");
    assert!(ck.join("w1.pt").exists() && ck.join("w3.pt").exists() && !ck.join("w2.pt").exists());

    // A corrupted checkpoint: export names both sums; nothing is left in the directory.
    std::fs::write(ck.join("w3.pt"), b"weights 9\n").unwrap();
    let err = error(&cohort(
        &cat,
        &[
            "model",
            "export",
            "mlp@1",
            dir.path().join("bad").to_str().unwrap(),
        ],
    ));
    assert!(
        err.contains(registered["checkpoint"]["sha256"].as_str().unwrap()),
        "{err}"
    );
    assert!(err.contains("differs"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("bad")).unwrap().count(),
        0
    );
    // Deleted by hand: show says it is missing; export says which file.
    std::fs::remove_file(ck.join("w3.pt")).unwrap();
    let table = ok(&cohort(&cat, &["model", "show", "mlp"]));
    assert!(table.contains("w3.pt (missing)"), "{table}");
    let err = error(&cohort(
        &cat,
        &[
            "model",
            "export",
            "mlp@1",
            dir.path().join("gone").to_str().unwrap(),
        ],
    ));
    assert!(err.contains("w3.pt is missing"), "{err}");

    // Bad input.
    let err = error(&cohort(&cat, &["model", "show", "nope"]));
    assert!(err.contains("no model named \"nope\""), "{err}");
    let err = error(&cohort(&cat, &["model", "show", "mlp@9"]));
    assert!(err.contains("has no version 9"), "{err}");
    let err = error(&cohort(&cat, &["model", "show", "mlp@canary"]));
    assert!(err.contains("has no alias \"canary\""), "{err}");
    let err = error(&cohort(&cat, &["model", "alias", "mlp", "production"]));
    assert!(err.contains("NAME@VERSION"), "{err}");
    let err = error(&cohort(
        &cat,
        &[
            "model",
            "register",
            "m",
            "--from",
            "train/1",
            "--checkpoint",
            "best",
        ],
    ));
    assert!(err.contains("best:METRIC"), "{err}");
    let err = error(&cohort(
        &cat,
        &["model", "register", "m", "--from", "train/7"],
    ));
    assert!(err.contains("has no trial 7"), "{err}");
}

#[test]
fn a_registration_killed_while_hashing_leaves_no_version() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    // A 16 GiB sparse checkpoint: hashing it takes long enough that the registration is
    // killed half-way through reading it, which the test sees in /proc (the file's read
    // position) before it kills.
    let weights = dir.path().join("weights.pt");
    std::fs::File::create(&weights)
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    let script = format!("COHORT log checkpoint {} --step 1", weights.display());
    ok(&run_trial(&cat, "train", "0.1", &script));
    let mut child = Command::new(COHORT)
        .args(["model", "register", "mlp", "--from", "train/1"])
        .env("COHORT_CATALOG", &cat)
        .spawn()
        .unwrap();
    let reading = |pid: u32| -> bool {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.filter_map(Result::ok).any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target == weights)
                && std::fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ))
                .is_ok_and(|info| {
                    info.lines()
                        .find_map(|l| l.strip_prefix("pos:"))
                        .and_then(|p| p.trim().parse::<u64>().ok())
                        .is_some_and(|pos| pos > 0 && pos < 16 << 30)
                })
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !reading(child.id()) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the registration ended before it was seen reading its checkpoint"
        );
        assert!(std::time::Instant::now() < deadline, "never seen reading");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let list = json(&ok(&cohort(&cat, &["model", "list", "--json"])));
    assert_eq!(list, serde_json::json!([]), "no half model");
    let err = error(&cohort(&cat, &["model", "show", "mlp"]));
    assert!(err.contains("no model named"), "{err}");
    // The same checkpoint, small now, registers as version 1.
    std::fs::File::options()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(1)
        .unwrap();
    let version = json(&ok(&cohort(
        &cat,
        &["model", "register", "mlp", "--from", "train/1", "--json"],
    )));
    assert_eq!(version["number"], 1);
    // A pipe is no checkpoint: refused at once, not waited on.
    let fifo = dir.path().join("pipe.pt");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    ok(&cohort(
        &cat,
        &[
            "log",
            "checkpoint",
            fifo.to_str().unwrap(),
            "--step",
            "2",
            "--experiment",
            "train",
            "--trial",
            "1",
        ],
    ));
    let err = error(&cohort(
        &cat,
        &["model", "register", "mlp", "--from", "train/1"],
    ));
    assert!(
        err.contains("neither a regular file nor a directory"),
        "{err}"
    );
}

#[test]
fn a_directory_checkpoints_sum_is_the_one_the_documented_shell_pipeline_gives() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    let ckpt = dir.path().join("ckpt");
    std::fs::create_dir_all(ckpt.join("shards/b")).unwrap();
    std::fs::write(ckpt.join("config.json"), "{}\n").unwrap();
    std::fs::write(ckpt.join("shards/0.bin"), vec![1u8; 10_000]).unwrap();
    std::fs::write(ckpt.join("shards/b/Z.bin"), b"z").unwrap();
    std::fs::write(ckpt.join("shards/a b.bin"), b"space").unwrap();
    std::os::unix::fs::symlink(ckpt.join("config.json"), ckpt.join("link.json")).unwrap();
    let script = format!("COHORT log checkpoint {} --step 5", ckpt.display());
    ok(&run_trial(&cat, "train", "0.1", &script));
    let version = json(&ok(&cohort(
        &cat,
        &[
            "model", "register", "sharded", "--from", "train/1", "--json",
        ],
    )));
    assert_eq!(version["checkpoint"]["kind"], "directory");
    // docs/catalog-format.md, "A checkpoint's SHA-256".
    let shell = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find -L . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -r -d '\\n' sha256sum | sha256sum")
        .arg("sh")
        .arg(&ckpt)
        .output()
        .unwrap();
    let shell = String::from_utf8_lossy(&shell.stdout);
    assert_eq!(
        version["checkpoint"]["sha256"],
        shell.split_whitespace().next().unwrap()
    );
}
