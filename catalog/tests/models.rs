//! The model registry on a real directory tree: registration from each checkpoint choice,
//! concurrent registrations and alias moves, alias history, export verification, and
//! checkpoint collection keeping what versions point at.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cohort_catalog::model::{self, CheckpointChoice, VersionRef};
use cohort_catalog::{Catalog, CatalogError, Tracker, TrackerOptions};
use cohort_proto::catalog::TrialState;

/// A trial of experiment `exp` that logged `val_loss` and `acc` at steps 0, 100, ... and
/// wrote a checkpoint file (its step repeated) at each; returns its number and the files.
fn trial_with_checkpoints(catalog: &Catalog, root: &Path, losses: &[f64]) -> (u64, Vec<PathBuf>) {
    let tracker = Tracker::open(catalog, "exp", None, TrackerOptions::default()).unwrap();
    tracker
        .log_hparams([("lr".to_owned(), serde_json::json!(0.01))].into())
        .unwrap();
    let mut files = Vec::new();
    for (i, loss) in losses.iter().enumerate() {
        let step = i64::try_from(i).unwrap() * 100;
        tracker
            .log_metrics(step, &[("val_loss", *loss), ("acc", 1.0 - loss)])
            .unwrap();
        let path = root.join(format!("ckpt-{}-{step}.pt", tracker.trial().unwrap().id));
        std::fs::write(&path, format!("weights at {step}\n").repeat(100)).unwrap();
        tracker.checkpoint(&path, step, BTreeMap::new()).unwrap();
        files.push(path);
    }
    let id = tracker.trial().unwrap().id;
    tracker.finish(TrialState::Completed).unwrap();
    (id, files)
}

fn setup() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open_or_create(dir.path().join("catalog")).unwrap();
    (dir, catalog)
}

/// Registers trial `trial` of `exp` as the next version of `name`, without a description.
fn register(
    catalog: &Catalog,
    name: &str,
    trial: u64,
    choice: &CheckpointChoice,
) -> Result<cohort_proto::catalog::ModelVersion, CatalogError> {
    model::register(catalog, name, "exp", trial, choice, None, &mut Vec::new())
}

fn sha256_of(path: &Path) -> String {
    model::hash_checkpoint(path).unwrap().sha256
}

#[test]
fn each_checkpoint_choice_registers_the_checkpoint_it_names_with_its_provenance() {
    let (dir, catalog) = setup();
    let (trial, files) = trial_with_checkpoints(&catalog, dir.path(), &[0.9, 0.2, 0.5, 0.7]);
    let register = |choice: &str| {
        model::register(
            &catalog,
            "mlp",
            "exp",
            trial,
            &choice.parse::<CheckpointChoice>().unwrap(),
            Some("first try".into()),
            &mut Vec::new(),
        )
    };
    let latest = register("latest").unwrap();
    assert_eq!((latest.number, latest.checkpoint.step), (1, 300));
    assert_eq!(latest.checkpoint.path, files[3].display().to_string());
    assert_eq!(latest.checkpoint.sha256, sha256_of(&files[3]));
    assert_eq!(latest.checkpoint.kind, "file");
    assert_eq!(
        latest.checkpoint.size,
        std::fs::metadata(&files[3]).unwrap().len()
    );
    assert_eq!(latest.hparams["lr"], serde_json::json!(0.01));
    assert_eq!(latest.metrics["val_loss"].value, 0.7);
    assert_eq!(latest.metrics["val_loss"].step, 300);
    assert_eq!(latest.source.experiment, "exp");
    assert_eq!(latest.source.trial, trial);
    assert_eq!(latest.source.state, Some(TrialState::Completed));
    assert_eq!(latest.description.as_deref(), Some("first try"));

    let best = register("best:val_loss").unwrap();
    assert_eq!((best.number, best.checkpoint.step), (2, 100));
    assert!((best.metrics["val_loss"].value - 0.2).abs() < 1e-12);
    let best_acc = register("best:acc:max").unwrap();
    assert_eq!((best_acc.number, best_acc.checkpoint.step), (3, 100));
    let worst = register("best:acc:min").unwrap();
    assert_eq!(worst.checkpoint.step, 0);
    let at_step = register("200").unwrap();
    assert_eq!((at_step.number, at_step.checkpoint.step), (5, 200));

    let missing = register("250").unwrap_err().to_string();
    assert!(
        missing.contains("no checkpoint at step 250") && missing.contains("0, 100, 200, 300"),
        "{missing}"
    );
    let unknown = register("best:bleu").unwrap_err().to_string();
    assert!(unknown.contains("\"bleu\""), "{unknown}");
    assert!("best:".parse::<CheckpointChoice>().is_err());
    assert!("newest".parse::<CheckpointChoice>().is_err());

    let read = model::model(&catalog, "mlp", &mut Vec::new()).unwrap();
    let numbers: Vec<u64> = read.versions.iter().map(|v| v.number).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        read.versions[1], best,
        "a version reads back as it was written"
    );
}

#[test]
fn a_trial_without_checkpoints_or_a_bad_name_records_nothing() {
    let (dir, catalog) = setup();
    let (trial, _) = trial_with_checkpoints(&catalog, dir.path(), &[]);
    let err = register(&catalog, "mlp", trial, &CheckpointChoice::Latest).unwrap_err();
    assert!(err.to_string().contains("recorded no checkpoint"), "{err}");
    let err = register(&catalog, "a@b", trial, &CheckpointChoice::Latest).unwrap_err();
    assert!(err.to_string().contains("'@'"), "{err}");
    let err = model::register(
        &catalog,
        "mlp",
        "exp",
        99,
        &CheckpointChoice::Latest,
        None,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, CatalogError::NoTrial { id: 99, .. }), "{err}");
    assert!(model::models(&catalog, &mut Vec::new()).unwrap().is_empty());
}

#[test]
fn registrations_at_once_get_distinct_versions() {
    let (dir, catalog) = setup();
    let (trial, _) = trial_with_checkpoints(&catalog, dir.path(), &[0.5, 0.4]);
    let numbers: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    register(&catalog, "racy", trial, &CheckpointChoice::Latest)
                        .unwrap()
                        .number
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=8).collect::<Vec<u64>>(), "{numbers:?}");
    let read = model::model(&catalog, "racy", &mut Vec::new()).unwrap();
    assert_eq!(read.versions.len(), 8);
}

#[test]
fn a_version_left_half_written_by_a_crash_is_ignored_and_its_number_reused() {
    let (dir, catalog) = setup();
    let (trial, _) = trial_with_checkpoints(&catalog, dir.path(), &[0.5]);
    register(&catalog, "m", trial, &CheckpointChoice::Latest).unwrap();
    // What a registration killed between writing its record and linking it leaves: a
    // temporary file with part of a record.
    let versions = catalog.model_dir("m").join("versions");
    std::fs::write(
        versions.join(".000002.json.tmp-4242-0123456789abcdef"),
        "{\"format\": \"cohort.model-version\", \"vers",
    )
    .unwrap();
    let mut warnings = Vec::new();
    let read = model::model(&catalog, "m", &mut warnings).unwrap();
    assert_eq!(read.versions.len(), 1);
    assert!(warnings.is_empty(), "{warnings:?}");
    let next = register(&catalog, "m", trial, &CheckpointChoice::Latest).unwrap();
    assert_eq!(next.number, 2);
}

#[test]
fn alias_moves_are_recorded_with_where_they_came_from() {
    let (dir, catalog) = setup();
    let (trial, _) = trial_with_checkpoints(&catalog, dir.path(), &[0.5, 0.4]);
    for _ in 0..3 {
        register(&catalog, "m", trial, &CheckpointChoice::Latest).unwrap();
    }
    let mv =
        |alias: &str, to: Option<u64>| model::move_alias(&catalog, "m", alias, to, &mut Vec::new());
    let first = mv("production", Some(1)).unwrap().unwrap();
    assert_eq!((first.from, first.to, first.sequence), (None, Some(1), 1));
    let second = mv("production", Some(3)).unwrap().unwrap();
    assert_eq!(
        (second.from, second.to, second.sequence),
        (Some(1), Some(3), 2)
    );
    assert!(
        mv("production", Some(3)).unwrap().is_none(),
        "no move, no record"
    );
    mv("staging", Some(2)).unwrap().unwrap();
    let read = model::model(&catalog, "m", &mut Vec::new()).unwrap();
    assert_eq!(
        read.current_aliases(),
        [("production".to_owned(), 3), ("staging".to_owned(), 2)].into()
    );
    assert_eq!(
        read.version(Some(&VersionRef::Alias("production".into())))
            .unwrap()
            .number,
        3
    );
    assert_eq!(read.aliases_of(3), vec!["production".to_owned()]);
    let removed = mv("staging", None).unwrap().unwrap();
    assert_eq!((removed.from, removed.to), (Some(2), None));
    let read = model::model(&catalog, "m", &mut Vec::new()).unwrap();
    assert!(!read.current_aliases().contains_key("staging"));
    assert_eq!(read.aliases["staging"].len(), 2, "removal is history too");
    let json = model::model_json(&read);
    assert_eq!(json["alias_history"].as_array().unwrap().len(), 4);
    assert_eq!(json["aliases"]["production"], 3);

    assert!(matches!(
        mv("production", Some(9)).unwrap_err(),
        CatalogError::NoModelVersion { .. }
    ));
    assert!(mv("staging", None).is_err(), "removing an unset alias");
    assert!(
        mv("7up", Some(1)).is_err(),
        "an alias that reads as a number"
    );
    assert!(mv("../x", Some(1)).is_err());
}

#[test]
fn alias_moves_at_once_form_one_chain() {
    let (dir, catalog) = setup();
    let (trial, _) = trial_with_checkpoints(&catalog, dir.path(), &[0.5]);
    for _ in 0..4 {
        register(&catalog, "m", trial, &CheckpointChoice::Latest).unwrap();
    }
    std::thread::scope(|scope| {
        for to in 1..=4u64 {
            let catalog = &catalog;
            scope.spawn(move || {
                for _ in 0..5 {
                    model::move_alias(catalog, "m", "prod", Some(to), &mut Vec::new()).unwrap();
                }
            });
        }
    });
    let read = model::model(&catalog, "m", &mut Vec::new()).unwrap();
    let moves = &read.aliases["prod"];
    assert!(moves.len() >= 4);
    assert_eq!(moves[0].from, None);
    for pair in moves.windows(2) {
        assert_eq!(
            pair[1].from, pair[0].to,
            "each move starts where the last ended"
        );
        assert_eq!(pair[1].sequence, pair[0].sequence + 1);
    }
}

#[test]
fn export_verifies_the_checkpoint_and_writes_a_model_card() {
    let (dir, catalog) = setup();
    let (trial, files) = trial_with_checkpoints(&catalog, dir.path(), &[0.5, 0.3]);
    let version = register(&catalog, "m", trial, &CheckpointChoice::Latest).unwrap();
    model::move_alias(&catalog, "m", "production", Some(1), &mut Vec::new()).unwrap();
    let read = model::model(&catalog, "m", &mut Vec::new()).unwrap();
    let out = dir.path().join("out");
    let exported = model::export(&read, &version, &out).unwrap();
    assert_eq!(
        std::fs::read(&exported.checkpoint).unwrap(),
        std::fs::read(&files[1]).unwrap()
    );
    assert_eq!(exported.sha256, version.checkpoint.sha256);
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&exported.card_json).unwrap()).unwrap();
    assert_eq!(card["model"], "m");
    assert_eq!(card["aliases"], serde_json::json!(["production"]));
    assert_eq!(card["registered_version"]["source"]["trial"], trial);
    let markdown = std::fs::read_to_string(&exported.card_markdown).unwrap();
    assert!(markdown.starts_with("# m version 1"), "{markdown}");
    assert!(markdown.contains("| lr | 0.01 |"), "{markdown}");
    assert!(markdown.contains(&version.checkpoint.sha256), "{markdown}");

    let again = model::export(&read, &version, &out)
        .unwrap_err()
        .to_string();
    assert!(again.contains("exists"), "{again}");

    // One byte changed: the export names both sums and leaves nothing behind.
    let mut bytes = std::fs::read(&files[1]).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&files[1], &bytes).unwrap();
    let other = dir.path().join("other");
    let err = model::export(&read, &version, &other).unwrap_err();
    let CatalogError::Checksum {
        recorded, found, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(*recorded, version.checkpoint.sha256);
    assert_eq!(*found, sha256_of(&files[1]));
    let text = err.to_string();
    assert!(
        text.contains(recorded.as_str()) && text.contains(found.as_str()),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(&other).unwrap().count(),
        0,
        "nothing left in {other:?}"
    );

    // Deleted by hand: the version says so rather than failing to show.
    std::fs::remove_file(&files[1]).unwrap();
    let read = model::model(&catalog, "m", &mut Vec::new()).unwrap();
    assert!(!model::checkpoint_present(&read.versions[0]));
    assert_eq!(
        model::version_json(&read, &read.versions[0])["checkpoint_present"],
        false
    );
    let err = model::export(&read, &read.versions[0], &dir.path().join("third")).unwrap_err();
    assert!(
        matches!(err, CatalogError::MissingCheckpoint { number: 1, .. }),
        "{err}"
    );
}

#[test]
fn a_directory_checkpoint_is_hashed_over_its_files_and_copied_whole() {
    let (dir, catalog) = setup();
    let tracker = Tracker::open(&catalog, "exp", None, TrackerOptions::default()).unwrap();
    let ckpt = dir.path().join("ckpt-dir");
    std::fs::create_dir_all(ckpt.join("shards")).unwrap();
    std::fs::write(ckpt.join("config.json"), "{}\n").unwrap();
    std::fs::write(ckpt.join("shards/0.bin"), vec![7u8; 5000]).unwrap();
    std::fs::write(ckpt.join("shards/1.bin"), vec![9u8; 3000]).unwrap();
    tracker.checkpoint(&ckpt, 10, BTreeMap::new()).unwrap();
    let trial = tracker.trial().unwrap().id;
    tracker.finish(TrialState::Completed).unwrap();
    let version = register(&catalog, "sharded", trial, &CheckpointChoice::Latest).unwrap();
    assert_eq!(version.checkpoint.kind, "directory");
    assert_eq!(version.checkpoint.size, 8003);
    let read = model::model(&catalog, "sharded", &mut Vec::new()).unwrap();
    let out = dir.path().join("out");
    let exported = model::export(&read, &version, &out).unwrap();
    assert_eq!(
        std::fs::read(exported.checkpoint.join("shards/1.bin")).unwrap(),
        vec![9u8; 3000]
    );
    assert_eq!(sha256_of(&exported.checkpoint), version.checkpoint.sha256);
    // A file added to the checkpoint's directory changes its sum.
    std::fs::write(ckpt.join("extra"), "x").unwrap();
    let err = model::export(&read, &version, &dir.path().join("again")).unwrap_err();
    assert!(matches!(err, CatalogError::Checksum { .. }), "{err}");
}

#[test]
fn collection_keeps_the_checkpoints_versions_point_at() {
    let (dir, catalog) = setup();
    let (trial, files) = trial_with_checkpoints(&catalog, dir.path(), &[0.9, 0.4, 0.7, 0.2]);
    // The worst checkpoint (step 0) is registered; the policy keeps only the latest.
    register(&catalog, "m", trial, &CheckpointChoice::Step(0)).unwrap();
    let experiment = catalog.experiment("exp").unwrap();
    let trial_dir = experiment.trial_dir(trial);
    let summary = cohort_catalog::read::summarize(&trial_dir, None, &mut Vec::new())
        .unwrap()
        .unwrap();
    let policy = cohort_catalog::ckpt::Policy {
        keep_latest: Some(1),
        ..Default::default()
    };
    let trials = [(trial_dir.clone(), summary)];
    let dry =
        cohort_catalog::ckpt::collect(&catalog, &trials, &policy, true, &mut Vec::new()).unwrap();
    assert_eq!(dry.deleted.len(), 2);
    assert!(
        files.iter().all(|f| f.exists()),
        "a dry run deletes nothing"
    );
    let report =
        cohort_catalog::ckpt::collect(&catalog, &trials, &policy, false, &mut Vec::new()).unwrap();
    assert_eq!(report.kept, 1);
    assert_eq!(
        report.registered,
        vec![(
            trial,
            files[0].display().to_string(),
            vec!["m@1".to_owned()]
        )]
    );
    let deleted: Vec<&str> = report.deleted.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(
        deleted,
        vec![files[1].to_str().unwrap(), files[2].to_str().unwrap()]
    );
    assert!(files[0].exists() && files[3].exists());
    assert!(!files[1].exists() && !files[2].exists());
    // Collected again: the registered one is still kept.
    let summary = cohort_catalog::read::summarize(&trial_dir, None, &mut Vec::new())
        .unwrap()
        .unwrap();
    let report = cohort_catalog::ckpt::collect(
        &catalog,
        &[(trial_dir, summary)],
        &policy,
        false,
        &mut Vec::new(),
    )
    .unwrap();
    assert!(report.deleted.is_empty());
    assert_eq!(report.registered.len(), 1);
    assert!(files[0].exists());
}

#[test]
fn collection_refuses_to_run_when_a_version_cannot_be_read() {
    let (dir, catalog) = setup();
    let (trial, files) = trial_with_checkpoints(&catalog, dir.path(), &[0.9, 0.4]);
    register(&catalog, "m", trial, &CheckpointChoice::Step(0)).unwrap();
    std::fs::write(
        catalog.model_dir("m").join("versions/000002.json"),
        "{ damaged",
    )
    .unwrap();
    let experiment = catalog.experiment("exp").unwrap();
    let trial_dir = experiment.trial_dir(trial);
    let summary = cohort_catalog::read::summarize(&trial_dir, None, &mut Vec::new())
        .unwrap()
        .unwrap();
    let policy = cohort_catalog::ckpt::Policy {
        keep_latest: Some(1),
        ..Default::default()
    };
    let err = cohort_catalog::ckpt::collect(
        &catalog,
        &[(trial_dir, summary)],
        &policy,
        false,
        &mut Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("000002.json") && err.contains("every model version"),
        "{err}"
    );
    assert!(files.iter().all(|f| f.exists()));
}

#[test]
fn collection_runs_past_what_does_not_say_what_to_keep() {
    let (dir, catalog) = setup();
    let (trial, files) = trial_with_checkpoints(&catalog, dir.path(), &[0.9, 0.4]);
    register(&catalog, "m", trial, &CheckpointChoice::Step(0)).unwrap();
    // A first registration of another name killed before its model.json, and a damaged
    // alias move: neither says what to keep, and neither stops collection.
    std::fs::create_dir_all(catalog.model_dir("half")).unwrap();
    let aliases = catalog.model_dir("m").join("aliases/production");
    std::fs::create_dir_all(&aliases).unwrap();
    std::fs::write(aliases.join("000001.json"), "{ torn").unwrap();
    let mut warnings = Vec::new();
    let listed = model::models(&catalog, &mut warnings).unwrap();
    assert_eq!(listed.len(), 1, "the half-made model is skipped");
    assert_eq!(warnings.len(), 1, "the torn move is named: {warnings:?}");
    let experiment = catalog.experiment("exp").unwrap();
    let trial_dir = experiment.trial_dir(trial);
    let summary = cohort_catalog::read::summarize(&trial_dir, None, &mut Vec::new())
        .unwrap()
        .unwrap();
    let policy = cohort_catalog::ckpt::Policy {
        keep_latest: Some(1),
        ..Default::default()
    };
    let report = cohort_catalog::ckpt::collect(
        &catalog,
        &[(trial_dir, summary)],
        &policy,
        false,
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(report.registered.len(), 1);
    assert!(files[0].exists() && files[1].exists());
}

#[test]
fn a_checkpoint_named_like_the_model_card_is_not_exported_over_it() {
    let (dir, catalog) = setup();
    let tracker = Tracker::open(&catalog, "exp", None, TrackerOptions::default()).unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let card_named = sub.join("model-card.json");
    std::fs::write(&card_named, "weights").unwrap();
    tracker.checkpoint(&card_named, 1, BTreeMap::new()).unwrap();
    let trial = tracker.trial().unwrap().id;
    tracker.finish(TrialState::Completed).unwrap();
    let version = register(&catalog, "m", trial, &CheckpointChoice::Latest).unwrap();
    let read = model::model(&catalog, "m", &mut Vec::new()).unwrap();
    let err = model::export(&read, &version, &dir.path().join("out"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("name of the model card"), "{err}");
}
