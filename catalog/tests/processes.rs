//! The catalog under real processes: many writers at once, writers killed with SIGKILL at
//! random points, many creators of one experiment, racing compactions, damaged files and a
//! full disk.
//!
//! Child processes are this test binary started again on the ignored test `child_writer`,
//! told what to do through environment variables.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cohort_catalog::index::{IndexWrite, LoadOptions};
use cohort_catalog::{Catalog, NewExperiment, Tracker, TrackerOptions};
use cohort_proto::catalog::TrialState;

/// The value every writer logs for `metric` at `step`: readers check points against it.
fn expected(trial_seed: u64, metric: usize, step: i64) -> f64 {
    (trial_seed as f64) * 1000.0 + metric as f64 + step as f64 * 1e-3
}

const METRICS: [&str; 3] = ["loss", "acc", "lr"];

fn spawn_child(vars: &[(&str, String)]) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in vars {
        command.env(key, value);
    }
    command.spawn().unwrap()
}

/// Run as a child process: creates `TRIALS` trials of `EXPERIMENT` in `CATALOG` and logs
/// `STEPS` steps to each, syncing every `SYNC_EVERY` steps and printing `committed ID STEP`
/// after each sync.
#[test]
#[ignore = "a child process of the other tests, started by them"]
fn child_writer() {
    let Ok(root) = std::env::var("CHILD_CATALOG") else {
        println!("child_writer only runs as a child of the process tests");
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let trials: u64 = var("CHILD_TRIALS").parse().unwrap();
    let steps: i64 = var("CHILD_STEPS").parse().unwrap();
    let sync_every: i64 = var("CHILD_SYNC_EVERY").parse().unwrap();
    let seed: u64 = var("CHILD_SEED").parse().unwrap();
    let catalog = Catalog::open_or_create(&root).unwrap();
    for t in 0..trials {
        let trial_seed = seed * 100 + t;
        let tracker = Tracker::open(
            &catalog,
            &var("CHILD_EXPERIMENT"),
            None,
            TrackerOptions::default(),
        )
        .unwrap();
        let id = tracker.trial().unwrap().id;
        tracker
            .log_hparams([("seed".to_owned(), serde_json::json!(trial_seed))].into())
            .unwrap();
        for step in 0..steps {
            let row: Vec<(&str, f64)> = METRICS
                .iter()
                .enumerate()
                .map(|(m, name)| (*name, expected(trial_seed, m, step)))
                .collect();
            tracker.log_metrics(step, &row).unwrap();
            if (step + 1) % sync_every == 0 {
                tracker.sync().unwrap();
                println!("committed {id} {step}");
            }
        }
        tracker.finish(TrialState::Completed).unwrap();
    }
}

/// Checks every point of every trial against `expected`; returns points per trial id.
fn verify_points(catalog: &Catalog, experiment: &str) -> BTreeMap<u64, i64> {
    let exp = catalog.experiment(experiment).unwrap();
    let loaded = cohort_catalog::load(
        catalog,
        &exp,
        LoadOptions {
            use_index: false,
            write: IndexWrite::Never,
        },
    )
    .unwrap();
    let mut out = BTreeMap::new();
    for trial in &loaded.trials {
        let seed = trial
            .hparams
            .get("seed")
            .and_then(serde_json::Value::as_u64);
        let dir = exp.dir.join("trials").join(&trial.dir);
        let history = cohort_catalog::read::history(&dir, None, &mut Vec::new()).unwrap();
        let mut steps = None;
        for (m, name) in METRICS.iter().enumerate() {
            let points = history.get(*name).cloned().unwrap_or_default();
            for (i, p) in points.iter().enumerate() {
                assert_eq!(
                    p.step, i as i64,
                    "trial {} {name}: steps are contiguous",
                    trial.id
                );
                let seed = seed.expect("a trial with points has its seed");
                assert_eq!(
                    p.value,
                    expected(seed, m, p.step),
                    "trial {} {name}",
                    trial.id
                );
            }
            let n = points.len() as i64;
            // All metrics of a row are written together.
            assert!(
                steps.is_none_or(|s| s == n),
                "trial {}: metrics disagree",
                trial.id
            );
            steps = Some(n);
        }
        out.insert(trial.id, steps.unwrap_or(0));
    }
    out
}

#[test]
fn many_writer_processes_each_with_many_trials_keep_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("catalog");
    let children: Vec<Child> = (0..6)
        .map(|seed| {
            spawn_child(&[
                ("CHILD_CATALOG", root.display().to_string()),
                ("CHILD_EXPERIMENT", "shared".into()),
                ("CHILD_TRIALS", "4".into()),
                ("CHILD_STEPS", "3000".into()),
                ("CHILD_SYNC_EVERY", "1000".into()),
                ("CHILD_SEED", (seed + 1).to_string()),
            ])
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let catalog = Catalog::open(&root).unwrap();
    let (experiments, warnings) = catalog.experiments().unwrap();
    assert_eq!(
        experiments.len(),
        1,
        "one experiment however many created it"
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let points = verify_points(&catalog, "shared");
    assert_eq!(points.len(), 24);
    assert!(points.values().all(|&n| n == 3000), "{points:?}");
    // Trial numbers are 1..=24 with none taken twice.
    assert_eq!(
        points.keys().copied().collect::<Vec<_>>(),
        (1..=24).collect::<Vec<_>>()
    );
}

#[test]
fn writers_killed_at_random_points_lose_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("catalog");
    let mut committed: BTreeMap<u64, i64> = BTreeMap::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..12u64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut child = spawn_child(&[
            ("CHILD_CATALOG", root.display().to_string()),
            ("CHILD_EXPERIMENT", "killed".into()),
            ("CHILD_TRIALS", "1".into()),
            ("CHILD_STEPS", "100000000".into()),
            ("CHILD_SYNC_EVERY", "997".into()),
            ("CHILD_SEED", (round + 1).to_string()),
        ]);
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Some(rest) = line.strip_prefix("committed ") else {
                    continue;
                };
                let mut parts = rest.split_whitespace();
                if let (Some(id), Some(step)) = (parts.next(), parts.next()) {
                    let _ = tx.send((id.parse::<u64>().unwrap(), step.parse::<i64>().unwrap()));
                }
            }
        });
        // Let it commit at least once, then kill it at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the writer commits");
        std::thread::sleep(Duration::from_millis(rng % 300));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = child.wait();
        reader.join().unwrap();
        let last = rx.try_iter().last().unwrap_or(first);
        committed.insert(last.0, last.1);
        // A query in between never fails.
        let catalog = Catalog::open(&root).unwrap();
        let exp = catalog.experiment("killed").unwrap();
        cohort_catalog::load(&catalog, &exp, LoadOptions::default()).unwrap();
    }
    let catalog = Catalog::open(&root).unwrap();
    let points = verify_points(&catalog, "killed");
    for (id, step) in &committed {
        let have = points[id];
        assert!(
            have > *step,
            "trial {id}: committed up to step {step}, {have} points found"
        );
    }
    let exp = catalog.experiment("killed").unwrap();
    let loaded = cohort_catalog::load(&catalog, &exp, LoadOptions::default()).unwrap();
    assert_eq!(loaded.trials.len(), 12);
    for trial in &loaded.trials {
        // Killed writers leave their trials running, never corrupt.
        assert_eq!(
            cohort_catalog::read::shown_state(trial),
            Some(TrialState::Running)
        );
    }
}

#[test]
fn many_processes_creating_one_experiment_make_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("catalog");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let root = root.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let catalog = Catalog::open_or_create(&root).unwrap();
                barrier.wait();
                let (exp, created) = catalog
                    .create_experiment(&NewExperiment {
                        name: "race".into(),
                        description: Some(format!("creator {i}")),
                        ..NewExperiment::default()
                    })
                    .unwrap();
                (exp.record, created)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    assert!(
        results.iter().all(|(r, _)| *r == results[0].0),
        "everyone reads the winner's"
    );
    let catalog = Catalog::open(&root).unwrap();
    assert_eq!(catalog.experiments().unwrap().0.len(), 1);
    let exp_dir = catalog.experiment_dir("race");
    let leftovers: Vec<_> = std::fs::read_dir(&exp_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "experiment.json and trials/, no temporary files: {leftovers:?}"
    );
}

fn small_trial(catalog: &Catalog, experiment: &str, steps: i64) -> cohort_catalog::TrialRef {
    let tracker = Tracker::open(catalog, experiment, None, TrackerOptions::default()).unwrap();
    for step in 0..steps {
        tracker
            .log_metrics(step, &[("loss", 1.0 / (1.0 + step as f64))])
            .unwrap();
    }
    let trial = tracker.trial().unwrap().clone();
    tracker.finish(TrialState::Completed).unwrap();
    trial
}

#[test]
fn racing_compactions_leave_a_valid_index_that_matches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open_or_create(dir.path()).unwrap();
    for _ in 0..20 {
        small_trial(&catalog, "compact", 50);
    }
    let exp = catalog.experiment("compact").unwrap();
    let always = LoadOptions {
        use_index: true,
        write: IndexWrite::Always,
    };
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let catalog = catalog.clone();
            let exp = exp.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    cohort_catalog::load(&catalog, &exp, always).unwrap();
                }
            })
        })
        .collect();
    // Meanwhile trials keep arriving.
    for _ in 0..5 {
        small_trial(&catalog, "compact", 50);
    }
    for handle in handles {
        handle.join().unwrap();
    }
    let indexed = cohort_catalog::load(&catalog, &exp, LoadOptions::default()).unwrap();
    assert_eq!(indexed.stats.index, "used");
    assert!(indexed.warnings.is_empty(), "{:?}", indexed.warnings);
    let scanned = cohort_catalog::load(
        &catalog,
        &exp,
        LoadOptions {
            use_index: false,
            write: IndexWrite::Never,
        },
    )
    .unwrap();
    assert_eq!(indexed.trials.len(), 25);
    for (a, b) in indexed.trials.iter().zip(&scanned.trials) {
        assert_eq!(a.metrics, b.metrics);
        assert_eq!(
            a.state.as_ref().map(|s| s.state),
            b.state.as_ref().map(|s| s.state)
        );
    }
}

#[test]
fn a_finished_trials_history_is_cached_and_the_cache_never_hides_new_points() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open_or_create(dir.path()).unwrap();
    let trial = small_trial(&catalog, "hist", 300);
    let exp = catalog.experiment("hist").unwrap();
    let loss = ["loss".to_owned()];
    let read = || {
        let mut warnings = Vec::new();
        let h = cohort_catalog::read::history(&trial.dir, Some(&loss), &mut warnings).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        h["loss"].clone()
    };
    let first = read();
    assert_eq!(first.len(), 300);
    let exp_dir = exp.dir.file_name().unwrap().to_string_lossy().into_owned();
    let cached = dir
        .path()
        .join("index")
        .join(format!("{exp_dir}.history"))
        .join(trial.dir.file_name().unwrap())
        .join("loss");
    assert!(cached.exists(), "no cache at {}", cached.display());
    assert_eq!(read(), first);
    // A damaged cache is passed over.
    let mut bytes = std::fs::read(&cached).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    std::fs::write(&cached, &bytes).unwrap();
    assert_eq!(read(), first);
    // New points (a resumed trial) are seen; the cache follows.
    let tracker = Tracker::attach(trial.clone(), TrackerOptions::default()).unwrap();
    tracker.log_metrics(300, &[("loss", 0.001)]).unwrap();
    tracker.close().unwrap();
    let after = read();
    assert_eq!((after.len(), after[300].value), (301, 0.001));
    assert_eq!(read(), after);
}

#[test]
fn a_query_with_an_index_reads_only_what_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open_or_create(dir.path()).unwrap();
    for _ in 0..20 {
        small_trial(&catalog, "fresh", 10);
    }
    let exp = catalog.experiment("fresh").unwrap();
    let first = cohort_catalog::load(&catalog, &exp, LoadOptions::default()).unwrap();
    assert!(first.stats.index_written);
    let again = cohort_catalog::load(&catalog, &exp, LoadOptions::default()).unwrap();
    assert_eq!(
        (
            again.stats.unchanged,
            again.stats.updated,
            again.stats.read_whole
        ),
        (20, 0, 0)
    );
    // One more point in trial 3, and a new trial.
    let trial = catalog.trial(&exp, 3).unwrap();
    let tracker = Tracker::attach(trial, TrackerOptions::default()).unwrap();
    tracker.log_metrics(10, &[("loss", 0.01)]).unwrap();
    tracker.close().unwrap();
    small_trial(&catalog, "fresh", 10);
    let later = cohort_catalog::load(&catalog, &exp, LoadOptions::default()).unwrap();
    assert_eq!(
        (
            later.stats.unchanged,
            later.stats.updated,
            later.stats.read_whole
        ),
        (19, 1, 1)
    );
    let t3 = later.trials.iter().find(|t| t.id == 3).unwrap();
    assert_eq!(
        (t3.metrics["loss"].count, t3.metrics["loss"].last),
        (11, 0.01)
    );
    // Finished writers' segments are not looked at again; the shared host segment always is,
    // so an append to it (which leaves the directory's time alone) is seen.
    let t5 = later.trials.iter().find(|t| t.id == 5).unwrap();
    assert!(t5.segments.iter().all(|m| m.closed), "{:?}", t5.segments);
    let host_log = |step: i64, value: f64| {
        let trial = catalog.trial(&exp, 5).unwrap();
        let options = TrackerOptions {
            host_segment: true,
            ..TrackerOptions::default()
        };
        let tracker = Tracker::attach(trial, options).unwrap();
        tracker.log_metrics(step, &[("loss", value)]).unwrap();
        tracker.close().unwrap();
    };
    host_log(20, 0.5);
    let always = LoadOptions {
        use_index: true,
        write: IndexWrite::Always,
    };
    let indexed = cohort_catalog::load(&catalog, &exp, always).unwrap();
    let t5 = indexed.trials.iter().find(|t| t.id == 5).unwrap();
    assert!(t5
        .segments
        .iter()
        .any(|m| !m.closed && m.file.starts_with("metrics-host-")));
    host_log(21, 0.25);
    let last = cohort_catalog::load(&catalog, &exp, LoadOptions::default()).unwrap();
    let t5 = last.trials.iter().find(|t| t.id == 5).unwrap();
    assert_eq!(
        (t5.metrics["loss"].last_step, t5.metrics["loss"].last),
        (21, 0.25)
    );
}

#[test]
fn torn_and_corrupt_logs_keep_every_committed_point_and_name_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open_or_create(dir.path()).unwrap();
    let tracker = Tracker::open(&catalog, "damaged", None, TrackerOptions::default()).unwrap();
    for step in 0..100 {
        tracker.log_metrics(step, &[("loss", step as f64)]).unwrap();
    }
    tracker.sync().unwrap();
    let trial = tracker.trial().unwrap().clone();
    let segment = trial.dir.join("metrics-0001.clog");
    let middle = std::fs::metadata(&segment).unwrap().len();
    for step in 100..200 {
        tracker.log_metrics(step, &[("loss", step as f64)]).unwrap();
    }
    tracker.finish(TrialState::Completed).unwrap();
    // A torn record at the end (a writer interrupted mid-write).
    let mut bytes = std::fs::read(&segment).unwrap();
    let head = bytes[..20].to_vec();
    bytes.extend_from_slice(&head);
    std::fs::write(&segment, &bytes).unwrap();
    let mut warnings = Vec::new();
    let summary = cohort_catalog::read::summarize(&trial.dir, None, &mut warnings)
        .unwrap()
        .unwrap();
    assert_eq!(summary.metrics["loss"].count, 200);
    assert!(
        warnings
            .iter()
            .any(|w| w.problem.contains("metrics-0001.clog") && w.problem.contains("cut short")),
        "{warnings:?}"
    );
    // A flipped byte inside the first half's records: those are skipped, the rest is read.
    let at = usize::try_from(middle).unwrap() - 40;
    bytes[at] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let mut warnings = Vec::new();
    let summary = cohort_catalog::read::summarize(&trial.dir, None, &mut warnings)
        .unwrap()
        .unwrap();
    let count = summary.metrics["loss"].count;
    assert!((100..200).contains(&count), "{count}");
    assert_eq!(summary.metrics["loss"].last, 199.0);
    assert!(
        warnings.iter().any(|w| w.problem.contains("damaged")),
        "{warnings:?}"
    );
}

#[test]
fn garbage_files_and_other_versions_are_warnings_and_the_rest_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open_or_create(dir.path()).unwrap();
    small_trial(&catalog, "good", 5);
    let bad = small_trial(&catalog, "good", 5);
    std::fs::write(
        bad.dir.join("trial.json"),
        br#"{"format":"cohort.trial","version":7}"#,
    )
    .unwrap();
    std::fs::write(bad.dir.join("state.json"), b"\xff\xfe not json").unwrap();
    let junk = dir.path().join("experiments").join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("experiment.json"), b"garbage").unwrap();
    std::fs::write(dir.path().join("experiments").join("stray-file"), b"x").unwrap();
    let (experiments, warnings) = catalog.experiments().unwrap();
    assert_eq!(experiments.len(), 1);
    let text = format!("{warnings:?}");
    assert!(
        text.contains("junk/experiment.json") && text.contains("not valid JSON"),
        "{text}"
    );
    let exp = catalog.experiment("good").unwrap();
    let loaded = cohort_catalog::load(&catalog, &exp, LoadOptions::default()).unwrap();
    assert_eq!(loaded.trials.len(), 1);
    let text = format!("{:?}", loaded.warnings);
    assert!(
        text.contains("000002/trial.json") && text.contains("version 7"),
        "{text}"
    );
    // A damaged index is ignored with a warning naming it.
    std::fs::create_dir_all(dir.path().join("index")).unwrap();
    std::fs::write(catalog.index_path(&exp), b"COHIDX03\xc1\xc1").unwrap();
    let loaded = cohort_catalog::load(&catalog, &exp, LoadOptions::default()).unwrap();
    assert_eq!(loaded.stats.index, "unreadable");
    assert!(format!("{:?}", loaded.warnings).contains("damaged index"));
}

#[test]
fn checkpoint_collection_keeps_the_policy_and_never_points_at_deleted_files() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open_or_create(dir.path().join("catalog")).unwrap();
    let tracker = Tracker::open(&catalog, "ckpt", None, TrackerOptions::default()).unwrap();
    let losses = [0.9, 0.4, 0.7, 0.2, 0.8, 0.6];
    for (i, loss) in losses.iter().enumerate() {
        let step = i64::try_from(i).unwrap() * 100;
        tracker.log_metrics(step, &[("val_loss", *loss)]).unwrap();
        let path = dir.path().join(format!("ckpt-{step}.pt"));
        std::fs::write(&path, vec![0u8; 1000]).unwrap();
        tracker.checkpoint(&path, step, BTreeMap::new()).unwrap();
    }
    let trial = tracker.trial().unwrap().clone();
    tracker.finish(TrialState::Completed).unwrap();
    let policy = cohort_catalog::ckpt::Policy {
        keep_latest: Some(1),
        keep_best: Some((2, "val_loss".into())),
        smaller_is_better: true,
    };
    for round in 0..2 {
        let summary = cohort_catalog::read::summarize(&trial.dir, None, &mut Vec::new())
            .unwrap()
            .unwrap();
        let report = cohort_catalog::ckpt::collect(
            &catalog,
            &[(trial.dir.clone(), summary)],
            &policy,
            false,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(report.deleted.len(), if round == 0 { 3 } else { 0 });
    }
    let summary = cohort_catalog::read::summarize(&trial.dir, None, &mut Vec::new())
        .unwrap()
        .unwrap();
    let kept: Vec<i64> = summary.checkpoints.iter().map(|c| c.step).collect();
    assert_eq!(kept, vec![100, 300, 500]);
    for step in [0, 200, 400] {
        assert!(!dir.path().join(format!("ckpt-{step}.pt")).exists());
    }
    for c in &summary.checkpoints {
        assert!(
            Path::new(&c.path).exists(),
            "{} is listed, so it exists",
            c.path
        );
    }
}

#[test]
fn a_full_disk_gives_an_error_naming_the_log_and_keeps_what_was_synced() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("skipped: cannot mount a small tmpfs here (needs root) to simulate a full disk");
        return;
    }
    let result = std::panic::catch_unwind(|| {
        let catalog = Catalog::open_or_create(mount.join("catalog")).unwrap();
        let tracker = Tracker::open(&catalog, "full", None, TrackerOptions::default()).unwrap();
        for step in 0..1000 {
            tracker.log_metrics(step, &[("loss", step as f64)]).unwrap();
        }
        tracker.sync().unwrap();
        let trial = tracker.trial().unwrap().clone();
        let start = Instant::now();
        let mut error = None;
        for step in 1000..10_000_000 {
            if let Err(e) = tracker.log_metrics(step, &[("loss", step as f64)]) {
                error = Some(e);
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no error on a full disk"
            );
        }
        let error = error.expect("the disk fills").to_string();
        assert!(
            error.contains("metrics-0001.clog") && error.contains("No space left"),
            "{error}"
        );
        drop(tracker);
        let summary = cohort_catalog::read::summarize(&trial.dir, None, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert!(summary.metrics["loss"].count >= 1000);
    });
    let _ = Command::new("umount").arg(&mount).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
