//! The index: an experiment's trial summaries compacted into one file, so a query reads one
//! file plus what changed since instead of every log.
//!
//! It is a cache: built from the trials' files, replaced whole by rename (two compactions
//! racing both leave a valid index, the later one wins), ignored with a warning when damaged
//! or of another version, and deleting it loses nothing. A query checks every indexed trial
//! with two `stat`s (its directory and its log segments) and reads only the bytes written
//! since; it rewrites the index itself when much was new.

use std::collections::HashMap;
use std::path::PathBuf;

use cohort_proto::catalog::{IndexDoc, TrialSummary, CATALOG_VERSION};
use rayon::prelude::*;

use crate::catalog::{strip_path, Catalog, Experiment};
use crate::error::{CatalogError, Warning};
use crate::fsutil;
use crate::read::{is_unchanged, is_unchanged_at, summarize_changed};

/// First bytes of an index file; the rest is MessagePack. The digits change with the encoding.
const MAGIC: &[u8; 8] = b"COHIDX03";

/// When a query writes the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexWrite {
    /// Never (read-only use).
    Never,
    /// When much was read from the logs: no index and at least 16 trials, or at least 64
    /// trials (or a tenth of them) re-read. Failure to write (a read-only catalog) is not an
    /// error.
    Auto,
    /// Always (`cohort index`).
    Always,
}

/// How to load an experiment's trials.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Whether to start from the index (false: read every log from the start).
    pub use_index: bool,
    /// When to write the index back.
    pub write: IndexWrite,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            use_index: true,
            write: IndexWrite::Auto,
        }
    }
}

/// What a load did; `cohort ... --json` reports it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadStats {
    /// Trials loaded.
    pub trials: usize,
    /// Trials taken from the index unchanged.
    pub unchanged: usize,
    /// Indexed trials whose new data was read.
    pub updated: usize,
    /// Trials read from their files alone.
    pub read_whole: usize,
    /// The index: `used`, `none`, `unreadable` or `not used`.
    pub index: &'static str,
    /// Whether this load wrote the index.
    pub index_written: bool,
    /// The shared filesystem the catalog is on, if it is one (its clients cache attributes,
    /// so what other nodes wrote in the last seconds may not show yet).
    pub shared_fs: Option<&'static str>,
}

/// An experiment's trials, by id.
#[derive(Debug)]
pub struct Loaded {
    /// The trials.
    pub trials: Vec<TrialSummary>,
    /// Files skipped or damaged.
    pub warnings: Vec<Warning>,
    /// What was read.
    pub stats: LoadStats,
}

/// Trials per chunk of the index file.
const CHUNK: usize = 256;

fn read_index(
    path: &std::path::Path,
    experiment: &str,
) -> Result<Option<Vec<TrialSummary>>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let Some(body) = bytes.strip_prefix(MAGIC) else {
        if bytes.starts_with(b"COHIDX") {
            return Err("an index in another release's encoding".into());
        }
        return Err("not a Cohort index (bad magic)".into());
    };
    let mut reader = body;
    let doc: IndexDoc =
        rmp_serde::decode::from_read(&mut reader).map_err(|e| format!("damaged index ({e})"))?;
    // The header and every chunk carry a CRC-32C: a flipped bit is a damaged index, never a
    // wrong answer.
    let header = &body[..body.len() - reader.len()];
    let Some((crc, rest)) = reader.split_first_chunk::<4>() else {
        return Err("damaged index (truncated)".into());
    };
    if crc32c::crc32c(header) != u32::from_le_bytes(*crc) {
        return Err("damaged index (header checksum)".into());
    }
    reader = rest;
    if doc.format != "cohort.index" || doc.version != CATALOG_VERSION {
        return Err(format!(
            "index format {:?} version {}, expected cohort.index version {CATALOG_VERSION}",
            doc.format, doc.version
        ));
    }
    if doc.experiment != experiment {
        return Err(format!("indexes experiment {:?}", doc.experiment));
    }
    let mut chunks = Vec::new();
    for _ in 0..doc.chunks {
        let Some((len, rest)) = reader.split_first_chunk::<4>() else {
            return Err("damaged index (truncated)".into());
        };
        let Some((crc, rest)) = rest.split_first_chunk::<4>() else {
            return Err("damaged index (truncated)".into());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err("damaged index (truncated)".into());
        }
        let chunk = &rest[..len];
        if crc32c::crc32c(chunk) != u32::from_le_bytes(*crc) {
            return Err("damaged index (chunk checksum)".into());
        }
        chunks.push(chunk);
        reader = &rest[len..];
    }
    let decoded: Result<Vec<Vec<TrialSummary>>, String> = chunks
        .par_iter()
        .map(|chunk| rmp_serde::from_slice(chunk).map_err(|e| format!("damaged index ({e})")))
        .collect();
    Ok(Some(decoded?.into_iter().flatten().collect()))
}

/// Writes the index of `experiment` from `trials`; returns its path.
pub fn write_index(
    catalog: &Catalog,
    experiment: &Experiment,
    trials: &[TrialSummary],
) -> Result<PathBuf, CatalogError> {
    let path = catalog.index_path(experiment);
    if let Some(dir) = path.parent() {
        fsutil::mkdir_if_absent(dir)?;
    }
    let encode_error = |e: rmp_serde::encode::Error| CatalogError::Malformed {
        path: path.clone(),
        problem: format!("cannot encode the index: {e}"),
    };
    let doc = IndexDoc {
        format: "cohort.index".into(),
        version: CATALOG_VERSION,
        experiment: experiment.record.name.clone(),
        built: fsutil::now(),
        chunks: u32::try_from(trials.len().div_ceil(CHUNK)).unwrap_or(u32::MAX),
    };
    let mut bytes = MAGIC.to_vec();
    let mut header = Vec::new();
    rmp_serde::encode::write_named(&mut header, &doc).map_err(encode_error)?;
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&crc32c::crc32c(&header).to_le_bytes());
    // The trial record's hyperparameters are also in the summary's (updated by the log):
    // kept once.
    let chunks: Result<Vec<Vec<u8>>, _> = trials
        .par_chunks(CHUNK)
        .map(|chunk| {
            let lean: Vec<TrialSummary> = chunk
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    t.trial.hparams.clear();
                    t
                })
                .collect();
            rmp_serde::to_vec_named(&lean)
        })
        .collect();
    for chunk in chunks.map_err(encode_error)? {
        bytes.extend_from_slice(&u32::try_from(chunk.len()).unwrap_or(u32::MAX).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&chunk).to_le_bytes());
        bytes.extend_from_slice(&chunk);
    }
    fsutil::replace(&path, &bytes)?;
    Ok(path)
}

/// Loads every trial of `experiment`: from the index plus what is newer, or from the files.
pub fn load(
    catalog: &Catalog,
    experiment: &Experiment,
    options: LoadOptions,
) -> Result<Loaded, CatalogError> {
    load_with_progress(catalog, experiment, options, &|_, _| {})
}

/// [`load`], telling `progress` (trials done, trials in all) as trials are read: about two
/// hundred times over a load, from the reading threads.
///
/// # Errors
///
/// As [`load`].
pub fn load_with_progress(
    catalog: &Catalog,
    experiment: &Experiment,
    options: LoadOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Loaded, CatalogError> {
    let mut warnings = Vec::new();
    let mut stats = LoadStats {
        shared_fs: fsutil::shared_fs_kind(catalog.root()),
        ..LoadStats::default()
    };
    let index_path = catalog.index_path(experiment);
    let index = if options.use_index {
        match read_index(&index_path, &experiment.record.name) {
            Ok(Some(trials)) => {
                stats.index = "used";
                Some(trials)
            }
            Ok(None) => {
                stats.index = "none";
                None
            }
            Err(problem) => {
                stats.index = "unreadable";
                warnings.push(Warning {
                    path: index_path.clone(),
                    problem: format!("{problem}; ignored (`cohort index` rebuilds it)"),
                });
                None
            }
        }
    } else {
        stats.index = "not used";
        None
    };
    // Summaries are large: they stay where the index decoded them, found by position.
    let index = index.unwrap_or_default();
    let previous: HashMap<&str, usize> = index
        .iter()
        .enumerate()
        .map(|(i, t)| (t.dir.as_str(), i))
        .collect();
    let trials_dir = experiment.trials_dir();
    let mut dirs: Vec<(String, Option<usize>)> = match std::fs::read_dir(&trials_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .map(|name| {
                let prev = previous.get(name.as_str()).copied();
                (name, prev)
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(CatalogError::Io {
                path: trials_dir,
                what: "cannot list",
                source,
            })
        }
    };
    dirs.sort_by(|a, b| a.0.cmp(&b.0));
    let trials_fd = std::fs::File::open(&trials_dir).ok();

    enum Found {
        /// The index's summary at this position holds.
        Unchanged(usize),
        /// Read again: new data of an indexed trial, or a trial the index does not know.
        Updated(TrialSummary),
        Whole(TrialSummary),
        Skipped,
    }
    let total = dirs.len();
    let every = (total / 200).max(64);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(Found, Vec<Warning>)> = dirs
        .into_par_iter()
        .map(|(name, prev)| {
            let read = || {
                let dir = trials_dir.join(&name);
                let mut warnings = Vec::new();
                let prev_summary = prev.map(|i| &index[i]);
                let unchanged = prev_summary.is_some_and(|p| match &trials_fd {
                    Some(fd) => is_unchanged_at(fd, &name, p),
                    None => is_unchanged(&dir, p),
                });
                if let (true, Some(i)) = (unchanged, prev) {
                    return (Found::Unchanged(i), warnings);
                }
                let found = match summarize_changed(&dir, prev_summary, &mut warnings) {
                    Ok(Some(summary)) if prev.is_some() => Found::Updated(summary),
                    Ok(Some(summary)) => Found::Whole(summary),
                    Ok(None) => Found::Skipped,
                    Err(e) => {
                        warnings.push(Warning {
                            path: dir.clone(),
                            problem: format!("{}; skipped", strip_path(&e, &dir)),
                        });
                        Found::Skipped
                    }
                };
                (found, warnings)
            };
            let read = read();
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n % every == 0 || n == total {
                progress(n, total);
            }
            read
        })
        .collect();
    drop(previous);
    let mut index: Vec<Option<TrialSummary>> = index.into_iter().map(Some).collect();
    let mut trials = Vec::with_capacity(results.len());
    for (found, mut w) in results {
        warnings.append(&mut w);
        let summary = match found {
            Found::Unchanged(i) => {
                stats.unchanged += 1;
                index[i].take()
            }
            Found::Updated(summary) => {
                stats.updated += 1;
                Some(summary)
            }
            Found::Whole(summary) => {
                stats.read_whole += 1;
                Some(summary)
            }
            Found::Skipped => None,
        };
        trials.extend(summary);
    }
    trials.sort_by_key(|t| t.id);
    stats.trials = trials.len();
    let changed = stats.updated + stats.read_whole;
    let worth = match options.write {
        IndexWrite::Never => false,
        IndexWrite::Always => true,
        IndexWrite::Auto => {
            (stats.index != "used" && trials.len() >= 16 && options.use_index)
                || changed >= 64
                || (changed > 0 && changed * 10 >= trials.len() && trials.len() >= 16)
        }
    };
    if worth {
        match write_index(catalog, experiment, &trials) {
            Ok(_) => stats.index_written = true,
            Err(e) if options.write == IndexWrite::Always => return Err(e),
            // A catalog this user cannot write (another user's) is still readable.
            Err(_) => {}
        }
    }
    Ok(Loaded {
        trials,
        warnings,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use cohort_proto::catalog::TrialState;
    use serde_json::json;

    use super::*;
    use crate::catalog::NewExperiment;
    use crate::tracker::{Tracker, TrackerOptions};

    const NAME: &str = "index-test";

    fn no_index() -> LoadOptions {
        LoadOptions {
            use_index: false,
            write: IndexWrite::Never,
        }
    }

    fn read_only() -> LoadOptions {
        LoadOptions {
            use_index: true,
            write: IndexWrite::Never,
        }
    }

    /// `loss` of trial `trial` at `step`: trial / (step + 1).
    fn loss(trial: u64, step: i64) -> f64 {
        trial as f64 / (step + 1) as f64
    }

    /// Adds a trial with `lr` = trial / 10 and `loss` at steps 0..10, finished as completed.
    fn add_trial(catalog: &Catalog, exp: &Experiment) -> u64 {
        let id = exp.trial_count() as u64 + 1;
        let hparams = BTreeMap::from([("lr".to_owned(), json!(id as f64 / 10.0))]);
        let trial = catalog
            .create_trial(exp, hparams, Vec::new(), Some(TrialState::Running))
            .unwrap();
        assert_eq!(trial.id, id);
        let tracker = Tracker::attach(
            trial,
            TrackerOptions {
                owns_state: true,
                ..TrackerOptions::default()
            },
        )
        .unwrap();
        for step in 0..10 {
            tracker
                .log_metrics(step, &[("loss", loss(id, step))])
                .unwrap();
        }
        tracker
            .log_hparams(BTreeMap::from([("seed".to_owned(), json!(id))]))
            .unwrap();
        tracker.finish(TrialState::Completed).unwrap();
        id
    }

    fn experiment(trials: usize) -> (tempfile::TempDir, Catalog, Experiment) {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open_or_create(dir.path().join("catalog")).unwrap();
        let (exp, _) = catalog
            .create_experiment(&NewExperiment {
                name: NAME.into(),
                ..NewExperiment::default()
            })
            .unwrap();
        for _ in 0..trials {
            add_trial(&catalog, &exp);
        }
        (dir, catalog, exp)
    }

    /// The summaries as a query sees them. The index keeps a trial's hyperparameters once,
    /// in the summary's `hparams` (which queries read), not again in its copy of the trial
    /// record, so that copy is left out of the comparison.
    fn comparable(trials: &[TrialSummary]) -> Vec<TrialSummary> {
        trials
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t.trial.hparams.clear();
                t
            })
            .collect()
    }

    /// Checks the summaries against what `add_trial` wrote, computed by hand.
    fn check_written(trials: &[TrialSummary], ids: &[u64]) {
        assert_eq!(trials.iter().map(|t| t.id).collect::<Vec<_>>(), ids);
        for t in trials {
            let id = t.id;
            let m = &t.metrics["loss"];
            assert_eq!(m.count, 10, "trial {id}");
            assert_eq!(m.last_step, 9, "trial {id}");
            assert_eq!(m.last, id as f64 / 10.0, "trial {id}");
            assert_eq!(m.min, Some(id as f64 / 10.0), "trial {id}");
            assert_eq!(m.max, Some(id as f64), "trial {id}");
            assert_eq!(t.hparams["lr"], json!(id as f64 / 10.0), "trial {id}");
            assert_eq!(t.hparams["seed"], json!(id), "trial {id}");
            assert_eq!(
                t.state.as_ref().map(|s| s.state),
                Some(TrialState::Completed)
            );
        }
    }

    fn assert_same(with: &Loaded, without: &Loaded) {
        assert_eq!(comparable(&with.trials), comparable(&without.trials));
    }

    fn assert_index_ignored(
        loaded: &Loaded,
        baseline: &Loaded,
        index: &std::path::Path,
        what: &str,
    ) {
        assert_eq!(loaded.stats.index, "unreadable", "{what}");
        assert!(
            loaded.warnings.iter().any(|w| w.path == index),
            "{what}: no warning names the index: {:?}",
            loaded.warnings
        );
        assert_eq!(
            comparable(&loaded.trials),
            comparable(&baseline.trials),
            "{what}"
        );
    }

    #[test]
    fn without_an_index_every_trial_is_read_from_its_files() {
        let (_dir, catalog, exp) = experiment(3);
        let loaded = load(&catalog, &exp, read_only()).unwrap();
        assert_eq!(loaded.stats.index, "none");
        assert_eq!(loaded.stats.read_whole, 3);
        assert!(!loaded.stats.index_written);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        check_written(&loaded.trials, &[1, 2, 3]);
        assert!(!catalog.index_path(&exp).exists());
    }

    #[test]
    fn an_index_written_then_loaded_gives_the_same_summaries_as_no_index() {
        let (_dir, catalog, exp) = experiment(3);
        let baseline = load(&catalog, &exp, no_index()).unwrap();
        check_written(&baseline.trials, &[1, 2, 3]);
        let path = write_index(&catalog, &exp, &baseline.trials).unwrap();
        assert_eq!(path, catalog.index_path(&exp));

        let loaded = load(&catalog, &exp, read_only()).unwrap();
        assert_eq!(loaded.stats.index, "used");
        assert_eq!(loaded.stats.unchanged, 3);
        assert_eq!(loaded.stats.read_whole + loaded.stats.updated, 0);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_same(&loaded, &baseline);
        check_written(&loaded.trials, &[1, 2, 3]);
    }

    #[test]
    fn an_index_of_no_trials_round_trips() {
        let (_dir, catalog, exp) = experiment(0);
        write_index(&catalog, &exp, &[]).unwrap();
        let loaded = load(&catalog, &exp, read_only()).unwrap();
        assert_eq!(loaded.stats.index, "used");
        assert!(loaded.trials.is_empty());
    }

    #[test]
    fn data_written_after_the_index_is_read_on_top_of_it() {
        let (_dir, catalog, exp) = experiment(3);
        let first = load(&catalog, &exp, no_index()).unwrap();
        write_index(&catalog, &exp, &first.trials).unwrap();

        // Trial 2 runs again (a new segment, steps 10..15), and a trial 4 appears.
        let trial = catalog.trial(&exp, 2).unwrap();
        let tracker = Tracker::attach(trial, TrackerOptions::default()).unwrap();
        for step in 10..15 {
            tracker.log_metrics(step, &[("loss", 0.01)]).unwrap();
        }
        tracker.close().unwrap();
        add_trial(&catalog, &exp);

        let loaded = load(&catalog, &exp, read_only()).unwrap();
        let baseline = load(&catalog, &exp, no_index()).unwrap();
        assert_eq!(loaded.stats.index, "used");
        assert_eq!(loaded.stats.unchanged, 2);
        assert_eq!(loaded.stats.updated, 1);
        assert_eq!(loaded.stats.read_whole, 1);
        assert_same(&loaded, &baseline);
        let two = &loaded.trials[1].metrics["loss"];
        assert_eq!((two.count, two.last_step, two.last), (15, 14, 0.01));
        assert_eq!(two.min, Some(0.01));
        assert_eq!(two.max, Some(2.0));
        check_written(&loaded.trials[3..], &[4]);
    }

    #[test]
    fn a_trial_deleted_after_the_index_is_not_answered_from_it() {
        let (_dir, catalog, exp) = experiment(3);
        let first = load(&catalog, &exp, no_index()).unwrap();
        write_index(&catalog, &exp, &first.trials).unwrap();
        std::fs::remove_dir_all(exp.trial_dir(2)).unwrap();

        let loaded = load(&catalog, &exp, read_only()).unwrap();
        let baseline = load(&catalog, &exp, no_index()).unwrap();
        assert_same(&loaded, &baseline);
        check_written(&loaded.trials, &[1, 3]);
    }

    #[test]
    fn a_truncated_index_is_ignored_with_a_warning() {
        let (_dir, catalog, exp) = experiment(3);
        let baseline = load(&catalog, &exp, no_index()).unwrap();
        let path = write_index(&catalog, &exp, &baseline.trials).unwrap();
        let whole = std::fs::read(&path).unwrap();
        let step = (whole.len() / 150).max(1);
        let mut lengths: Vec<usize> = (0..whole.len()).step_by(step).collect();
        lengths.extend([1, 7, 8, 9, whole.len() - 1]);
        for len in lengths {
            std::fs::write(&path, &whole[..len]).unwrap();
            let loaded = load(&catalog, &exp, read_only()).unwrap();
            assert_index_ignored(&loaded, &baseline, &path, &format!("cut at {len}"));
        }
    }

    #[test]
    fn an_index_with_damaged_bytes_is_ignored_with_a_warning() {
        let (_dir, catalog, exp) = experiment(2);
        let baseline = load(&catalog, &exp, no_index()).unwrap();
        let path = write_index(&catalog, &exp, &baseline.trials).unwrap();
        let whole = std::fs::read(&path).unwrap();
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut other_magic = whole.clone();
        other_magic[..8].copy_from_slice(b"NOTINDEX");
        cases.push(("bad magic", other_magic));
        let mut older = whole.clone();
        older[..8].copy_from_slice(b"COHIDX01");
        cases.push(("another encoding", older));
        let mut garbage = MAGIC.to_vec();
        garbage.extend((0..4096u32).map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[3]));
        cases.push(("garbage after the magic", garbage));
        cases.push(("text", b"{\"format\": \"cohort.index\"}".to_vec()));
        for (what, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let loaded = load(&catalog, &exp, read_only()).unwrap();
            assert_index_ignored(&loaded, &baseline, &path, what);
        }
    }

    /// Any one flipped bit of the index, wherever it falls (a number inside a summary among
    /// them), leaves the answer equal to the answer without the index.
    #[test]
    fn no_single_flipped_bit_changes_an_answer() {
        let (_dir, catalog, exp) = experiment(2);
        let baseline = load(&catalog, &exp, no_index()).unwrap();
        let path = write_index(&catalog, &exp, &baseline.trials).unwrap();
        let whole = std::fs::read(&path).unwrap();
        let mut ignored = 0;
        for byte in MAGIC.len()..whole.len() {
            let mut damaged = whole.clone();
            damaged[byte] ^= 1 << (byte % 8);
            std::fs::write(&path, &damaged).unwrap();
            let loaded = load(&catalog, &exp, read_only()).unwrap();
            assert_eq!(
                comparable(&loaded.trials),
                comparable(&baseline.trials),
                "bit {} of byte {byte} flipped",
                byte % 8
            );
            if loaded.stats.index == "unreadable" {
                ignored += 1;
            }
        }
        // (A flip in the build time is harmless and still reads.)
        assert!(
            ignored * 10 > (whole.len() - MAGIC.len()) * 9,
            "{ignored} of {}",
            whole.len()
        );
    }

    #[test]
    fn an_index_of_another_version_or_experiment_is_ignored() {
        let (_dir, catalog, exp) = experiment(2);
        let baseline = load(&catalog, &exp, no_index()).unwrap();
        let path = catalog.index_path(&exp);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        for (what, format, version, experiment) in [
            ("a later version", "cohort.index", CATALOG_VERSION + 1, NAME),
            ("another format", "cohort.other", CATALOG_VERSION, NAME),
            (
                "another experiment",
                "cohort.index",
                CATALOG_VERSION,
                "other",
            ),
        ] {
            let mut bytes = MAGIC.to_vec();
            let doc = IndexDoc {
                format: format.into(),
                version,
                experiment: experiment.into(),
                built: 0.0,
                chunks: 0,
            };
            let mut header = Vec::new();
            rmp_serde::encode::write_named(&mut header, &doc).unwrap();
            bytes.extend_from_slice(&header);
            bytes.extend_from_slice(&crc32c::crc32c(&header).to_le_bytes());
            std::fs::write(&path, &bytes).unwrap();
            let loaded = load(&catalog, &exp, read_only()).unwrap();
            assert_index_ignored(&loaded, &baseline, &path, what);
        }
    }

    #[test]
    fn an_index_that_is_not_used_is_not_read() {
        let (_dir, catalog, exp) = experiment(2);
        let path = catalog.index_path(&exp);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"damaged").unwrap();
        let loaded = load(&catalog, &exp, no_index()).unwrap();
        assert_eq!(loaded.stats.index, "not used");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        check_written(&loaded.trials, &[1, 2]);
    }

    #[test]
    fn a_damaged_index_is_rebuilt_by_a_load_that_always_writes() {
        let (_dir, catalog, exp) = experiment(2);
        let path = catalog.index_path(&exp);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, [&MAGIC[..], b" torn"].concat()).unwrap();
        let rebuilt = load(
            &catalog,
            &exp,
            LoadOptions {
                use_index: true,
                write: IndexWrite::Always,
            },
        )
        .unwrap();
        assert_eq!(rebuilt.stats.index, "unreadable");
        assert!(rebuilt.stats.index_written);
        let loaded = load(&catalog, &exp, read_only()).unwrap();
        assert_eq!(loaded.stats.index, "used");
        assert_eq!(loaded.stats.unchanged, 2);
        assert_same(&loaded, &rebuilt);
        check_written(&loaded.trials, &[1, 2]);
    }

    #[test]
    fn reading_many_trials_without_an_index_writes_one() {
        let (_dir, catalog, exp) = experiment(16);
        let first = load(&catalog, &exp, LoadOptions::default()).unwrap();
        assert_eq!(first.stats.index, "none");
        assert!(first.stats.index_written);
        let second = load(&catalog, &exp, LoadOptions::default()).unwrap();
        assert_eq!(second.stats.index, "used");
        assert_eq!(second.stats.unchanged, 16);
        assert!(!second.stats.index_written);
        assert_same(&second, &first);
        let ids: Vec<u64> = (1..=16).collect();
        check_written(&second.trials, &ids);
    }

    #[test]
    fn racing_index_writes_leave_a_valid_index_readers_never_see_torn() {
        let (_dir, catalog, exp) = experiment(3);
        let baseline = load(&catalog, &exp, no_index()).unwrap();
        let path = write_index(&catalog, &exp, &baseline.trials).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let writers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..20 {
                            write_index(&catalog, &exp, &baseline.trials).unwrap();
                        }
                    })
                })
                .collect();
            let reader = s.spawn(|| {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                    let loaded = load(&catalog, &exp, read_only()).unwrap();
                    assert_eq!(loaded.stats.index, "used", "{:?}", loaded.warnings);
                    assert_same(&loaded, &baseline);
                    reads += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            for writer in writers {
                writer.join().unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap();
        });
        let loaded = load(&catalog, &exp, read_only()).unwrap();
        assert_eq!(loaded.stats.index, "used");
        assert_same(&loaded, &baseline);
        // No temporary file is left beside the index.
        let leftovers: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
