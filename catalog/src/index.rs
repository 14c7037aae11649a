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
const MAGIC: &[u8; 8] = b"COHIDX02";

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
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err("damaged index (truncated)".into());
        }
        chunks.push(&rest[..len]);
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
    rmp_serde::encode::write_named(&mut bytes, &doc).map_err(encode_error)?;
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
    let results: Vec<(Found, Vec<Warning>)> = dirs
        .into_par_iter()
        .map(|(name, prev)| {
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
