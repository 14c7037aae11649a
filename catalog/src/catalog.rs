//! The catalog's directory tree: creating and finding experiments and trials, and writing a
//! trial's state.
//!
//! ```text
//! ROOT/catalog.json                                  marker (format, version)
//! ROOT/experiments/<slug>-<hash>/experiment.json     written once (link: first wins)
//! ROOT/experiments/<slug>-<hash>/trials/<000001>/    mkdir: the number is taken by whoever creates it
//!     trial.json     what the trial is (written once by its creator)
//!     state.json     its state (replaced by rename)
//!     failed-<job>.<step>.<launch>.json   a Slurm step's first failed task (created if absent)
//!     stopped-<job>.<step>.<launch>.json  its first task Slurm stopped (SIGTERM, a warning)
//!     metrics-<NNNN>.clog   metric log segments, one writer each
//!     gc-*.json      checkpoints deleted by collection
//!     output.log, slurm-<job>.out   the output of a search's local run or Slurm job
//!     stop           asks the trial to stop (created if absent)
//! ROOT/experiments/<slug>-<hash>/search/             a search's files ([`SearchDir`])
//! ROOT/experiments/<slug>-<hash>/slurm/<job>.<step>.json   which trial a Slurm step records into
//! ROOT/index/<slug>-<hash>.json                      rebuildable summary cache
//! ```
//! The experiment's directory is derived from its name alone, so any node finds or creates it
//! without listing anything. This module and [`SearchDir`] are the only places that name the
//! tree's files: other crates ask them for paths, and change shared files only through
//! [`crate::fsutil`]'s rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cohort_proto::catalog::{
    CatalogMarker, ExperimentRecord, SlurmStepRecord, StateRecord, StepFailure, TrialRecord,
    TrialState, TrialSummary, CATALOG_VERSION,
};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::{CatalogError, Warning};
use crate::fsutil;
use crate::search_dir::SearchDir;

/// Name of the file in a trial's directory that asks its workers to stop (`cohort search
/// stop`, a searcher's decision).
pub const STOP_FILE: &str = "stop";

/// An experiment's directory of trials.
const TRIALS_DIR: &str = "trials";
/// An experiment's record, in its directory.
const EXPERIMENT_FILE: &str = "experiment.json";
/// A trial's record, in its directory.
const TRIAL_FILE: &str = "trial.json";
/// A trial's state, in its directory.
const STATE_FILE: &str = "state.json";
/// A search's directory, in its experiment's.
const SEARCH_DIR: &str = "search";
/// The output of a trial that a local search runs.
const OUTPUT_LOG: &str = "output.log";

/// An open catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    root: PathBuf,
}

/// An experiment found in the catalog.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Its record.
    pub record: ExperimentRecord,
    /// Its directory.
    pub dir: PathBuf,
}

impl Experiment {
    /// The directory holding the experiment's trials, one directory each.
    pub fn trials_dir(&self) -> PathBuf {
        self.dir.join(TRIALS_DIR)
    }

    /// The directory of trial `id` (whether or not it exists).
    pub fn trial_dir(&self, id: u64) -> PathBuf {
        self.trials_dir().join(trial_dir_name(id))
    }

    /// The directory a trial's summary was read from.
    pub fn summary_dir(&self, trial: &TrialSummary) -> PathBuf {
        self.trials_dir().join(&trial.dir)
    }

    /// How many trial directories the experiment has (0 when they cannot be listed).
    pub fn trial_count(&self) -> usize {
        std::fs::read_dir(self.trials_dir()).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
    }

    /// The experiment's search directory (whether or not it has a search).
    pub fn search_dir(&self) -> SearchDir {
        SearchDir::new(self.dir.join(SEARCH_DIR))
    }
}

/// What to create an experiment with.
#[derive(Debug, Clone, Default)]
pub struct NewExperiment {
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Configuration to keep with it.
    pub config: serde_json::Value,
    /// Searcher driving it.
    pub searcher: Option<String>,
}

/// The number of the last trial this process created, by trials directory.
static LAST_TRIAL: std::sync::Mutex<std::collections::BTreeMap<PathBuf, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// A trial's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialRef {
    /// Experiment name.
    pub experiment: String,
    /// Trial number.
    pub id: u64,
    /// Its directory.
    pub dir: PathBuf,
}

/// Name of a trial's directory.
pub fn trial_dir_name(id: u64) -> String {
    format!("{id:06}")
}

/// Directory name for an experiment name: a readable slug plus a hash of the full name, so
/// different names never share a directory and the same name always maps to the same one.
pub fn experiment_dir_name(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let slug = slug.trim_start_matches('.');
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{slug}-{hash}")
}

/// Parses a JSON record, checking its `format` and major `version`.
pub(crate) fn parse_record<T: DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    format: &str,
) -> Result<T, CatalogError> {
    let malformed = |problem: String| CatalogError::Malformed {
        path: path.to_path_buf(),
        problem,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        if bytes.is_empty() {
            malformed("empty file".to_owned())
        } else {
            malformed(format!("not valid JSON ({e})"))
        }
    })?;
    let found = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
    if found != format {
        return Err(malformed(format!("format {found:?}, expected {format:?}")));
    }
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(CATALOG_VERSION)) {
        return Err(malformed(format!(
            "version {}, this release reads version {CATALOG_VERSION}",
            version.map_or_else(|| "missing".to_owned(), |v| v.to_string())
        )));
    }
    serde_json::from_value(value).map_err(|e| malformed(format!("{e}")))
}

pub(crate) fn read_record<T: DeserializeOwned>(
    path: &Path,
    format: &str,
) -> Result<T, CatalogError> {
    parse_record(path, &fsutil::read(path)?, format)
}

pub(crate) fn to_json(value: &impl serde::Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

impl Catalog {
    /// Opens an existing catalog.
    pub fn open(root: impl Into<PathBuf>) -> Result<Catalog, CatalogError> {
        let root = root.into();
        let marker = root.join("catalog.json");
        if !marker.exists() {
            return Err(CatalogError::NotACatalog { path: root });
        }
        let _: CatalogMarker = read_record(&marker, "cohort.catalog")?;
        Ok(Catalog { root })
    }

    /// Opens the catalog at `root`, creating it (and its parents) if absent. Safe to call from
    /// many processes at once.
    pub fn open_or_create(root: impl Into<PathBuf>) -> Result<Catalog, CatalogError> {
        let root = root.into();
        std::fs::create_dir_all(root.join("experiments")).map_err(|source| CatalogError::Io {
            path: root.clone(),
            what: "cannot create the catalog",
            source,
        })?;
        let marker = root.join("catalog.json");
        if !marker.exists() {
            let record = CatalogMarker {
                format: "cohort.catalog".into(),
                version: CATALOG_VERSION,
                created: fsutil::now(),
            };
            fsutil::publish_new(&marker, &to_json(&record))?;
        }
        Catalog::open(root)
    }

    /// The catalog's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of the experiment called `name` (whether or not it exists).
    pub fn experiment_dir(&self, name: &str) -> PathBuf {
        self.root
            .join("experiments")
            .join(experiment_dir_name(name))
    }

    /// Creates the experiment, or returns the existing one of that name. Returns whether this
    /// call created it. Many processes on many nodes may call this at once: exactly one record
    /// is published and every caller gets it.
    pub fn create_experiment(
        &self,
        spec: &NewExperiment,
    ) -> Result<(Experiment, bool), CatalogError> {
        if spec.name.trim().is_empty() {
            return Err(CatalogError::BadQuery(
                "an experiment name must not be empty".into(),
            ));
        }
        let dir = self.experiment_dir(&spec.name);
        let path = dir.join(EXPERIMENT_FILE);
        if path.exists() {
            return Ok((self.experiment_at(&dir, &spec.name)?, false));
        }
        fsutil::mkdir_if_absent(&dir)?;
        fsutil::mkdir_if_absent(&dir.join(TRIALS_DIR))?;
        let record = ExperimentRecord {
            format: "cohort.experiment".into(),
            version: CATALOG_VERSION,
            name: spec.name.clone(),
            description: spec.description.clone(),
            config: spec.config.clone(),
            owner: fsutil::writer(),
            created: fsutil::now(),
            searcher: spec.searcher.clone(),
            nonce: fsutil::nonce(),
        };
        fsutil::publish_new(&path, &to_json(&record))?;
        // Whatever link(2) said, the published record decides (on NFS a retried link can fail
        // although it happened).
        let winner = self.experiment_at(&dir, &spec.name)?;
        let created = winner.record.nonce == record.nonce;
        Ok((winner, created))
    }

    fn experiment_at(&self, dir: &Path, name: &str) -> Result<Experiment, CatalogError> {
        let path = dir.join(EXPERIMENT_FILE);
        let record: ExperimentRecord = read_record(&path, "cohort.experiment")?;
        if record.name != name {
            return Err(CatalogError::Malformed {
                path,
                problem: format!("holds experiment {:?}, expected {name:?}", record.name),
            });
        }
        Ok(Experiment {
            record,
            dir: dir.to_path_buf(),
        })
    }

    /// The experiment called `name`.
    pub fn experiment(&self, name: &str) -> Result<Experiment, CatalogError> {
        let dir = self.experiment_dir(name);
        if !dir.join(EXPERIMENT_FILE).exists() {
            return Err(CatalogError::NoExperiment {
                name: name.to_owned(),
                root: self.root.clone(),
            });
        }
        self.experiment_at(&dir, name)
    }

    /// Every experiment, by name; unreadable ones become warnings.
    pub fn experiments(&self) -> Result<(Vec<Experiment>, Vec<Warning>), CatalogError> {
        let base = self.root.join("experiments");
        let entries = std::fs::read_dir(&base).map_err(|source| CatalogError::Io {
            path: base.clone(),
            what: "cannot list",
            source,
        })?;
        let dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        use rayon::prelude::*;
        let results: Vec<Result<Experiment, Warning>> = dirs
            .par_iter()
            .map(|dir| {
                let path = dir.join(EXPERIMENT_FILE);
                match read_record::<ExperimentRecord>(&path, "cohort.experiment") {
                    Ok(record) => Ok(Experiment {
                        record,
                        dir: dir.clone(),
                    }),
                    Err(CatalogError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Err(Warning {
                            path: dir.clone(),
                            problem:
                                "no experiment.json (being created, or not an experiment); skipped"
                                    .into(),
                        })
                    }
                    Err(e) => Err(Warning {
                        path: path.clone(),
                        problem: format!("{}; skipped", strip_path(&e, &path)),
                    }),
                }
            })
            .collect();
        let mut experiments = Vec::new();
        let mut warnings = Vec::new();
        for result in results {
            match result {
                Ok(e) => experiments.push(e),
                Err(w) => warnings.push(w),
            }
        }
        experiments.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok((experiments, warnings))
    }

    /// Creates a trial: takes the next free number by `mkdir`, then publishes its record and
    /// (if `state` is given) its first state ([`Catalog::create_trials`] of one).
    pub fn create_trial(
        &self,
        experiment: &Experiment,
        hparams: BTreeMap<String, serde_json::Value>,
        command: Vec<String>,
        state: Option<TrialState>,
    ) -> Result<TrialRef, CatalogError> {
        let mut created = self.create_trials(experiment, vec![(hparams, command)], state)?;
        created.pop().ok_or_else(|| CatalogError::Malformed {
            path: experiment.trials_dir(),
            problem: "no trial was created".into(),
        })
    }

    /// Creates several trials at once, each with its hyperparameters and command, all with the
    /// first state `state` when given: numbers are taken one after the other by `mkdir`, then
    /// the records of all (`trial.json` published once, `state.json` replaced) are written and
    /// made durable together (`fsutil`'s batch), which costs about one disk wait instead of one
    /// per file. A search's controller creates a round's new trials this way.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Io`] naming the directory or file that cannot be created or written.
    /// Numbers taken before an error stay taken (a directory without records is not a trial:
    /// readers skip it, and later trials step over it).
    pub fn create_trials(
        &self,
        experiment: &Experiment,
        trials: Vec<(BTreeMap<String, serde_json::Value>, Vec<String>)>,
        state: Option<TrialState>,
    ) -> Result<Vec<TrialRef>, CatalogError> {
        if trials.is_empty() {
            return Ok(Vec::new());
        }
        let dir = experiment.trials_dir();
        fsutil::mkdir_if_absent(&dir)?;
        let mut id = self.first_free_hint(&dir);
        let mut files = Vec::with_capacity(trials.len() * 2);
        let mut refs = Vec::with_capacity(trials.len());
        let created = fsutil::now();
        let writer = fsutil::writer();
        for (hparams, command) in trials {
            let trial_dir = loop {
                let trial_dir = dir.join(trial_dir_name(id));
                if fsutil::mkdir_if_absent(&trial_dir)? {
                    break trial_dir;
                }
                id += 1;
            };
            self.note_last_trial(&dir, id);
            let record = TrialRecord {
                format: "cohort.trial".into(),
                version: CATALOG_VERSION,
                experiment: experiment.record.name.clone(),
                id,
                hparams,
                created,
                created_by: writer.clone(),
                command,
            };
            files.push((
                trial_dir.join(TRIAL_FILE),
                to_json(&record),
                fsutil::Put::New,
            ));
            if let Some(state) = state {
                let mut record = new_state(state);
                if state == TrialState::Queued {
                    record.queued = Some(record.updated);
                }
                files.push((
                    state_path(&trial_dir),
                    to_json(&record),
                    fsutil::Put::Replace,
                ));
            }
            refs.push(TrialRef {
                experiment: experiment.record.name.clone(),
                id,
                dir: trial_dir,
            });
            id += 1;
        }
        fsutil::publish_batch(&files)?;
        Ok(refs)
    }

    /// Where to look for a free trial number in `trials`: after the last this process took,
    /// else after as many as the directory holds (listed once per process, so creating N
    /// trials costs N, not N^2). Other writers' trials are stepped over by `mkdir`.
    fn first_free_hint(&self, trials: &Path) -> u64 {
        let hint = LAST_TRIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(trials)
            .copied();
        match hint {
            Some(last) => last + 1,
            None => {
                std::fs::read_dir(trials)
                    .map(|entries| entries.count() as u64)
                    .unwrap_or(0)
                    + 1
            }
        }
    }

    /// Notes that this process took trial number `id` in `trials`.
    fn note_last_trial(&self, trials: &Path, id: u64) {
        LAST_TRIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(trials.to_path_buf(), id);
    }

    /// The trial `id` of `experiment`.
    pub fn trial(&self, experiment: &Experiment, id: u64) -> Result<TrialRef, CatalogError> {
        let dir = experiment.trial_dir(id);
        if !dir.join(TRIAL_FILE).exists() {
            return Err(CatalogError::NoTrial {
                experiment: experiment.record.name.clone(),
                id,
            });
        }
        Ok(TrialRef {
            experiment: experiment.record.name.clone(),
            id,
            dir,
        })
    }

    /// The trials of `experiment` whose record can be read, by number, with their records;
    /// a directory without a readable `trial.json` is left out.
    pub fn trial_records(&self, experiment: &Experiment) -> Vec<(TrialRef, TrialRecord)> {
        let Ok(entries) = std::fs::read_dir(experiment.trials_dir()) else {
            return Vec::new();
        };
        let mut found: Vec<(TrialRef, TrialRecord)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let id: u64 = entry.file_name().to_str()?.parse().ok()?;
                let dir = entry.path();
                let record = read_trial_record(&dir).ok()?;
                Some((
                    TrialRef {
                        experiment: experiment.record.name.clone(),
                        id,
                        dir,
                    },
                    record,
                ))
            })
            .collect();
        found.sort_by_key(|(trial, _)| trial.id);
        found
    }

    /// Notes that Slurm step `job.step` is trial `id`, so the step's other nodes can find it.
    /// Returns the trial noted first when another process was first.
    pub fn note_slurm_trial(
        &self,
        experiment: &Experiment,
        job: u32,
        step: u32,
        id: u64,
    ) -> Result<u64, CatalogError> {
        let marker = slurm_marker(experiment, job, step);
        if let Some(dir) = marker.parent() {
            fsutil::mkdir_if_absent(dir)?;
        }
        let record = SlurmStepRecord {
            format: "cohort.slurm-step".into(),
            version: CATALOG_VERSION,
            trial: id,
        };
        fsutil::publish_new(&marker, &to_json(&record))?;
        self.slurm_trial(experiment, job, step)?
            .ok_or_else(|| CatalogError::Malformed {
                path: marker,
                problem: "vanished right after it was written".into(),
            })
    }

    /// The trial that Slurm step `job.step` records into, if one was noted.
    pub fn slurm_trial(
        &self,
        experiment: &Experiment,
        job: u32,
        step: u32,
    ) -> Result<Option<u64>, CatalogError> {
        let marker = slurm_marker(experiment, job, step);
        let bytes = match std::fs::read(&marker) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CatalogError::Io {
                    path: marker,
                    what: "cannot read",
                    source,
                })
            }
        };
        let record: SlurmStepRecord = parse_record(&marker, &bytes, "cohort.slurm-step")?;
        Ok(Some(record.trial))
    }

    /// Where the index of `experiment` is kept.
    pub fn index_path(&self, experiment: &Experiment) -> PathBuf {
        let name = experiment
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.root.join("index").join(format!("{name}.json"))
    }
}

/// The text of an error without its leading path (for warnings that name the path already).
pub(crate) fn strip_path(err: &CatalogError, path: &Path) -> String {
    let text = err.to_string();
    let prefix = format!("{}: ", path.display());
    text.strip_prefix(&prefix)
        .map_or(text.clone(), str::to_owned)
}

/// A fresh state record of `state`, written by this process now.
pub fn new_state(state: TrialState) -> StateRecord {
    let now = fsutil::now();
    StateRecord {
        format: "cohort.trial-state".into(),
        version: CATALOG_VERSION,
        state,
        queued: None,
        started: (state == TrialState::Running).then_some(now),
        ended: state.is_final().then_some(now),
        slurm_job: None,
        slurm_step: None,
        slurm_launch: None,
        slurm_array: None,
        nodes: Vec::new(),
        exit_status: None,
        exit_signal: None,
        message: None,
        restarts: Vec::new(),
        requeues: 0,
        writer: fsutil::writer(),
        updated: now,
    }
}

/// Reads a trial's record (`trial.json`): what the trial is.
pub fn read_trial_record(trial_dir: &Path) -> Result<TrialRecord, CatalogError> {
    read_record(&trial_dir.join(TRIAL_FILE), "cohort.trial")
}

/// Where a trial's record is (`trial.json`), for a reader that reports on it.
pub(crate) fn trial_record_path(trial_dir: &Path) -> PathBuf {
    trial_dir.join(TRIAL_FILE)
}

/// Where a trial's state is (`state.json`), for a reader that reports on it.
pub(crate) fn state_path(trial_dir: &Path) -> PathBuf {
    trial_dir.join(STATE_FILE)
}

/// Where the output of a trial that a local search runs goes (`output.log`, appended by the
/// trial's one run at a time).
pub fn output_log(trial_dir: &Path) -> PathBuf {
    trial_dir.join(OUTPUT_LOG)
}

/// Where Slurm writes the output of a trial's job: sbatch's `--output` pattern (`%j` is the
/// job id).
pub fn slurm_output_pattern(trial_dir: &Path) -> PathBuf {
    trial_dir.join("slurm-%j.out")
}

/// Where Slurm wrote the output of the trial's job `job` (see [`slurm_output_pattern`]).
pub fn slurm_output(trial_dir: &Path, job: u32) -> PathBuf {
    trial_dir.join(format!("slurm-{job}.out"))
}

/// Asks the trial to checkpoint and stop: creates its `stop` file if absent. Returns whether
/// this call created it.
pub fn request_stop(trial_dir: &Path) -> Result<bool, CatalogError> {
    fsutil::publish_new(&trial_dir.join(STOP_FILE), b"")
}

/// Withdraws a request to stop, before the trial runs again. Best effort: a request that
/// cannot be removed is left for the trial to see.
pub fn clear_stop(trial_dir: &Path) {
    let _ = std::fs::remove_file(trial_dir.join(STOP_FILE));
}

/// Reads a trial's state, if it has one, with its Slurm step's end records merged in: a
/// launch with a stop record ([`record_step_stop`]) is `preempted`, else one with a failure
/// record ([`record_step_failure`]) is `failed`, whatever `state.json` says.
pub fn read_state(trial_dir: &Path) -> Result<Option<StateRecord>, CatalogError> {
    let path = state_path(trial_dir);
    let mut state: StateRecord = match std::fs::read(&path) {
        Ok(bytes) => parse_record(&path, &bytes, "cohort.trial-state")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CatalogError::Io {
                path,
                what: "cannot read",
                source,
            })
        }
    };
    if let (
        Some(job),
        Some(step),
        TrialState::Running | TrialState::Completed | TrialState::Preempted,
    ) = (&state.slurm_job, &state.slurm_step, state.state)
    {
        let launch = state.slurm_launch.unwrap_or(0);
        // A task Slurm stopped (a preemption, a cancel, the time limit) explains the failures
        // that follow it on other ranks, whose peers vanished: the launch was preempted.
        // Otherwise a failed task makes the launch failed, whatever another node wrote.
        let stopped = step_end_record(&stop_path(trial_dir, job, step, launch), STEP_STOP)?;
        let failed = step_end_record(&failure_path(trial_dir, job, step, launch), STEP_FAILURE)?;
        if let Some(stop) = stopped {
            if state.state != TrialState::Preempted {
                state.state = TrialState::Preempted;
                state.message = Some(stop.message);
            }
            state.ended = state.ended.or(Some(stop.at));
            state.exit_status = stop.exit_status;
            state.exit_signal = stop.exit_signal;
        } else if let Some(failure) = failed {
            state.state = TrialState::Failed;
            state.ended = state.ended.or(Some(failure.at));
            state.exit_status = failure.exit_status;
            state.exit_signal = failure.exit_signal;
            state.message = Some(failure.message);
        }
    }
    Ok(Some(state))
}

const STEP_FAILURE: &str = "cohort.step-failure";
const STEP_STOP: &str = "cohort.step-stop";

/// Reads one of a step's end records, if it exists.
fn step_end_record(path: &Path, format: &str) -> Result<Option<StepFailure>, CatalogError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(parse_record(path, &bytes, format)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CatalogError::Io {
            path: path.to_path_buf(),
            what: "cannot read",
            source,
        }),
    }
}

/// Where the failure record of a trial's Slurm step `job.step`, launch `launch`, is.
fn failure_path(trial_dir: &Path, job: &str, step: &str, launch: u32) -> PathBuf {
    trial_dir.join(format!("failed-{job}.{step}.{launch}.json"))
}

/// Where the record of the first task Slurm stopped in step `job.step`, launch `launch`, is.
fn stop_path(trial_dir: &Path, job: &str, step: &str, launch: u32) -> PathBuf {
    trial_dir.join(format!("stopped-{job}.{step}.{launch}.json"))
}

/// Records that a task of a Slurm step failed, in a file of its own created if absent, so
/// that nodes recording at the same time never overwrite each other and the first failure
/// stays; [`read_state`] merges it. Returns whether this call recorded it (false: an earlier
/// failure of the step is there). `owner` (uid, gid) gets the file when given (a privileged
/// writer on behalf of the trial's owner).
pub fn record_step_failure(
    trial_dir: &Path,
    failure: &StepFailure,
    owner: Option<(u32, u32)>,
) -> Result<bool, CatalogError> {
    let path = failure_path(trial_dir, &failure.job, &failure.step, failure.launch);
    publish_step_end(&path, STEP_FAILURE, failure, owner)
}

/// Records that Slurm stopped a task of a Slurm step (it was ended by SIGTERM, or exited
/// with one of [`cohort_proto::catalog::exit`]'s statuses after a warning), as
/// [`record_step_failure`] records a failure: created if absent, first wins. [`read_state`]
/// then shows the launch as `preempted`, even where other ranks failed after it.
pub fn record_step_stop(
    trial_dir: &Path,
    stop: &StepFailure,
    owner: Option<(u32, u32)>,
) -> Result<bool, CatalogError> {
    let path = stop_path(trial_dir, &stop.job, &stop.step, stop.launch);
    publish_step_end(&path, STEP_STOP, stop, owner)
}

/// Writes a step's end record at `path` in `format`, if no record is there yet.
fn publish_step_end(
    path: &Path,
    format: &str,
    end: &StepFailure,
    owner: Option<(u32, u32)>,
) -> Result<bool, CatalogError> {
    let record = StepFailure {
        format: format.into(),
        ..end.clone()
    };
    fsutil::publish_new_owned(path, &to_json(&record), owner)
}

/// Replaces a trial's state (atomically: readers see the old or the new one).
pub fn write_state(trial_dir: &Path, state: &StateRecord) -> Result<(), CatalogError> {
    write_state_owned(trial_dir, state, None)
}

/// [`write_state`] by a privileged process on behalf of the trial's owner: the new file
/// belongs to `owner` (uid, gid).
pub fn write_state_owned(
    trial_dir: &Path,
    state: &StateRecord,
    owner: Option<(u32, u32)>,
) -> Result<(), CatalogError> {
    let mut state = state.clone();
    state.updated = fsutil::now();
    state.writer = fsutil::writer();
    fsutil::replace_owned(&state_path(trial_dir), &to_json(&state), owner)
}

/// Where the trial of Slurm step `job.step` is noted (see [`Catalog::slurm_trial`]).
fn slurm_marker(experiment: &Experiment, job: u32, step: u32) -> PathBuf {
    experiment
        .dir
        .join("slurm")
        .join(format!("{job}.{step}.json"))
}

/// Changes a trial's state, keeping what the current record knows (timestamps, Slurm ids,
/// restarts).
pub fn update_state(
    trial_dir: &Path,
    change: impl FnOnce(&mut StateRecord),
) -> Result<StateRecord, CatalogError> {
    let mut state = read_state(trial_dir)?.unwrap_or_else(|| new_state(TrialState::Queued));
    change(&mut state);
    write_state(trial_dir, &state)?;
    Ok(state)
}

/// [`update_state`] of several trials at once, `change` given each trial's item: the new
/// states are made durable together (`fsutil`'s batch), about one disk wait for all. A trial
/// whose state cannot be read is left out and named in the error, after the others are
/// written.
///
/// # Errors
///
/// The first error, naming its file.
pub fn update_states<T>(
    trials: Vec<(PathBuf, T)>,
    change: impl Fn(&T, &mut StateRecord),
) -> Result<(), CatalogError> {
    let mut files = Vec::with_capacity(trials.len());
    let mut first_error = None;
    let writer = fsutil::writer();
    for (dir, item) in trials {
        match read_state(&dir) {
            Ok(found) => {
                let mut state = found.unwrap_or_else(|| new_state(TrialState::Queued));
                change(&item, &mut state);
                state.updated = fsutil::now();
                state.writer = writer.clone();
                files.push((state_path(&dir), to_json(&state), fsutil::Put::Replace));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    fsutil::publish_batch(&files)?;
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiment_dirs_are_stable_readable_and_distinct() {
        assert_eq!(experiment_dir_name("mlp"), experiment_dir_name("mlp"));
        assert!(experiment_dir_name("mlp").starts_with("mlp-"));
        assert_ne!(experiment_dir_name("a b"), experiment_dir_name("a_b"));
        assert!(!experiment_dir_name("../x").contains('/'));
        assert!(!experiment_dir_name("..").starts_with('.'));
    }

    #[test]
    fn creating_an_experiment_twice_returns_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open_or_create(dir.path().join("cat")).unwrap();
        let spec = NewExperiment {
            name: "exp one".into(),
            description: Some("first".into()),
            ..NewExperiment::default()
        };
        let (first, created) = catalog.create_experiment(&spec).unwrap();
        assert!(created);
        let again = NewExperiment {
            description: Some("second".into()),
            ..spec
        };
        let (second, created) = catalog.create_experiment(&again).unwrap();
        assert!(!created);
        assert_eq!(second.record, first.record);
        assert_eq!(
            catalog
                .experiment("exp one")
                .unwrap()
                .record
                .description
                .as_deref(),
            Some("first")
        );
        assert!(matches!(
            catalog.experiment("other"),
            Err(CatalogError::NoExperiment { .. })
        ));
    }

    #[test]
    fn trials_take_consecutive_numbers_and_states_replace() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open_or_create(dir.path()).unwrap();
        let (exp, _) = catalog
            .create_experiment(&NewExperiment {
                name: "e".into(),
                ..NewExperiment::default()
            })
            .unwrap();
        let a = catalog
            .create_trial(&exp, BTreeMap::new(), vec![], Some(TrialState::Queued))
            .unwrap();
        let b = catalog
            .create_trial(&exp, BTreeMap::new(), vec![], None)
            .unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        assert_eq!(read_state(&b.dir).unwrap(), None);
        let state = read_state(&a.dir).unwrap().unwrap();
        assert_eq!(state.state, TrialState::Queued);
        assert!(state.queued.is_some());
        update_state(&a.dir, |s| {
            s.state = TrialState::Failed;
            s.exit_status = Some(3);
        })
        .unwrap();
        let state = read_state(&a.dir).unwrap().unwrap();
        assert_eq!(
            (state.state, state.exit_status),
            (TrialState::Failed, Some(3))
        );
        assert!(state.queued.is_some());
    }

    #[test]
    fn trials_created_together_are_whole_and_numbered_among_others() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open_or_create(dir.path()).unwrap();
        let (exp, _) = catalog
            .create_experiment(&NewExperiment {
                name: "batch".into(),
                ..NewExperiment::default()
            })
            .unwrap();
        // Another writer took number 3 already: the batch starts after as many trials as the
        // directory holds, and steps over 3.
        std::fs::create_dir_all(exp.trial_dir(3)).unwrap();
        let hparams = |i: i64| -> BTreeMap<String, serde_json::Value> {
            [("i".to_owned(), serde_json::json!(i))].into()
        };
        let made = catalog
            .create_trials(
                &exp,
                (0..5)
                    .map(|i| (hparams(i), vec!["run".to_owned()]))
                    .collect(),
                Some(TrialState::Queued),
            )
            .unwrap();
        let ids: Vec<u64> = made.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![2, 4, 5, 6, 7]);
        for (i, trial) in made.iter().enumerate() {
            let record = read_trial_record(&trial.dir).unwrap();
            assert_eq!(record.id, trial.id);
            assert_eq!(record.hparams, hparams(i64::try_from(i).unwrap()));
            assert_eq!(record.command, vec!["run".to_owned()]);
            let state = read_state(&trial.dir).unwrap().unwrap();
            assert_eq!(state.state, TrialState::Queued);
            assert!(state.queued.is_some());
            let leftovers: Vec<_> = std::fs::read_dir(&trial.dir)
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }
        let next = catalog
            .create_trial(&exp, BTreeMap::new(), vec![], None)
            .unwrap();
        assert_eq!(next.id, 8);
        assert!(catalog
            .create_trials(&exp, Vec::new(), None)
            .unwrap()
            .is_empty());

        // Their states changed together, each with its own item.
        update_states(
            made.iter().map(|t| (t.dir.clone(), t.id)).collect(),
            |id, s| {
                s.state = TrialState::Killed;
                s.message = Some(format!("stopped {id}"));
            },
        )
        .unwrap();
        for trial in &made {
            let state = read_state(&trial.dir).unwrap().unwrap();
            assert_eq!(state.state, TrialState::Killed);
            assert_eq!(state.message, Some(format!("stopped {}", trial.id)));
            assert!(state.queued.is_some(), "the rest of the record is kept");
        }
        // A trial whose state cannot be read is named; the others are still written.
        std::fs::write(state_path(&made[0].dir), "{ torn").unwrap();
        let err = update_states(
            made.iter().map(|t| (t.dir.clone(), ())).collect(),
            |(), s| s.state = TrialState::Completed,
        )
        .unwrap_err();
        assert!(err.to_string().contains("state.json"), "{err}");
        assert_eq!(
            read_state(&made[1].dir).unwrap().unwrap().state,
            TrialState::Completed
        );
    }

    #[test]
    fn a_steps_failure_record_fails_its_launch_only() {
        let dir = tempfile::tempdir().unwrap();
        let trial = dir.path();
        let mut state = new_state(TrialState::Completed);
        state.slurm_job = Some("42".into());
        state.slurm_step = Some("0".into());
        state.slurm_launch = Some(1);
        write_state(trial, &state).unwrap();
        let failure = |launch: u32, rank: u32| StepFailure {
            format: "cohort.step-failure".into(),
            version: CATALOG_VERSION,
            job: "42".into(),
            step: "0".into(),
            launch,
            rank,
            node: "node2".into(),
            exit_status: None,
            exit_signal: Some("SIGTERM".into()),
            message: format!("rank {rank} on node2 was killed by SIGTERM"),
            at: 1.0,
        };
        // The first launch's failure (before a requeue) does not fail the second launch.
        assert!(record_step_failure(trial, &failure(0, 1), None).unwrap());
        assert_eq!(
            read_state(trial).unwrap().unwrap().state,
            TrialState::Completed
        );
        // The second launch's does, and the first recorded stays.
        assert!(record_step_failure(trial, &failure(1, 3), None).unwrap());
        assert!(!record_step_failure(trial, &failure(1, 0), None).unwrap());
        let merged = read_state(trial).unwrap().unwrap();
        assert_eq!(merged.state, TrialState::Failed);
        assert_eq!(merged.exit_signal.as_deref(), Some("SIGTERM"));
        assert_eq!(
            merged.message.as_deref(),
            Some("rank 3 on node2 was killed by SIGTERM")
        );
        // A damaged failure record is an error naming it, not a silent success.
        std::fs::write(trial.join("failed-42.0.1.json"), b"{").unwrap();
        let e = read_state(trial).unwrap_err();
        assert!(e.to_string().contains("failed-42.0.1.json"), "{e}");
    }

    #[test]
    fn a_task_slurm_stopped_makes_its_launch_preempted_over_the_failures_it_caused() {
        let dir = tempfile::tempdir().unwrap();
        let trial = dir.path();
        let mut state = new_state(TrialState::Running);
        state.slurm_job = Some("7".into());
        state.slurm_step = Some("0".into());
        state.slurm_launch = Some(0);
        write_state(trial, &state).unwrap();
        let end =
            |rank: u32, status: Option<i32>, signal: Option<&str>, message: &str| StepFailure {
                format: String::new(),
                version: CATALOG_VERSION,
                job: "7".into(),
                step: "0".into(),
                launch: 0,
                rank,
                node: "node1".into(),
                exit_status: status,
                exit_signal: signal.map(str::to_owned),
                message: message.into(),
                at: 2.0,
            };
        // Rank 1 fails because rank 0 vanished; rank 0 was ended by Slurm's SIGTERM.
        record_step_failure(
            trial,
            &end(1, Some(1), None, "rank 1 exited with status 1"),
            None,
        )
        .unwrap();
        assert_eq!(
            read_state(trial).unwrap().unwrap().state,
            TrialState::Failed
        );
        record_step_stop(
            trial,
            &end(0, None, Some("SIGTERM"), "rank 0 stopped by SIGTERM"),
            None,
        )
        .unwrap();
        let merged = read_state(trial).unwrap().unwrap();
        assert_eq!(merged.state, TrialState::Preempted);
        assert_eq!(merged.message.as_deref(), Some("rank 0 stopped by SIGTERM"));
        // The worker's own account (its tracker wrote `preempted` with the step) is kept.
        update_state(trial, |s| {
            s.state = TrialState::Preempted;
            s.message = Some("stopped at step 40".into());
        })
        .unwrap();
        let merged = read_state(trial).unwrap().unwrap();
        assert_eq!(merged.message.as_deref(), Some("stopped at step 40"));
        // A stop record's format is checked like any record's.
        std::fs::write(
            trial.join("stopped-7.0.0.json"),
            br#"{"format":"cohort.step-failure"}"#,
        )
        .unwrap();
        let e = read_state(trial).unwrap_err();
        assert!(e.to_string().contains("stopped-7.0.0.json"), "{e}");
    }

    #[test]
    fn records_of_another_version_or_format_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.json");
        std::fs::write(
            &path,
            br#"{"format":"cohort.catalog","version":9,"created":0}"#,
        )
        .unwrap();
        let err = Catalog::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("catalog.json") && err.contains("version 9"),
            "{err}"
        );
        std::fs::write(&path, b"{\"format\":\"other\"}").unwrap();
        let err = Catalog::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("format \"other\""), "{err}");
        std::fs::write(&path, b"\x00\x01garbage").unwrap();
        let err = Catalog::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }
}
