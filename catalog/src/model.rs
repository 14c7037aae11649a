//! The model registry: named models, their versions (each a trial's checkpoint with its
//! provenance, written once and never changed) and aliases whose every move is kept.
//!
//! ```text
//! ROOT/models/<slug>-<hash>/model.json                 the model (published once; first wins)
//! ROOT/models/<slug>-<hash>/versions/<000001>.json     version 1 (published once: link)
//! ROOT/models/<slug>-<hash>/aliases/<alias>/<000001>.json   the alias's first move
//! ```
//! The same rules as the rest of the catalog: a version takes its number by publishing its
//! fully written, fsynced record with `link(2)`, so of two registrations racing for a number
//! one wins and the other takes the next; a registration that dies before that leaves only a
//! temporary dot-file that readers ignore. An alias moves by publishing its next move the same
//! way, naming the version it moves from: a move raced by another is retried on the new state,
//! so the history is a chain with no gaps and no lost move.
//!
//! A checkpoint is hashed when it is registered (SHA-256 of a file's bytes; of a directory,
//! the `sha256sum` lines of its files sorted by path) and verified when it is exported.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cohort_proto::catalog::{
    AliasMove, Checkpoint, MetricAt, ModelCheckpoint, ModelRecord, ModelSource, ModelVersion,
    CATALOG_VERSION,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::{experiment_dir_name, read_record, strip_path, to_json, Catalog};
use crate::error::{CatalogError, Warning};
use crate::fsutil::{self, io};

/// The registry's directory, in the catalog's root.
const MODELS_DIR: &str = "models";
/// A model's record, in its directory.
const MODEL_FILE: &str = "model.json";
/// A model's versions, in its directory.
const VERSIONS_DIR: &str = "versions";
/// A model's aliases, in its directory.
const ALIASES_DIR: &str = "aliases";
/// How many times a registration or an alias move is retried when others take the number it
/// tried: each retry means another writer succeeded.
const RACE_RETRIES: usize = 1000;

/// Which of a trial's checkpoints to register.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointChoice {
    /// The one at the highest step.
    Latest,
    /// The best by a metric: its value in the checkpoint's metadata, else the value logged at
    /// the latest step not after the checkpoint's.
    Best {
        /// The metric.
        metric: String,
        /// Whether smaller is better (a loss; `best:METRIC:min`, the default) or larger
        /// (`best:METRIC:max`).
        smaller_is_better: bool,
    },
    /// The one taken at this step.
    Step(i64),
}

impl std::str::FromStr for CheckpointChoice {
    type Err = CatalogError;

    /// `latest`, `best:METRIC`, `best:METRIC:min`, `best:METRIC:max` or a step number.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "latest" {
            return Ok(CheckpointChoice::Latest);
        }
        if let Ok(step) = text.parse::<i64>() {
            return Ok(CheckpointChoice::Step(step));
        }
        if let Some(rest) = text.strip_prefix("best:") {
            let (metric, smaller_is_better) = match rest.rsplit_once(':') {
                Some((metric, "min")) => (metric, true),
                Some((metric, "max")) => (metric, false),
                _ => (rest, true),
            };
            if !metric.is_empty() {
                return Ok(CheckpointChoice::Best {
                    metric: metric.to_owned(),
                    smaller_is_better,
                });
            }
        }
        Err(CatalogError::BadQuery(format!(
            "checkpoint {text:?}: give latest, best:METRIC[:min|:max] or a step number"
        )))
    }
}

/// A version of a model named by number or by alias (`NAME@3`, `NAME@production`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRef {
    /// Version number.
    Number(u64),
    /// Alias.
    Alias(String),
}

/// Splits `NAME`, `NAME@K` or `NAME@ALIAS`.
///
/// # Errors
///
/// [`CatalogError::BadQuery`] for an empty name or version.
pub fn parse_ref(text: &str) -> Result<(String, Option<VersionRef>), CatalogError> {
    let (name, version) = match text.rsplit_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (text, None),
    };
    if name.is_empty() || version == Some("") {
        return Err(CatalogError::BadQuery(format!(
            "{text:?}: name a model as NAME, NAME@VERSION or NAME@ALIAS"
        )));
    }
    let version = version.map(|v| match v.parse::<u64>() {
        Ok(n) => VersionRef::Number(n),
        Err(_) => VersionRef::Alias(v.to_owned()),
    });
    Ok((name.to_owned(), version))
}

/// Checks a model name: not empty, at most 200 characters, no `@` (it separates the version),
/// no `/` and no control characters.
fn check_name(name: &str) -> Result<(), CatalogError> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.chars().count() > 200 {
        Some("is longer than 200 characters")
    } else if name.contains('@') {
        Some("contains '@', which separates a model's name from its version (NAME@3)")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(CatalogError::BadQuery(format!(
            "model name {name:?} {problem}"
        ))),
        None => Ok(()),
    }
}

/// Checks an alias: letters, digits, `-`, `_` and `.`, starting with a letter (a number names
/// a version), at most 64 characters.
fn check_alias(alias: &str) -> Result<(), CatalogError> {
    let good = alias.len() <= 64
        && alias.starts_with(|c: char| c.is_ascii_alphabetic())
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if good {
        Ok(())
    } else {
        Err(CatalogError::BadQuery(format!(
            "alias {alias:?}: use letters, digits, '-', '_' and '.', starting with a letter (at most 64 characters)"
        )))
    }
}

/// A model with its versions and its aliases' histories, as read now.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// Its record.
    pub record: ModelRecord,
    /// Its directory.
    #[serde(skip)]
    pub dir: PathBuf,
    /// Its versions, by number.
    pub versions: Vec<ModelVersion>,
    /// Each alias's moves, oldest first.
    pub aliases: BTreeMap<String, Vec<AliasMove>>,
}

impl Model {
    /// Where each alias points now (removed aliases left out).
    pub fn current_aliases(&self) -> BTreeMap<String, u64> {
        self.aliases
            .iter()
            .filter_map(|(alias, moves)| Some((alias.clone(), moves.last()?.to?)))
            .collect()
    }

    /// Every move of every alias, oldest first.
    pub fn alias_history(&self) -> Vec<&AliasMove> {
        let mut moves: Vec<&AliasMove> = self.aliases.values().flatten().collect();
        moves.sort_by(|a, b| a.at.total_cmp(&b.at).then(a.sequence.cmp(&b.sequence)));
        moves
    }

    /// The aliases pointing at version `number` now.
    pub fn aliases_of(&self, number: u64) -> Vec<String> {
        self.current_aliases()
            .into_iter()
            .filter(|(_, to)| *to == number)
            .map(|(alias, _)| alias)
            .collect()
    }

    /// The version `which` names; the latest when `None`.
    ///
    /// # Errors
    ///
    /// [`CatalogError::NoModelVersion`] when there is no such version or alias.
    pub fn version(&self, which: Option<&VersionRef>) -> Result<&ModelVersion, CatalogError> {
        let missing = |what: String| CatalogError::NoModelVersion {
            model: self.record.name.clone(),
            what,
        };
        let number = match which {
            None => {
                return self
                    .versions
                    .last()
                    .ok_or_else(|| missing("version".into()))
            }
            Some(VersionRef::Number(n)) => *n,
            Some(VersionRef::Alias(alias)) => *self
                .current_aliases()
                .get(alias)
                .ok_or_else(|| missing(format!("alias {alias:?}")))?,
        };
        self.versions
            .iter()
            .find(|v| v.number == number)
            .ok_or_else(|| missing(format!("version {number}")))
    }
}

impl Catalog {
    /// The directory of the model called `name` (whether it exists or not).
    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.root().join(MODELS_DIR).join(experiment_dir_name(name))
    }
}

/// Reads every `NNNNNN.json` record of `dir` with `format`, by number; unreadable ones become
/// warnings. A missing directory has none.
fn numbered_records<T: serde::de::DeserializeOwned>(
    dir: &Path,
    format: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<(u64, T)>, CatalogError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CatalogError::Io {
                path: dir.to_path_buf(),
                what: "cannot list",
                source,
            })
        }
    };
    let mut found = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Temporary files of writers at work (or that died) start with a dot.
        let Some(number) = name
            .strip_suffix(".json")
            .filter(|_| !name.starts_with('.'))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        match read_record::<T>(&path, format) {
            Ok(record) => found.push((number, record)),
            Err(e) => warnings.push(Warning {
                problem: format!("{}; skipped", strip_path(&e, &path)),
                path,
            }),
        }
    }
    found.sort_by_key(|(number, _)| *number);
    Ok(found)
}

/// The highest number taken in `dir` (by a record, or by a name that is not yet readable).
fn highest_number(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name();
                    name.to_str()?.strip_suffix(".json")?.parse::<u64>().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn record_name(number: u64) -> String {
    format!("{number:06}.json")
}

/// Reads the model in `dir`; `None` when it has no `model.json`.
fn read_model(dir: &Path, warnings: &mut Vec<Warning>) -> Result<Option<Model>, CatalogError> {
    let path = dir.join(MODEL_FILE);
    let record: ModelRecord = match read_record(&path, "cohort.model") {
        Ok(record) => record,
        Err(CatalogError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let mut versions: Vec<ModelVersion> = Vec::new();
    for (number, version) in
        numbered_records::<ModelVersion>(&dir.join(VERSIONS_DIR), "cohort.model-version", warnings)?
    {
        if version.number == number && version.model == record.name {
            versions.push(version);
        } else {
            warnings.push(Warning {
                path: dir.join(VERSIONS_DIR).join(record_name(number)),
                problem: format!(
                    "says it is {}@{}, not {}@{number}; skipped",
                    version.model, version.number, record.name
                ),
            });
        }
    }
    let mut aliases = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir.join(ALIASES_DIR)) {
        for entry in entries.filter_map(Result::ok) {
            let alias = entry.file_name().to_string_lossy().into_owned();
            if check_alias(&alias).is_err() {
                continue;
            }
            let moves: Vec<AliasMove> =
                numbered_records::<AliasMove>(&entry.path(), "cohort.model-alias", warnings)?
                    .into_iter()
                    .map(|(_, m)| m)
                    .collect();
            if !moves.is_empty() {
                aliases.insert(alias, moves);
            }
        }
    }
    Ok(Some(Model {
        record,
        dir: dir.to_path_buf(),
        versions,
        aliases,
    }))
}

/// The model called `name`.
///
/// # Errors
///
/// [`CatalogError::NoModel`] when there is none; I/O and malformed-record errors of its
/// `model.json`. Unreadable versions and alias moves become warnings.
pub fn model(
    catalog: &Catalog,
    name: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Model, CatalogError> {
    let dir = catalog.model_dir(name);
    match read_model(&dir, warnings)? {
        Some(model) if model.record.name == name => Ok(model),
        Some(model) => Err(CatalogError::Malformed {
            path: dir.join(MODEL_FILE),
            problem: format!("is model {:?}, not {name:?}", model.record.name),
        }),
        None => Err(CatalogError::NoModel {
            name: name.to_owned(),
            root: catalog.root().to_path_buf(),
        }),
    }
}

/// Every model, by name; unreadable ones become warnings.
///
/// # Errors
///
/// [`CatalogError::Io`] when the registry's directory exists but cannot be listed.
pub fn models(catalog: &Catalog, warnings: &mut Vec<Warning>) -> Result<Vec<Model>, CatalogError> {
    let dirs = model_dirs(catalog)?;
    let mut found = Vec::new();
    for dir in dirs {
        match read_model(&dir, warnings) {
            Ok(Some(model)) => found.push(model),
            // A registration that died before publishing `model.json` left only the
            // directory (the next registration of that name completes it).
            Ok(None) if !dir.join(VERSIONS_DIR).exists() => {}
            Ok(None) => warnings.push(Warning {
                problem: "versions but no model.json (damaged, or not a model); skipped".into(),
                path: dir,
            }),
            Err(e) => {
                let path = dir.join(MODEL_FILE);
                warnings.push(Warning {
                    problem: format!("{}; skipped", strip_path(&e, &path)),
                    path,
                });
            }
        }
    }
    found.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    Ok(found)
}

/// The registry's model directories (none when it has none yet), leaving out dot-files.
fn model_dirs(catalog: &Catalog) -> Result<Vec<PathBuf>, CatalogError> {
    let base = catalog.root().join(MODELS_DIR);
    match std::fs::read_dir(&base) {
        Ok(entries) => Ok(entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(&base, "cannot list")(e)),
    }
}

/// Every checkpoint a model version points at, with the versions (`NAME@K`) pointing at it:
/// what checkpoint collection must keep.
///
/// # Errors
///
/// [`CatalogError::Io`] when the registry cannot be listed, [`CatalogError::Malformed`] naming
/// a version that cannot be read: collection must then not run.
pub fn registered_checkpoints(
    catalog: &Catalog,
) -> Result<BTreeMap<String, Vec<String>>, CatalogError> {
    let dirs = model_dirs(catalog)?;
    let mut registered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Every model directory's versions, whether or not its `model.json` can be read (a
    // registration killed before publishing it leaves none): only the versions say what
    // must be kept, and aliases and damaged model records do not matter here.
    for dir in dirs {
        let mut warnings = Vec::new();
        let versions = numbered_records::<ModelVersion>(
            &dir.join(VERSIONS_DIR),
            "cohort.model-version",
            &mut warnings,
        )?;
        // A version that cannot be read cannot be protected: collection must not guess.
        if let Some(warning) = warnings.first() {
            return Err(CatalogError::Malformed {
                path: warning.path.clone(),
                problem: format!(
                    "{}: checkpoint collection needs every model version readable, to keep the checkpoints they point at",
                    warning.problem
                ),
            });
        }
        for (_, version) in versions {
            registered
                .entry(version.checkpoint.path.clone())
                .or_default()
                .push(format!("{}@{}", version.model, version.number));
        }
    }
    Ok(registered)
}

/// What hashing a checkpoint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest256 {
    /// `file` or `directory`.
    pub kind: &'static str,
    /// Bytes read.
    pub size: u64,
    /// SHA-256 in hex.
    pub sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `from` into the hash, and into `to` when given; returns the bytes read.
fn hash_stream(
    from: &Path,
    to: Option<&mut std::fs::File>,
    hasher: &mut Sha256,
) -> Result<u64, CatalogError> {
    let mut file = std::fs::File::open(from).map_err(io(from, "cannot open"))?;
    let mut to = to;
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(io(from, "cannot read"))?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buffer[..n]);
        if let Some(out) = to.as_deref_mut() {
            out.write_all(&buffer[..n])
                .map_err(io(from, "cannot copy"))?;
        }
        total += n as u64;
    }
}

/// The files under `dir`, as paths relative to it, sorted bytewise (as `LC_ALL=C sort`).
/// Symbolic links to files count as the files; a symbolic link to a directory is refused.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, CatalogError> {
    fn walk(base: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), CatalogError> {
        let here = base.join(rel);
        for entry in std::fs::read_dir(&here).map_err(io(&here, "cannot list"))? {
            let entry = entry.map_err(io(&here, "cannot list"))?;
            let path = entry.path();
            let link = entry
                .file_type()
                .map_err(io(&path, "cannot stat"))?
                .is_symlink();
            let meta = std::fs::metadata(&path).map_err(io(&path, "cannot stat"))?;
            let rel = rel.join(entry.file_name());
            if meta.is_dir() {
                if link {
                    return Err(CatalogError::Malformed {
                        path,
                        problem: "is a symbolic link to a directory, which a checkpoint cannot hold (it could point anywhere)".into(),
                    });
                }
                walk(base, &rel, out)?;
            } else if meta.is_file() {
                out.push(rel);
            } else {
                return Err(CatalogError::Malformed {
                    path,
                    problem: "is neither a regular file nor a directory (a pipe, socket or device), which a checkpoint cannot hold".into(),
                });
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, Path::new(""), &mut files)?;
    files.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    Ok(files)
}

/// Hashes the checkpoint at `path`, copying it to `copy_to` when given (a file to a file, a
/// directory to a new directory, created here).
fn hash_and_copy(path: &Path, copy_to: Option<&Path>) -> Result<Digest256, CatalogError> {
    let meta = std::fs::metadata(path).map_err(io(path, "cannot stat"))?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(CatalogError::Malformed {
            path: path.to_path_buf(),
            problem: "is neither a regular file nor a directory (a pipe, socket or device), so it cannot be a checkpoint".into(),
        });
    }
    let create = |to: &Path| -> Result<std::fs::File, CatalogError> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)
            .map_err(io(to, "cannot create"))
    };
    let finish = |file: std::fs::File, to: &Path| -> Result<(), CatalogError> {
        file.sync_all().map_err(io(to, "cannot write"))
    };
    if !meta.is_dir() {
        let mut hasher = Sha256::new();
        let size = match copy_to {
            Some(to) => {
                let mut out = create(to)?;
                let size = hash_stream(path, Some(&mut out), &mut hasher)?;
                finish(out, to)?;
                size
            }
            None => hash_stream(path, None, &mut hasher)?,
        };
        return Ok(Digest256 {
            kind: "file",
            size,
            sha256: hex(&hasher.finalize()),
        });
    }
    let mut listing = Sha256::new();
    let mut size = 0;
    if let Some(to) = copy_to {
        std::fs::create_dir(to).map_err(io(to, "cannot create directory"))?;
    }
    for rel in files_under(path)? {
        let mut hasher = Sha256::new();
        let from = path.join(&rel);
        size += match copy_to {
            Some(to) => {
                let target = to.join(&rel);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(io(parent, "cannot create directory"))?;
                }
                let mut out = create(&target)?;
                let n = hash_stream(&from, Some(&mut out), &mut hasher)?;
                finish(out, &target)?;
                n
            }
            None => hash_stream(&from, None, &mut hasher)?,
        };
        // The path's bytes as they are, as `sha256sum` prints a name (not made valid UTF-8).
        listing.update(hex(&hasher.finalize()).as_bytes());
        listing.update(b"  ");
        listing.update(rel.as_os_str().as_encoded_bytes());
        listing.update(b"\n");
    }
    Ok(Digest256 {
        kind: "directory",
        size,
        sha256: hex(&listing.finalize()),
    })
}

/// Hashes the checkpoint at `path`: SHA-256 of a file's bytes, or of a directory's
/// `sha256sum` lines (`<sum>  <relative path>`, one per file, sorted by path).
///
/// # Errors
///
/// [`CatalogError::Io`] naming the file that cannot be read.
pub fn hash_checkpoint(path: &Path) -> Result<Digest256, CatalogError> {
    hash_and_copy(path, None)
}

/// The checkpoint `choice` picks of `checkpoints`, judged by `history` for `best`.
fn choose<'a>(
    checkpoints: &'a [Checkpoint],
    choice: &CheckpointChoice,
    history: &BTreeMap<String, Vec<crate::read::Point>>,
    trial: &str,
) -> Result<&'a Checkpoint, CatalogError> {
    if checkpoints.is_empty() {
        return Err(CatalogError::BadQuery(format!(
            "trial {trial} recorded no checkpoint (or collection deleted them all); `cohort ckpt list {trial}` lists them"
        )));
    }
    let steps = || {
        let mut steps: Vec<String> = checkpoints.iter().map(|c| c.step.to_string()).collect();
        steps.dedup();
        steps.join(", ")
    };
    match choice {
        CheckpointChoice::Latest => Ok(crate::ckpt::latest_first(checkpoints)[0]),
        CheckpointChoice::Step(step) => crate::ckpt::latest_first(checkpoints)
            .into_iter()
            .find(|c| c.step == *step)
            .ok_or_else(|| {
                CatalogError::BadQuery(format!(
                    "trial {trial} has no checkpoint at step {step}; it has steps {}",
                    steps()
                ))
            }),
        CheckpointChoice::Best {
            metric,
            smaller_is_better,
        } => {
            let points = history.get(metric).map_or(&[][..], Vec::as_slice);
            crate::ckpt::best_first(checkpoints, metric, *smaller_is_better, points)
                .into_iter()
                .find(|(v, _)| v.is_finite())
                .map(|(_, c)| c)
                .ok_or_else(|| {
                    CatalogError::BadQuery(format!(
                        "no checkpoint of trial {trial} has a value of {metric:?} (in its metadata or logged at or before its step)"
                    ))
                })
        }
    }
}

/// The latest point of each metric at or before `step`.
fn metrics_at(
    history: &BTreeMap<String, Vec<crate::read::Point>>,
    step: i64,
) -> BTreeMap<String, MetricAt> {
    history
        .iter()
        .filter_map(|(name, points)| {
            let index = points.partition_point(|p| p.step <= step).checked_sub(1)?;
            let point = &points[index];
            Some((
                name.clone(),
                MetricAt {
                    step: point.step,
                    value: point.value,
                },
            ))
        })
        .collect()
}

/// Registers a checkpoint of trial `trial` of `experiment` as the next version of model
/// `name` (created on its first version). The checkpoint is hashed; the version records it
/// with the trial's provenance, hyperparameters and metrics at its step.
///
/// # Errors
///
/// [`CatalogError::BadQuery`] for a bad name, a checkpoint choice the trial cannot meet or a
/// checkpoint file that is gone; I/O errors naming the file that cannot be read; the
/// catalog's errors. Nothing is recorded unless the whole version is.
pub fn register(
    catalog: &Catalog,
    name: &str,
    experiment: &str,
    trial: u64,
    choice: &CheckpointChoice,
    description: Option<String>,
    warnings: &mut Vec<Warning>,
) -> Result<ModelVersion, CatalogError> {
    check_name(name)?;
    let exp = catalog.experiment(experiment)?;
    let trial_ref = catalog.trial(&exp, trial)?;
    let label = format!("{experiment}/{trial}");
    let summary = crate::read::summarize(&trial_ref.dir, None, warnings)?.ok_or_else(|| {
        CatalogError::BadQuery(format!("trial {label} is not complete yet (no trial.json)"))
    })?;
    let history = crate::read::history(&trial_ref.dir, None, warnings)?;
    let chosen = choose(&summary.checkpoints, choice, &history, &label)?.clone();
    let path = PathBuf::from(&chosen.path);
    if !path.exists() {
        return Err(CatalogError::BadQuery(format!(
            "trial {label}'s checkpoint at step {} is recorded at {}, which does not exist",
            chosen.step, chosen.path
        )));
    }
    let digest = hash_checkpoint(&path)?;
    let state = summary.state.as_ref();
    let writer = fsutil::writer();
    let mut version = ModelVersion {
        format: "cohort.model-version".into(),
        version: CATALOG_VERSION,
        model: name.to_owned(),
        number: 0,
        source: ModelSource {
            experiment: experiment.to_owned(),
            trial,
            state: crate::read::shown_state(&summary),
            command: summary.trial.command.clone(),
            slurm_job: state.and_then(|s| s.slurm_job.clone()),
            slurm_step: state.and_then(|s| s.slurm_step.clone()),
            nodes: state.map(|s| s.nodes.clone()).unwrap_or_default(),
        },
        checkpoint: ModelCheckpoint {
            path: chosen.path.clone(),
            kind: digest.kind.to_owned(),
            size: digest.size,
            sha256: digest.sha256,
            step: chosen.step,
            at: chosen.at,
            metadata: chosen.metadata.clone(),
        },
        hparams: summary.hparams.clone(),
        metrics: metrics_at(&history, chosen.step),
        description: description.filter(|d| !d.is_empty()),
        registered: fsutil::now(),
        registered_by: writer.clone(),
        nonce: fsutil::nonce(),
    };

    let models = catalog.root().join(MODELS_DIR);
    fsutil::mkdir_if_absent(&models)?;
    let dir = catalog.model_dir(name);
    fsutil::mkdir_if_absent(&dir)?;
    let record = ModelRecord {
        format: "cohort.model".into(),
        version: CATALOG_VERSION,
        name: name.to_owned(),
        created: version.registered,
        created_by: writer,
    };
    let model_file = dir.join(MODEL_FILE);
    fsutil::publish_new(&model_file, &to_json(&record))?;
    let published: ModelRecord = read_record(&model_file, "cohort.model")?;
    if published.name != name {
        return Err(CatalogError::Malformed {
            path: model_file,
            problem: format!("is model {:?}, not {name:?}", published.name),
        });
    }
    let versions = dir.join(VERSIONS_DIR);
    fsutil::mkdir_if_absent(&versions)?;
    let mut number = highest_number(&versions) + 1;
    for _ in 0..RACE_RETRIES {
        version.number = number;
        let target = versions.join(record_name(number));
        if fsutil::publish_new(&target, &to_json(&version))? || is_ours(&target, &version.nonce) {
            check_not_collected(&trial_ref.dir, &version, warnings)?;
            return Ok(version);
        }
        number = number.max(highest_number(&versions)) + 1;
    }
    Err(CatalogError::BadQuery(format!(
        "could not take a version number of {name} after {RACE_RETRIES} tries: too many registrations at once"
    )))
}

/// Whether the record at `path` is the one with `nonce` (a retransmitted NFS `link` reports
/// `EEXIST` although it succeeded).
fn is_ours(path: &Path, nonce: &str) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|v| v.get("nonce").and_then(|n| n.as_str()) == Some(nonce))
}

/// After a version is published: a checkpoint collection that ran at the same time may have
/// recorded its checkpoint for deletion before it could see the version. Collection reads the
/// registry again after recording and keeps what a version points at; a collection whose
/// second reading came before this version was published may still delete the file. Each
/// side writes, then reads the other's record, so when collection missed the version this
/// reading sees collection's record: the registration then fails, saying so, whether or not
/// the file is still there.
fn check_not_collected(
    trial_dir: &Path,
    version: &ModelVersion,
    warnings: &mut Vec<Warning>,
) -> Result<(), CatalogError> {
    if crate::read::collected(trial_dir, warnings)?.contains(&version.checkpoint.path) {
        return Err(CatalogError::BadQuery(format!(
            "{}@{} was recorded, but a checkpoint collection (`cohort ckpt gc`) running at the same time recorded its checkpoint {} for deletion and may delete it: register another checkpoint, or copy this one elsewhere and check `cohort model show {}@{}`",
            version.model, version.number, version.checkpoint.path, version.model, version.number
        )));
    }
    Ok(())
}

/// Moves `alias` of model `name` to version `to` (`None` removes it), recording who moved it,
/// when, and from which version. Returns the move, or `None` when the alias already pointed
/// there (nothing is recorded).
///
/// # Errors
///
/// [`CatalogError::BadQuery`] for a bad alias, [`CatalogError::NoModel`],
/// [`CatalogError::NoModelVersion`] for a version that does not exist or an alias to remove
/// that is not set, and the catalog's I/O errors.
pub fn move_alias(
    catalog: &Catalog,
    name: &str,
    alias: &str,
    to: Option<u64>,
    warnings: &mut Vec<Warning>,
) -> Result<Option<AliasMove>, CatalogError> {
    check_alias(alias)?;
    let found = model(catalog, name, warnings)?;
    if let Some(number) = to {
        found.version(Some(&VersionRef::Number(number)))?;
    }
    let dir = found.dir.join(ALIASES_DIR);
    fsutil::mkdir_if_absent(&dir)?;
    let moves_dir = dir.join(alias);
    let mut taken = 0;
    for _ in 0..RACE_RETRIES {
        // The last move decides where this one starts, and this one takes the number after
        // it: if another move takes that number first, the publish fails and this one is
        // decided again, so every move starts where the one before it ended.
        // A number seen taken counts even when a listing (stale on NFS) does not show it yet.
        let last = highest_number(&moves_dir).max(taken);
        let from = if last == 0 {
            None
        } else {
            read_record::<AliasMove>(&moves_dir.join(record_name(last)), "cohort.model-alias")?.to
        };
        if from == to {
            if to.is_none() {
                return Err(CatalogError::NoModelVersion {
                    model: name.to_owned(),
                    what: format!("alias {alias:?} to remove"),
                });
            }
            return Ok(None);
        }
        if last == 0 {
            fsutil::mkdir_if_absent(&moves_dir)?;
        }
        let sequence = last + 1;
        let record = AliasMove {
            format: "cohort.model-alias".into(),
            version: CATALOG_VERSION,
            model: name.to_owned(),
            alias: alias.to_owned(),
            sequence,
            from,
            to,
            by: fsutil::writer(),
            at: fsutil::now(),
            nonce: fsutil::nonce(),
        };
        let target = moves_dir.join(record_name(sequence));
        if fsutil::publish_new(&target, &to_json(&record))? || is_ours(&target, &record.nonce) {
            return Ok(Some(record));
        }
        // Another move took this number: decide again from the alias as it is now.
        taken = sequence;
    }
    Err(CatalogError::BadQuery(format!(
        "could not move alias {alias} of {name} after {RACE_RETRIES} tries: too many moves at once"
    )))
}

/// Whether a version's checkpoint is still where it was registered.
pub fn checkpoint_present(version: &ModelVersion) -> bool {
    Path::new(&version.checkpoint.path).exists()
}

/// The model card's names, beside an exported checkpoint.
const CARD_JSON: &str = "model-card.json";
/// See [`CARD_JSON`].
const CARD_MARKDOWN: &str = "model-card.md";

/// What [`export`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// The copied checkpoint.
    pub checkpoint: PathBuf,
    /// The model card as JSON.
    pub card_json: PathBuf,
    /// The model card as Markdown.
    pub card_markdown: PathBuf,
    /// The verified SHA-256.
    pub sha256: String,
    /// Bytes copied.
    pub size: u64,
}

/// The model card's JSON: the version whole, with the model's name, its aliases now, and
/// where the export put the checkpoint.
#[derive(Debug, Serialize)]
struct Card<'a> {
    format: &'static str,
    version: u32,
    model: &'a str,
    aliases: Vec<String>,
    file: String,
    exported: f64,
    exported_by: cohort_proto::catalog::Writer,
    #[serde(rename = "registered_version")]
    record: &'a ModelVersion,
}

/// The model card's Markdown: provenance, hyperparameters, metrics, command.
pub fn card_markdown(version: &ModelVersion, aliases: &[String], file: &str) -> String {
    let mut text = format!("# {} version {}\n\n", version.model, version.number);
    if let Some(description) = &version.description {
        text.push_str(&format!("{description}\n\n"));
    }
    if !aliases.is_empty() {
        text.push_str(&format!("Aliases: {}\n\n", aliases.join(", ")));
    }
    let source = &version.source;
    text.push_str("## Provenance\n\n");
    text.push_str(&format!(
        "- Trial: {}/{}{}\n",
        source.experiment,
        source.trial,
        source
            .state
            .map(|s| format!(" ({})", s.as_str()))
            .unwrap_or_default()
    ));
    if let Some(job) = &source.slurm_job {
        text.push_str(&format!(
            "- Slurm job: {job}{}\n",
            source
                .slurm_step
                .as_ref()
                .map(|s| format!(", step {s}"))
                .unwrap_or_default()
        ));
    }
    if !source.nodes.is_empty() {
        text.push_str(&format!("- Nodes: {}\n", source.nodes.join(", ")));
    }
    let ckpt = &version.checkpoint;
    text.push_str(&format!(
        "- Checkpoint: `{file}` ({}, {} bytes), step {}, from `{}`\n- SHA-256: `{}`\n",
        ckpt.kind, ckpt.size, ckpt.step, ckpt.path, ckpt.sha256
    ));
    text.push_str(&format!(
        "- Registered by {} on {} at {}\n",
        version.registered_by.user,
        version.registered_by.host,
        crate::utc_time(version.registered)
    ));
    if !source.command.is_empty() {
        text.push_str(&format!(
            "\n## Command\n\n```\n{}\n```\n",
            source.command.join(" ")
        ));
    }
    if !version.hparams.is_empty() {
        text.push_str("\n## Hyperparameters\n\n| name | value |\n|---|---|\n");
        for (key, value) in &version.hparams {
            text.push_str(&format!("| {key} | {value} |\n"));
        }
    }
    if !version.metrics.is_empty() {
        text.push_str(&format!(
            "\n## Metrics at step {}\n\n| metric | value | logged at step |\n|---|---|---|\n",
            ckpt.step
        ));
        for (name, at) in &version.metrics {
            text.push_str(&format!(
                "| {name} | {} | {} |\n",
                crate::format_number(at.value),
                at.step
            ));
        }
    }
    text
}

/// Copies the checkpoint of `version` into `dir` (created if absent) and verifies its SHA-256
/// as it copies; then writes the model card beside it (`model-card.json`, `model-card.md`).
/// The copy is written under a temporary name and renamed when verified: `dir` never holds a
/// checkpoint that does not match its version.
///
/// # Errors
///
/// [`CatalogError::MissingCheckpoint`] when the checkpoint is gone, [`CatalogError::Checksum`]
/// naming both sums when its bytes changed, [`CatalogError::BadQuery`] when `dir` already
/// holds what the export would write, and I/O errors naming the file.
pub fn export(model: &Model, version: &ModelVersion, dir: &Path) -> Result<Exported, CatalogError> {
    let source = Path::new(&version.checkpoint.path);
    if !source.exists() {
        return Err(CatalogError::MissingCheckpoint {
            model: model.record.name.clone(),
            number: version.number,
            path: source.to_path_buf(),
        });
    }
    let file = source.file_name().map_or_else(
        || "checkpoint".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    std::fs::create_dir_all(dir).map_err(io(dir, "cannot create directory"))?;
    if file == CARD_JSON || file == CARD_MARKDOWN {
        return Err(CatalogError::BadQuery(format!(
            "the checkpoint {} has the name of the model card the export writes beside it; export it by hand",
            source.display()
        )));
    }
    let target = dir.join(&file);
    let card_json = dir.join(CARD_JSON);
    let card_markdown_path = dir.join(CARD_MARKDOWN);
    for path in [&target, &card_json, &card_markdown_path] {
        if path.symlink_metadata().is_ok() {
            return Err(CatalogError::BadQuery(format!(
                "{} exists; export into an empty or new directory",
                path.display()
            )));
        }
    }
    let partial = dir.join(format!(".{file}.partial-{}", fsutil::nonce()));
    let digest = match hash_and_copy(source, Some(&partial)) {
        Ok(digest) => digest,
        Err(e) => {
            remove_all(&partial);
            return Err(e);
        }
    };
    if digest.sha256 != version.checkpoint.sha256 {
        remove_all(&partial);
        return Err(CatalogError::Checksum {
            model: model.record.name.clone(),
            number: version.number,
            path: source.to_path_buf(),
            recorded: version.checkpoint.sha256.clone(),
            found: digest.sha256,
        });
    }
    if let Err(e) = std::fs::rename(&partial, &target) {
        remove_all(&partial);
        return Err(io(&target, "cannot rename the verified copy to")(e));
    }
    let aliases = model.aliases_of(version.number);
    let card = Card {
        format: "cohort.model-card",
        version: CATALOG_VERSION,
        model: &model.record.name,
        aliases: aliases.clone(),
        file: file.clone(),
        exported: fsutil::now(),
        exported_by: fsutil::writer(),
        record: version,
    };
    fsutil::replace(&card_json, &to_json(&card))?;
    fsutil::replace(
        &card_markdown_path,
        card_markdown(version, &aliases, &file).as_bytes(),
    )?;
    fsutil::sync_dir(dir);
    Ok(Exported {
        checkpoint: target,
        card_json,
        card_markdown: card_markdown_path,
        sha256: digest.sha256,
        size: digest.size,
    })
}

fn remove_all(path: &Path) {
    let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
}

/// A version as the CLI's `--json`, the Python package and the web view show it: its record,
/// the aliases pointing at it now, and whether its checkpoint is still there.
pub fn version_json(model: &Model, version: &ModelVersion) -> serde_json::Value {
    let mut value = serde_json::to_value(version).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.remove("format");
        object.remove("version");
        object.remove("nonce");
        object.insert(
            "aliases".into(),
            serde_json::json!(model.aliases_of(version.number)),
        );
        object.insert(
            "checkpoint_present".into(),
            serde_json::json!(checkpoint_present(version)),
        );
    }
    value
}

/// A model as `cohort model show NAME --json` shows it: its versions, its aliases now and
/// every move of them, oldest first.
pub fn model_json(model: &Model) -> serde_json::Value {
    let history: Vec<serde_json::Value> = model
        .alias_history()
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "alias": m.alias, "sequence": m.sequence, "from": m.from, "to": m.to,
                "by": m.by, "at": m.at,
            })
        })
        .collect();
    serde_json::json!({
        "name": model.record.name,
        "created": model.record.created,
        "created_by": model.record.created_by,
        "aliases": model.current_aliases(),
        "versions": model.versions.iter().map(|v| version_json(model, v)).collect::<Vec<_>>(),
        "alias_history": history,
    })
}

/// A model as one line of `cohort model list --json`.
pub fn model_summary_json(model: &Model) -> serde_json::Value {
    let latest = model.versions.last();
    serde_json::json!({
        "name": model.record.name,
        "created": model.record.created,
        "created_by": model.record.created_by,
        "versions": model.versions.len(),
        "latest": latest.map(|v| v.number),
        "latest_registered": latest.map(|v| v.registered),
        "aliases": model.current_aliases(),
    })
}
