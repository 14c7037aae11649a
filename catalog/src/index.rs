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
use crate::read::summarize;

/// First bytes of an index file; the rest is MessagePack.
const MAGIC: &[u8; 8] = b"COHIDX01";

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

fn read_index(path: &std::path::Path, experiment: &str) -> Result<Option<IndexDoc>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let Some(body) = bytes.strip_prefix(MAGIC) else {
        return Err("not a Cohort index (bad magic)".into());
    };
    let doc: IndexDoc = rmp_serde::from_slice(body).map_err(|e| format!("damaged index ({e})"))?;
    if doc.format != "cohort.index" || doc.version != CATALOG_VERSION {
        return Err(format!(
            "index format {:?} version {}, expected cohort.index version {CATALOG_VERSION}",
            doc.format, doc.version
        ));
    }
    if doc.experiment != experiment {
        return Err(format!("indexes experiment {:?}", doc.experiment));
    }
    Ok(Some(doc))
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
    let doc = IndexDoc {
        format: "cohort.index".into(),
        version: CATALOG_VERSION,
        experiment: experiment.record.name.clone(),
        built: fsutil::now(),
        trials: trials.to_vec(),
    };
    let mut bytes = MAGIC.to_vec();
    rmp_serde::encode::write_named(&mut bytes, &doc).map_err(|e| CatalogError::Malformed {
        path: path.clone(),
        problem: format!("cannot encode the index: {e}"),
    })?;
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
            Ok(Some(doc)) => {
                stats.index = "used";
                Some(doc)
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
    let mut previous: HashMap<String, TrialSummary> = index
        .map(|doc| doc.trials.into_iter().map(|t| (t.dir.clone(), t)).collect())
        .unwrap_or_default();
    let trials_dir = experiment.dir.join("trials");
    let mut dirs: Vec<(String, Option<TrialSummary>)> = match std::fs::read_dir(&trials_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .map(|name| {
                let prev = previous.remove(&name);
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

    #[derive(Clone, Copy, PartialEq)]
    enum How {
        Unchanged,
        Updated,
        Whole,
    }
    let results: Vec<(Option<TrialSummary>, How, Vec<Warning>)> = dirs
        .par_iter()
        .map(|(name, prev)| {
            let dir = trials_dir.join(name);
            let mut warnings = Vec::new();
            let result = summarize(&dir, prev.as_ref(), &mut warnings);
            match result {
                Ok(Some(summary)) => {
                    let how = match prev {
                        None => How::Whole,
                        Some(p) if *p == summary => How::Unchanged,
                        Some(_) => How::Updated,
                    };
                    (Some(summary), how, warnings)
                }
                Ok(None) => (None, How::Whole, warnings),
                Err(e) => {
                    warnings.push(Warning {
                        path: dir.clone(),
                        problem: format!("{}; skipped", strip_path(&e, &dir)),
                    });
                    (None, How::Whole, warnings)
                }
            }
        })
        .collect();
    let mut trials = Vec::with_capacity(results.len());
    for (summary, how, mut w) in results {
        warnings.append(&mut w);
        if let Some(summary) = summary {
            match how {
                How::Unchanged => stats.unchanged += 1,
                How::Updated => stats.updated += 1,
                How::Whole => stats.read_whole += 1,
            }
            trials.push(summary);
        }
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
