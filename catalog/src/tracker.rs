//! Tracking from workers: metrics, hyperparameters, checkpoints and the trial's end, written
//! by one process into its own log segment.
//!
//! Points are encoded into a buffer of bounded size; the buffer goes to the file when it is
//! full and at least every second (a background thread), and the file is fsynced every
//! `fsync_interval` and at [`Tracker::finish`]. Only rank 0 writes unless told otherwise.
//! Nothing here panics on I/O: the first write error is kept and returned by the next call.

use cohort_proto::env as vars;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cohort_proto::catalog::{Checkpoint, LogEvent, SegmentHeader, TrialState, CATALOG_VERSION};

use crate::catalog::{update_state, Catalog, NewExperiment, TrialRef};
use crate::error::CatalogError;
use crate::fsutil;
use crate::log::{names_payload, push_frame, Kind, PointsBuilder};

/// How a tracker buffers and syncs.
#[derive(Debug, Clone)]
pub struct TrackerOptions {
    /// Most bytes buffered before they are written.
    pub buffer_bytes: usize,
    /// How often buffered points are written even when the buffer is not full.
    pub flush_interval: Duration,
    /// How often the log is fsynced (and always at `finish`).
    pub fsync_interval: Duration,
    /// Whether this tracker writes the trial's state (running at start, the final state at
    /// `finish`): true when it created the trial; false when a launcher (`cohort run`, the
    /// Slurm plugin, the search controller) owns the state.
    pub owns_state: bool,
    /// The rank writing, recorded in the segment header.
    pub rank: u32,
    /// Append to this host's shared segment (`metrics-host-<HOST>.clog`) under an exclusive
    /// `flock` instead of creating a new segment: for short-lived writers such as `cohort log
    /// metric`, which would otherwise leave one file per call. Only processes of one host
    /// write that file.
    pub host_segment: bool,
}

impl Default for TrackerOptions {
    fn default() -> Self {
        TrackerOptions {
            buffer_bytes: 1 << 20,
            flush_interval: Duration::from_secs(1),
            fsync_interval: Duration::from_secs(10),
            owns_state: false,
            rank: 0,
            host_segment: false,
        }
    }
}

/// Payload size at which a points record is sealed.
const RECORD_BYTES: usize = 64 << 10;

/// Payload size at which a names record written again is cut (a frame holds at most 1 MiB).
const NAMES_FRAME_BYTES: usize = 256 << 10;

struct Inner {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    points: PointsBuilder,
    ids: HashMap<String, u32>,
    /// The names of the previous `log_metrics` call and their ids: training loops log the
    /// same names every step, so this avoids hashing.
    recent: Vec<(String, u32)>,
    error: Option<CatalogError>,
    dropped: u64,
    /// Ids `0..names_in_file` are defined in the file by earlier writes.
    names_in_file: usize,
    /// Ids defined in buffers already written or lost; the buffer defines those after.
    names_before_buf: usize,
    last_sync: Instant,
    unsynced: bool,
    options: TrackerOptions,
}

impl Inner {
    fn seal(&mut self) {
        self.points.seal_into(&mut self.buf);
    }

    fn write_out(&mut self) {
        self.seal();
        if self.buf.is_empty() {
            return;
        }
        if self.error.is_none() {
            // Each write carries the names its points use when the file may lack them: a
            // shared host segment, where other processes define their own ids between our
            // writes, or after a write that failed with names in it.
            let known = if self.options.host_segment {
                0
            } else {
                self.names_in_file
            };
            let mut out = self.names_from(known);
            let bytes = if out.is_empty() {
                &self.buf
            } else {
                out.extend_from_slice(&self.buf);
                &out
            };
            let written = if self.options.host_segment {
                // Other processes of this host append to the same file: one locked write.
                self.file
                    .try_clone()
                    .and_then(|clone| {
                        nix::fcntl::Flock::lock(clone, nix::fcntl::FlockArg::LockExclusive)
                            .map_err(|(_, errno)| std::io::Error::from(errno))
                    })
                    .and_then(|mut locked| locked.write_all(bytes))
            } else {
                self.file.write_all(bytes)
            };
            match written {
                Ok(()) => {
                    self.unsynced = true;
                    self.names_in_file = self.ids.len();
                }
                Err(source) => {
                    self.error = Some(CatalogError::Io {
                        path: self.path.clone(),
                        what: "cannot write metrics",
                        source,
                    });
                }
            }
        }
        if self.error.is_some() {
            self.dropped += 1;
        }
        self.buf.clear();
        self.names_before_buf = self.ids.len();
    }

    /// Names frames that define ids `from..names_before_buf` again (nothing when that range
    /// is empty).
    fn names_from(&self, from: usize) -> Vec<u8> {
        let mut out = Vec::new();
        if from >= self.names_before_buf {
            return out;
        }
        let mut by_id: Vec<(u32, &str)> = self
            .ids
            .iter()
            .map(|(name, id)| (*id, name.as_str()))
            .filter(|(id, _)| (from..self.names_before_buf).contains(&(*id as usize)))
            .collect();
        by_id.sort_unstable();
        // Several frames when there are many names, each well within a frame's size limit.
        let mut first = from;
        let mut names: Vec<&str> = Vec::new();
        let mut bytes = 0;
        for (i, (_, name)) in by_id.iter().enumerate() {
            names.push(name);
            bytes += name.len() + 2;
            if i + 1 == by_id.len() || bytes >= NAMES_FRAME_BYTES || names.len() == 4096 {
                let first_id = u32::try_from(first).unwrap_or(u32::MAX);
                push_frame(&mut out, Kind::Names, &names_payload(first_id, &names));
                first += names.len();
                names.clear();
                bytes = 0;
            }
        }
        out
    }

    fn sync(&mut self) {
        self.write_out();
        if self.unsynced && self.error.is_none() {
            if let Err(source) = self.file.sync_data() {
                self.error = Some(CatalogError::Io {
                    path: self.path.clone(),
                    what: "cannot sync metrics",
                    source,
                });
            }
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
    }

    fn maybe_write(&mut self) {
        if self.points.len() >= RECORD_BYTES {
            self.seal();
        }
        if self.buf.len() >= self.options.buffer_bytes {
            self.write_out();
        }
    }

    fn check(&mut self) -> Result<(), CatalogError> {
        match self.error.take() {
            None => Ok(()),
            Some(CatalogError::Io { path, what, source }) => {
                let dropped = self.dropped;
                // Report once, then try again (space may have been freed).
                self.dropped = 0;
                Err(CatalogError::Io {
                    path,
                    what,
                    source: std::io::Error::new(
                        source.kind(),
                        format!("{source}; {dropped} buffered record batch(es) were lost"),
                    ),
                })
            }
            Some(other) => Err(other),
        }
    }

    fn event(&mut self, event: &LogEvent) {
        self.seal();
        let payload = serde_json::to_vec(event).unwrap_or_default();
        push_frame(&mut self.buf, Kind::Event, &payload);
    }
}

/// Writes one trial's metrics, hyperparameters and checkpoints. Cheap to call every step.
#[derive(Debug)]
pub struct Tracker {
    shared: Option<Arc<Mutex<Inner>>>,
    stop: Option<Sender<()>>,
    flusher: Option<JoinHandle<()>>,
    trial: Option<TrialRef>,
    owns_state: bool,
    finished: bool,
    /// The length a search gave this run of the trial (`COHORT_SEARCH_UNTIL`).
    until: Option<i64>,
    /// On a rank that does not write: the directory of the run's trial, read for its
    /// hyperparameters, checkpoints and stop requests, so that every rank answers alike.
    follows: Option<PathBuf>,
    /// What decides when to stop.
    stopping: Mutex<Stopping>,
}

/// Why a worker is asked to stop, least urgent first: ranks that saw different reasons agree
/// on the most urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopReason {
    /// The run reached the length its search gave it (`COHORT_SEARCH_UNTIL`).
    Length = 1,
    /// The search, or `cohort search stop`, asked its trial to stop.
    Asked = 2,
    /// Slurm's stop signal: the time limit (or a preemption) is near.
    Warning = 3,
    /// SIGTERM: Slurm is ending the job (preempted, requeued, cancelled, out of time).
    Terminated = 4,
}

impl StopReason {
    fn from_code(code: u8) -> Option<StopReason> {
        match code {
            0 => None,
            1 => Some(StopReason::Length),
            2 => Some(StopReason::Asked),
            3 => Some(StopReason::Warning),
            _ => Some(StopReason::Terminated),
        }
    }

    /// Whether the cluster asked for it (the run goes on in a later launch).
    pub fn is_warning(self) -> bool {
        matches!(self, StopReason::Warning | StopReason::Terminated)
    }
}

/// How the ranks of a job agree: each gives its code, every one gets the largest (an
/// allreduce with MAX of one byte).
type Agreement = Box<dyn Fn(u8) -> Result<u8, String> + Send + Sync>;

/// What decides when to stop: the reasons seen here, and the agreement among the ranks.
#[derive(Default)]
struct Stopping {
    /// When the stop file was last looked for, and whether it was there.
    file_seen: (Option<Instant>, bool),
    /// How the ranks agree, once given.
    agree: Option<Agreement>,
    /// The last step decided, and what was decided.
    decided: Option<(i64, Option<StopReason>)>,
    /// The step the ranks stopped at, and why: once stopped, stays stopped.
    stopped: Option<(i64, StopReason)>,
}

impl std::fmt::Debug for Stopping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopping")
            .field("agreed", &self.agree.is_some())
            .field("decided", &self.decided)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

pub use crate::catalog::STOP_FILE;

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("path", &self.path).finish()
    }
}

fn lock(shared: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock leaves plain buffers behind; keep using them.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Creates the next free segment file of a trial.
fn new_segment(dir: &Path) -> Result<(File, PathBuf), CatalogError> {
    let existing = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| crate::read::is_segment(&e.file_name().to_string_lossy()))
                .count()
        })
        .unwrap_or(0);
    let mut n = existing + 1;
    loop {
        let path = dir.join(format!("metrics-{n:04}.clog"));
        match OpenOptions::new().append(true).create_new(true).open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(source) => {
                return Err(CatalogError::Io {
                    path,
                    what: "cannot create the metrics log",
                    source,
                })
            }
        }
    }
}

/// The longest metric name, in bytes.
pub const MAX_METRIC_NAME: usize = 256;

/// Whether the catalog takes `name` as a metric name: not empty, at most
/// [`MAX_METRIC_NAME`] bytes, no control characters (they would break every table and CSV
/// the name appears in). Any other UTF-8 is fine (`loss`, `val/acc`, `ppl@1k`).
pub fn check_metric_name(name: &str) -> Result<(), CatalogError> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_METRIC_NAME {
        "is longer than 256 bytes"
    } else if name.chars().any(char::is_control) {
        "has a control character"
    } else {
        return Ok(());
    };
    Err(CatalogError::BadMetricName {
        name: name.chars().take(80).collect(),
        problem,
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// This process's rank as launchers give it: `COHORT_RANK`, else torch's `RANK`, else 0.
pub fn launcher_rank() -> u32 {
    env(vars::RANK)
        .or_else(|| env(vars::torch::RANK))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or(0)
}

/// The directory of the trial a launcher recorded this run into (`COHORT_TRIAL` of
/// `COHORT_EXPERIMENT` in the default catalog), when there is one and it can be found.
/// Under Slurm without `COHORT_TRIAL`, the trial the plugin noted for the job's step.
fn launched_trial_dir() -> Option<PathBuf> {
    let catalog = Catalog::open(crate::default_root().ok()?).ok()?;
    let experiment = catalog.experiment(&env(vars::EXPERIMENT)?).ok()?;
    let id: u64 = match env(vars::TRIAL) {
        Some(text) => text.parse().ok()?,
        None => {
            let job = env("SLURM_JOB_ID")?.parse().ok()?;
            let step = env("SLURM_STEP_ID")?.parse().ok()?;
            catalog.slurm_trial(&experiment, job, step).ok()??
        }
    };
    Some(experiment.trial_dir(id))
}

impl Tracker {
    /// A tracker that records nothing (ranks other than 0).
    pub fn disabled() -> Tracker {
        Tracker {
            shared: None,
            stop: None,
            flusher: None,
            trial: None,
            owns_state: false,
            finished: true,
            until: None,
            follows: None,
            stopping: Mutex::new(Stopping::default()),
        }
    }

    /// A tracker that records nothing but reads the run's trial at `trial_dir` (when known)
    /// and the search's length from `COHORT_SEARCH_UNTIL`: what ranks other than 0 get, so
    /// that [`Tracker::hparams`], [`Tracker::latest_checkpoint`] and
    /// [`Tracker::should_stop`] answer on every rank as on rank 0. [`Tracker::trial`] stays
    /// `None`: such a rank writes nothing, checkpoints included.
    pub fn follower(trial_dir: Option<PathBuf>) -> Tracker {
        let mut tracker = Tracker::disabled();
        tracker.until = env(vars::SEARCH_UNTIL).and_then(|v| v.parse().ok());
        tracker.follows = trial_dir;
        tracker
    }

    /// The directory of the trial this tracker writes to or follows.
    fn trial_dir(&self) -> Option<&Path> {
        self.trial
            .as_ref()
            .map(|t| t.dir.as_path())
            .or(self.follows.as_deref())
    }

    /// The tracker the environment describes: the catalog of [`crate::default_root`],
    /// `COHORT_EXPERIMENT` (default: the program's name), `COHORT_TRIAL` (set by launchers; if
    /// absent a new trial is created and this tracker owns its state). Ranks other than 0
    /// (`COHORT_RANK`, else `RANK`) get a [`Tracker::follower`] of the run's trial unless
    /// `COHORT_TRACK_ALL_RANKS=1`; a process with neither `COHORT_EXPERIMENT` nor
    /// `COHORT_CATALOG` set gets a disabled one.
    pub fn from_env() -> Result<Tracker, CatalogError> {
        let rank = launcher_rank();
        if rank != 0 && env(vars::TRACK_ALL_RANKS).as_deref() != Some("1") {
            return Ok(Tracker::follower(launched_trial_dir()));
        }
        // Outside a launcher that records (cohort run, the Slurm plugin with --cohort-exp)
        // and without an explicit experiment or catalog, nothing is recorded.
        if env(vars::EXPERIMENT).is_none() && env(vars::CATALOG).is_none() {
            return Ok(Tracker::disabled());
        }
        let root = crate::default_root()?;
        let experiment = env(vars::EXPERIMENT).unwrap_or_else(|| {
            std::env::args()
                .next()
                .and_then(|p| {
                    Path::new(&p)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "default".to_owned())
        });
        let trial = match env(vars::TRIAL) {
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                CatalogError::BadQuery(format!(
                    "environment variable COHORT_TRIAL: {text:?} is not a trial number"
                ))
            })?),
            None => None,
        };
        let catalog = Catalog::open_or_create(&root)?;
        Tracker::open(
            &catalog,
            &experiment,
            trial,
            TrackerOptions {
                rank,
                ..TrackerOptions::default()
            },
        )
    }

    /// Opens a tracker on trial `trial` of `experiment`, or on a new trial (which it then owns
    /// the state of) when `trial` is `None`.
    pub fn open(
        catalog: &Catalog,
        experiment: &str,
        trial: Option<u64>,
        options: TrackerOptions,
    ) -> Result<Tracker, CatalogError> {
        let trial = match trial {
            Some(id) => catalog.trial(&catalog.experiment(experiment)?, id)?,
            None => {
                let command: Vec<String> = std::env::args().collect();
                return Tracker::new_trial(catalog, experiment, BTreeMap::new(), command, options);
            }
        };
        Tracker::attach(trial, options)
    }

    /// Creates a trial of `experiment` (and the experiment, if new) with `hparams`, recording
    /// `command` as what ran, and opens a tracker that owns its state: a program that tracks
    /// itself outside any launcher.
    pub fn new_trial(
        catalog: &Catalog,
        experiment: &str,
        hparams: BTreeMap<String, serde_json::Value>,
        command: Vec<String>,
        mut options: TrackerOptions,
    ) -> Result<Tracker, CatalogError> {
        let (exp, _) = catalog.create_experiment(&NewExperiment {
            name: experiment.to_owned(),
            ..NewExperiment::default()
        })?;
        options.owns_state = true;
        let trial = catalog.create_trial(&exp, hparams, command, Some(TrialState::Running))?;
        Tracker::attach(trial, options)
    }

    /// The trial's hyperparameters, as its record holds them (empty when this tracker neither
    /// writes nor follows a trial).
    pub fn hparams(&self) -> Result<BTreeMap<String, serde_json::Value>, CatalogError> {
        match self.trial_dir() {
            Some(dir) => Ok(crate::catalog::read_trial_record(dir)?.hparams),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Opens a new log segment in `trial`'s directory.
    pub fn attach(trial: TrialRef, options: TrackerOptions) -> Result<Tracker, CatalogError> {
        let (file, path) = if options.host_segment {
            let host: String = fsutil::writer()
                .host
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let path = trial.dir.join(format!("metrics-host-{host}.clog"));
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|source| CatalogError::Io {
                    path: path.clone(),
                    what: "cannot open the metrics log",
                    source,
                })?;
            (file, path)
        } else {
            new_segment(&trial.dir)?
        };
        let header = SegmentHeader {
            format: "cohort.metrics".into(),
            version: CATALOG_VERSION,
            experiment: trial.experiment.clone(),
            trial: trial.id,
            rank: options.rank,
            writer: fsutil::writer(),
            created: fsutil::now(),
        };
        let mut buf = Vec::with_capacity(options.buffer_bytes + RECORD_BYTES + 4096);
        push_frame(
            &mut buf,
            Kind::Header,
            &serde_json::to_vec(&header).unwrap_or_default(),
        );
        let owns_state = options.owns_state;
        let flush_interval = options.flush_interval;
        let fsync_interval = options.fsync_interval;
        let shared = Arc::new(Mutex::new(Inner {
            file,
            path,
            buf,
            points: PointsBuilder::default(),
            ids: HashMap::new(),
            recent: Vec::new(),
            error: None,
            dropped: 0,
            names_in_file: 0,
            names_before_buf: 0,
            last_sync: Instant::now(),
            unsynced: false,
            options,
        }));
        let (stop, stopped) = channel::<()>();
        let background = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("cohort-tracker".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(flush_interval) {
                    let mut inner = lock(&background);
                    inner.write_out();
                    if inner.last_sync.elapsed() >= fsync_interval {
                        inner.sync();
                    }
                }
            })
            .map_err(|source| CatalogError::Io {
                path: trial.dir.clone(),
                what: "cannot start the tracker's flush thread",
                source,
            })?;
        if owns_state {
            update_state(&trial.dir, |s| {
                s.state = TrialState::Running;
                s.started.get_or_insert(fsutil::now());
                s.writer = fsutil::writer();
                if s.nodes.is_empty() {
                    s.nodes.push(fsutil::writer().host);
                }
            })?;
        }
        Ok(Tracker {
            shared: Some(shared),
            stop: Some(stop),
            flusher: Some(flusher),
            trial: Some(trial),
            owns_state,
            finished: false,
            until: env(vars::SEARCH_UNTIL).and_then(|v| v.parse().ok()),
            follows: None,
            stopping: Mutex::new(Stopping::default()),
        })
    }

    /// Whether the worker should checkpoint and exit after `step`: it reached the length a
    /// search gave it (`COHORT_SEARCH_UNTIL`), the search asked its trial to stop, or Slurm
    /// warned the job: the stop signal of `--signal=USR2@SECONDS` ahead of the time limit,
    /// or SIGTERM (see [`crate::signals`]; both are watched from the first call on).
    ///
    /// With an agreement ([`Tracker::agree_through`]), every rank gets the same answer at
    /// the same step: call it on every rank at every step (or every rank at the same
    /// steps). Cheap to call every step: the stop file is looked for at most once a
    /// second, and an agreement is one allreduce of one byte. Once true, it stays true.
    pub fn should_stop(&self, step: i64) -> Result<bool, CatalogError> {
        Ok(self.stop_reason(step)?.is_some())
    }

    /// Whether the worker should checkpoint after `step` because it is about to stop: true
    /// exactly when [`Tracker::should_stop`] is (one decision per step, whichever is
    /// asked first), for loops that read better with both.
    pub fn should_checkpoint(&self, step: i64) -> Result<bool, CatalogError> {
        self.should_stop(step)
    }

    /// Why the worker should stop after `step`, if it should: [`Tracker::should_stop`] with
    /// the reason the ranks agreed on.
    pub fn stop_reason(&self, step: i64) -> Result<Option<StopReason>, CatalogError> {
        static WATCHING: std::sync::Once = std::sync::Once::new();
        WATCHING.call_once(|| {
            if let Err(why) = crate::signals::watch() {
                eprintln!("cohort: {why}; should_stop will not see Slurm's stop signal");
            }
        });
        let mut stopping = self
            .stopping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, reason)) = stopping.stopped {
            return Ok(Some(reason));
        }
        if let Some((at, reason)) = stopping.decided {
            if at == step {
                return Ok(reason);
            }
        }
        let local = self.local_stop_reason(step, &mut stopping);
        let agreed = match &stopping.agree {
            Some(agree) => {
                let code = agree(local.map_or(0, |r| r as u8))
                    .map_err(|problem| CatalogError::Agreement { step, problem })?;
                StopReason::from_code(code)
            }
            None => local,
        };
        stopping.decided = Some((step, agreed));
        if let Some(reason) = agreed {
            stopping.stopped = Some((step, reason));
        }
        Ok(agreed)
    }

    /// The reason this rank alone sees to stop after `step`.
    fn local_stop_reason(&self, step: i64, stopping: &mut Stopping) -> Option<StopReason> {
        let mut reason = match crate::signals::received() {
            Some(crate::signals::Warning::Terminate) => return Some(StopReason::Terminated),
            Some(crate::signals::Warning::StopSignal(_)) => return Some(StopReason::Warning),
            None => None,
        };
        if self.until.is_some_and(|until| step >= until) {
            reason = Some(StopReason::Length);
        }
        if let Some(dir) = self.trial_dir() {
            let seen = &mut stopping.file_seen;
            if seen
                .0
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
            {
                *seen = (Some(Instant::now()), dir.join(STOP_FILE).exists());
            }
            if seen.1 {
                reason = Some(StopReason::Asked);
            }
        }
        reason
    }

    /// Makes [`Tracker::should_stop`] agree among the ranks of the job through `agree`:
    /// given this rank's code, it returns the largest code of all ranks (an allreduce with
    /// MAX of one byte over the job's communicator), or why it could not.
    pub fn agree_through(&self, agree: impl Fn(u8) -> Result<u8, String> + Send + Sync + 'static) {
        self.stopping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .agree = Some(Box::new(agree));
    }

    /// The step the ranks agreed to stop at, and why, once they have.
    pub fn stopped(&self) -> Option<(i64, StopReason)> {
        self.stopping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .stopped
    }

    /// The status the worker should exit with once it has checkpointed: 0, or after a
    /// warning from Slurm the status that tells the Slurm plugin which
    /// ([`cohort_proto::catalog::exit`]: 75 after the stop signal, 143 after SIGTERM).
    pub fn exit_status(&self) -> i32 {
        match self.stopped() {
            Some((_, StopReason::Warning)) => cohort_proto::catalog::exit::AT_WARNING,
            Some((_, StopReason::Terminated)) => cohort_proto::catalog::exit::AT_SIGTERM,
            _ => 0,
        }
    }

    /// The checkpoint to resume from: the trial's latest one (by step) whose file still
    /// exists, if any. A trial restarted or promoted by a search continues from there.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, CatalogError> {
        let Some(dir) = self.trial_dir() else {
            return Ok(None);
        };
        let summary = crate::read::summarize(dir, None, &mut Vec::new())?;
        Ok(summary.and_then(|s| {
            s.checkpoints
                .into_iter()
                .filter(|c| Path::new(&c.path).exists())
                .max_by_key(|c| c.step)
        }))
    }

    /// The trial this tracker writes to (`None` when disabled).
    pub fn trial(&self) -> Option<&TrialRef> {
        self.trial.as_ref()
    }

    /// Records `values` at `step`. Names are any UTF-8 (`loss`, `val/acc`).
    pub fn log_metrics(&self, step: i64, values: &[(&str, f64)]) -> Result<(), CatalogError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let wall = fsutil::now();
        let mut inner = lock(shared);
        let inner = &mut *inner;
        let same = inner.recent.len() == values.len()
            && inner
                .recent
                .iter()
                .zip(values)
                .all(|((known, _), (name, _))| known == name);
        if !same {
            // Names are checked where they change: a loop logging the same names every step
            // pays nothing, and a call with a bad name records none of its values.
            for (name, _) in values {
                check_metric_name(name)?;
            }
            let mut new_names: Vec<&str> = Vec::new();
            let first_new = u32::try_from(inner.ids.len()).unwrap_or(u32::MAX);
            inner.recent.clear();
            for (name, _) in values {
                let next = u32::try_from(inner.ids.len()).unwrap_or(u32::MAX);
                let id = *inner.ids.entry((*name).to_owned()).or_insert_with(|| {
                    new_names.push(name);
                    next
                });
                inner.recent.push(((*name).to_owned(), id));
            }
            if !new_names.is_empty() {
                inner.seal();
                push_frame(
                    &mut inner.buf,
                    Kind::Names,
                    &names_payload(first_new, &new_names),
                );
            }
        }
        let recent = &inner.recent;
        inner.points.row(
            step,
            wall,
            recent.iter().zip(values).map(|((_, id), (_, v))| (*id, *v)),
        );
        inner.maybe_write();
        inner.check()
    }

    /// Records hyperparameters (added to, or replacing, those the trial was created with).
    pub fn log_hparams(
        &self,
        values: BTreeMap<String, serde_json::Value>,
    ) -> Result<(), CatalogError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let mut inner = lock(shared);
        inner.event(&LogEvent::Hparams { values });
        inner.write_out();
        inner.check()
    }

    /// Records a checkpoint written at `path` (a file or a directory) at `step`. The log is
    /// synced, so a crash right after cannot lose the reference.
    pub fn checkpoint(
        &self,
        path: &Path,
        step: i64,
        metadata: BTreeMap<String, serde_json::Value>,
    ) -> Result<(), CatalogError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let size = crate::ckpt::size_of(&absolute).map_err(|source| CatalogError::Io {
            path: absolute.clone(),
            what: "cannot read the checkpoint",
            source,
        })?;
        let mut inner = lock(shared);
        inner.event(&LogEvent::Checkpoint(Checkpoint {
            path: absolute.to_string_lossy().into_owned(),
            step,
            size,
            at: fsutil::now(),
            metadata,
        }));
        inner.sync();
        inner.check()
    }

    /// Writes and fsyncs everything buffered: after it returns, every point logged so far is
    /// committed.
    pub fn sync(&self) -> Result<(), CatalogError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let mut inner = lock(shared);
        inner.sync();
        inner.check()
    }

    /// Ends tracking: records the final state in the log, syncs, and (when this tracker owns
    /// the trial's state) writes it.
    pub fn finish(mut self, state: TrialState) -> Result<(), CatalogError> {
        self.end(Some(state), None)
    }

    /// [`Tracker::finish`] with a message that says why (recorded in the trial's state when
    /// this tracker owns it): a failed run's exception, for example.
    pub fn finish_with_message(
        mut self,
        state: TrialState,
        message: Option<String>,
    ) -> Result<(), CatalogError> {
        self.end(Some(state), message)
    }

    /// Writes and syncs what is buffered and stops, recording no end of the trial (for
    /// writers that log a few points and leave, like `cohort log metric`).
    pub fn close(mut self) -> Result<(), CatalogError> {
        self.end(None, None)
    }

    fn end(
        &mut self,
        state: Option<TrialState>,
        message: Option<String>,
    ) -> Result<(), CatalogError> {
        if self.finished {
            return Ok(());
        }
        // A run the ranks stopped at Slurm's warning has not completed: it goes on later.
        let (state, message) = match (state, self.stopped()) {
            (Some(TrialState::Completed | TrialState::Killed), Some((step, reason)))
                if reason.is_warning() =>
            {
                (
                    Some(TrialState::Preempted),
                    Some(self.preempted_message(step, reason)),
                )
            }
            _ => (state, message),
        };
        self.finished = true;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let result = {
            let mut inner = lock(shared);
            if let Some(state) = state {
                inner.event(&LogEvent::Finish {
                    state,
                    at: fsutil::now(),
                });
            }
            inner.sync();
            inner.check()
        };
        // A preempted run says so itself, with the step, even where its launcher records
        // its end (the launcher then leaves a state that is no longer `running` alone).
        let owns = self.owns_state || state == Some(TrialState::Preempted);
        if let (true, Some(state), Some(trial)) = (owns, state, &self.trial) {
            {
                update_state(&trial.dir, |s| {
                    s.state = state;
                    s.ended = Some(fsutil::now());
                    if message.is_some() {
                        s.message = message;
                    }
                })?;
            }
        }
        result
    }
}

impl Tracker {
    /// What a preempted trial's state says: where it stopped, at what, and where it goes on.
    fn preempted_message(&self, step: i64, reason: StopReason) -> String {
        let signal = match reason {
            StopReason::Terminated => {
                "SIGTERM: Slurm preempted, requeued or cancelled the job, or its time ran out"
                    .to_owned()
            }
            _ => {
                let name = crate::signals::stop_signal()
                    .ok()
                    .and_then(|n| nix::sys::signal::Signal::try_from(n).ok())
                    .map_or("the stop signal", |s| s.as_str());
                format!("{name}, Slurm's warning before the time limit")
            }
        };
        let checkpoint = match self.latest_checkpoint() {
            Ok(Some(c)) => format!(
                "it goes on from its checkpoint of step {} when it runs again",
                c.step
            ),
            _ => "it recorded no checkpoint to go on from".to_owned(),
        };
        format!("stopped at step {step} ({signal}); {checkpoint}")
    }
}

impl Drop for Tracker {
    /// Writes and syncs what is buffered. A tracker that owns its trial's state and was not
    /// finished records the trial as completed, or failed when dropped by a panic.
    fn drop(&mut self) {
        if !self.finished {
            let panicking = std::thread::panicking();
            let state = self.owns_state.then_some(if panicking {
                TrialState::Failed
            } else {
                TrialState::Completed
            });
            let message = panicking.then(|| "the worker panicked".to_owned());
            let _ = self.end(state, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cohort_proto::catalog::{LogEvent, SegmentHeader, TrialState};
    use serde_json::json;

    use super::*;
    use crate::catalog::read_state;
    use crate::log::{scan, Item};

    /// A row: its step and its values by metric name.
    type NamedRow = (i64, Vec<(String, f64)>);

    /// A segment as a reader sees it: its header, rows by metric name, and events.
    #[derive(Debug, Default)]
    struct Decoded {
        headers: Vec<SegmentHeader>,
        /// Names in the order they were defined, one entry per definition.
        defined: Vec<String>,
        rows: Vec<NamedRow>,
        events: Vec<LogEvent>,
        damaged: bool,
    }

    fn decode(bytes: &[u8]) -> Decoded {
        let mut out = Decoded::default();
        let mut names: BTreeMap<u32, String> = BTreeMap::new();
        let end = scan(bytes, 0, |item| match item {
            Item::Header(json) => out.headers.push(serde_json::from_slice(json).unwrap()),
            Item::Names {
                first_id,
                names: new,
            } => {
                for (id, name) in (first_id..).zip(new) {
                    out.defined.push(name.clone());
                    names.insert(id, name);
                }
            }
            Item::Points(rows) => {
                for row in rows {
                    let values = row
                        .values()
                        .map(|(id, v)| (names.get(&id).cloned().unwrap_or(format!("?{id}")), v))
                        .collect();
                    out.rows.push((row.step, values));
                }
            }
            Item::Event(event) => out.events.push(event),
        });
        out.damaged = !end.damage.is_empty() || end.committed != bytes.len() as u64;
        out
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("metrics-") && name.ends_with(".clog")
            })
            .collect();
        found.sort();
        found
    }

    fn only_segment(dir: &Path) -> Decoded {
        let found = segments(dir);
        assert_eq!(found.len(), 1, "{found:?}");
        let decoded = decode(&std::fs::read(&found[0]).unwrap());
        assert!(!decoded.damaged, "{decoded:?}");
        decoded
    }

    /// Options under which nothing is written unless a call asks for it.
    fn quiet() -> TrackerOptions {
        TrackerOptions {
            flush_interval: Duration::from_secs(3600),
            fsync_interval: Duration::from_secs(3600),
            ..TrackerOptions::default()
        }
    }

    fn new_trial(root: &Path) -> (Catalog, TrialRef) {
        let catalog = Catalog::open_or_create(root.join("catalog")).unwrap();
        let (exp, _) = catalog
            .create_experiment(&NewExperiment {
                name: "tracker-test".into(),
                ..NewExperiment::default()
            })
            .unwrap();
        let trial = catalog
            .create_trial(
                &exp,
                BTreeMap::from([("lr".to_owned(), json!(0.1))]),
                Vec::new(),
                Some(TrialState::Running),
            )
            .unwrap();
        (catalog, trial)
    }

    fn named(values: &[(&str, f64)]) -> Vec<(String, f64)> {
        values.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
    }

    /// Calls `probe` until it returns something, for at most 20 s.
    fn eventually<T>(mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(found) = probe() {
                return found;
            }
            assert!(Instant::now() < deadline, "gave up waiting");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn each_name_is_defined_once_and_rows_read_back_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let tracker = Tracker::attach(trial.clone(), quiet()).unwrap();
        let logged: Vec<(i64, Vec<(&str, f64)>)> = vec![
            (0, vec![("loss", 1.0), ("acc", 0.5)]),
            (1, vec![("loss", 0.9), ("acc", 0.6)]),
            (2, vec![("acc", 0.7), ("lr", 0.1)]),
            (3, vec![("loss", 0.8)]),
            (
                4,
                vec![("val/acc", 0.3), ("損失", -2.5), ("loss", f64::INFINITY)],
            ),
            (4, vec![("loss", 0.75), ("acc", 0.8)]),
        ];
        for (step, values) in &logged {
            tracker.log_metrics(*step, values).unwrap();
        }
        tracker.sync().unwrap();
        let decoded = only_segment(&trial.dir);
        let expected: Vec<NamedRow> = logged
            .iter()
            .map(|(step, values)| (*step, named(values)))
            .collect();
        assert_eq!(decoded.rows, expected);
        let mut defined = decoded.defined.clone();
        defined.sort();
        assert_eq!(defined, ["acc", "loss", "lr", "val/acc", "損失"]);
    }

    #[test]
    fn the_segment_header_names_the_trial_and_rank() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let tracker =
            Tracker::attach(trial.clone(), TrackerOptions { rank: 3, ..quiet() }).unwrap();
        tracker.close().unwrap();
        let decoded = only_segment(&trial.dir);
        assert_eq!(decoded.headers.len(), 1);
        let header = &decoded.headers[0];
        assert_eq!(header.format, "cohort.metrics");
        assert_eq!(header.experiment, "tracker-test");
        assert_eq!(header.trial, trial.id);
        assert_eq!(header.rank, 3);
        assert_eq!(header.writer.pid, std::process::id());
        assert!(decoded.rows.is_empty());
    }

    #[test]
    fn rows_stay_buffered_until_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let tracker = Tracker::attach(trial.clone(), quiet()).unwrap();
        for step in 0..100 {
            tracker.log_metrics(step, &[("loss", step as f64)]).unwrap();
        }
        let segment = &segments(&trial.dir)[0];
        assert_eq!(std::fs::metadata(segment).unwrap().len(), 0);
        tracker.sync().unwrap();
        let decoded = only_segment(&trial.dir);
        assert_eq!(decoded.headers.len(), 1);
        let expected: Vec<NamedRow> = (0..100)
            .map(|step| (step, named(&[("loss", step as f64)])))
            .collect();
        assert_eq!(decoded.rows, expected);
    }

    #[test]
    fn a_full_buffer_is_written_without_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let tracker = Tracker::attach(
            trial.clone(),
            TrackerOptions {
                buffer_bytes: 4096,
                ..quiet()
            },
        )
        .unwrap();
        // 8000 rows of one value are far more than a buffer of 4 KiB.
        let rows = 8000;
        for step in 0..rows {
            tracker
                .log_metrics(step, &[("loss", step as f64 / 2.0)])
                .unwrap();
        }
        let early = only_segment(&trial.dir);
        assert!(!early.rows.is_empty());
        assert!(early.rows.len() < 8000);
        for (i, (step, values)) in early.rows.iter().enumerate() {
            assert_eq!(*step, i as i64);
            assert_eq!(values, &named(&[("loss", i as f64 / 2.0)]));
        }
        tracker.sync().unwrap();
        let all = only_segment(&trial.dir);
        assert_eq!(all.rows.len(), 8000);
        assert_eq!(all.rows[7999], (7999, named(&[("loss", 3999.5)])));
    }

    #[test]
    fn buffered_rows_are_written_within_the_flush_interval_without_a_call() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let tracker = Tracker::attach(
            trial.clone(),
            TrackerOptions {
                flush_interval: Duration::from_millis(20),
                ..quiet()
            },
        )
        .unwrap();
        for step in 0..3 {
            tracker.log_metrics(step, &[("acc", 0.25)]).unwrap();
        }
        let rows = eventually(|| {
            let decoded = only_segment(&trial.dir);
            (decoded.rows.len() == 3).then_some(decoded.rows)
        });
        assert_eq!(rows[2], (2, named(&[("acc", 0.25)])));
        tracker.close().unwrap();
    }

    #[test]
    fn finish_writes_everything_and_records_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let tracker = Tracker::attach(trial.clone(), quiet()).unwrap();
        for step in 0..10 {
            tracker
                .log_metrics(step, &[("loss", 1.0 / (step + 1) as f64)])
                .unwrap();
        }
        tracker
            .log_hparams(BTreeMap::from([("batch".to_owned(), json!(64))]))
            .unwrap();
        tracker.finish(TrialState::Failed).unwrap();
        let decoded = only_segment(&trial.dir);
        assert_eq!(decoded.rows.len(), 10);
        assert_eq!(decoded.rows[9], (9, named(&[("loss", 0.1)])));
        assert!(matches!(
            &decoded.events[0],
            LogEvent::Hparams { values } if values["batch"] == json!(64)
        ));
        assert!(matches!(
            decoded.events.last(),
            Some(LogEvent::Finish {
                state: TrialState::Failed,
                ..
            })
        ));
        // A tracker that did not create the trial leaves its state to the launcher.
        assert_eq!(
            read_state(&trial.dir).unwrap().unwrap().state,
            TrialState::Running
        );
    }

    #[test]
    fn close_writes_everything_and_records_no_end() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let tracker = Tracker::attach(trial.clone(), quiet()).unwrap();
        tracker.log_metrics(5, &[("loss", 0.5)]).unwrap();
        tracker.close().unwrap();
        let decoded = only_segment(&trial.dir);
        assert_eq!(decoded.rows, [(5, named(&[("loss", 0.5)]))]);
        assert!(decoded.events.is_empty(), "{:?}", decoded.events);
    }

    #[test]
    fn a_tracker_that_owns_the_state_writes_running_then_the_final_state() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        crate::catalog::write_state(&trial.dir, &crate::catalog::new_state(TrialState::Queued))
            .unwrap();
        let tracker = Tracker::attach(
            trial.clone(),
            TrackerOptions {
                owns_state: true,
                ..quiet()
            },
        )
        .unwrap();
        let running = read_state(&trial.dir).unwrap().unwrap();
        assert_eq!(running.state, TrialState::Running);
        assert!(running.started.is_some());
        tracker.finish(TrialState::Killed).unwrap();
        let ended = read_state(&trial.dir).unwrap().unwrap();
        assert_eq!(ended.state, TrialState::Killed);
        assert!(ended.ended.is_some());
    }

    #[test]
    fn dropping_an_owning_tracker_completes_the_trial_and_a_panic_fails_it() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, trial) = new_trial(dir.path());
        let owning = TrackerOptions {
            owns_state: true,
            ..quiet()
        };
        {
            let tracker = Tracker::attach(trial.clone(), owning.clone()).unwrap();
            tracker.log_metrics(1, &[("loss", 1.0)]).unwrap();
        }
        assert_eq!(
            read_state(&trial.dir).unwrap().unwrap().state,
            TrialState::Completed
        );

        let exp = catalog.experiment("tracker-test").unwrap();
        let second = catalog
            .create_trial(&exp, BTreeMap::new(), Vec::new(), None)
            .unwrap();
        let dir2 = second.dir.clone();
        let worker = std::thread::spawn(move || {
            let tracker = Tracker::attach(second, owning).unwrap();
            tracker.log_metrics(1, &[("loss", 2.0)]).unwrap();
            panic!("the training loop failed");
        });
        assert!(worker.join().is_err());
        let state = read_state(&dir2).unwrap().unwrap();
        assert_eq!(state.state, TrialState::Failed);
        assert_eq!(state.message.as_deref(), Some("the worker panicked"));
        // What was buffered before the panic is in the log.
        let decoded = only_segment(&dir2);
        assert_eq!(decoded.rows, [(1, named(&[("loss", 2.0)]))]);
    }

    #[test]
    fn open_without_a_trial_number_creates_one_and_owns_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open_or_create(dir.path().join("catalog")).unwrap();
        let tracker = Tracker::open(&catalog, "fresh", None, quiet()).unwrap();
        let trial = tracker.trial().unwrap().clone();
        assert_eq!(trial.experiment, "fresh");
        assert_eq!(trial.id, 1);
        assert_eq!(
            read_state(&trial.dir).unwrap().unwrap().state,
            TrialState::Running
        );
        tracker.finish(TrialState::Completed).unwrap();
        assert_eq!(
            read_state(&trial.dir).unwrap().unwrap().state,
            TrialState::Completed
        );
        let second = Tracker::open(&catalog, "fresh", None, quiet()).unwrap();
        assert_eq!(second.trial().unwrap().id, 2);
    }

    #[test]
    fn a_call_with_a_bad_metric_name_records_none_of_its_values() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let tracker = Tracker::attach(trial.clone(), quiet()).unwrap();
        tracker.log_metrics(0, &[("loss", 1.0)]).unwrap();
        let long = "x".repeat(MAX_METRIC_NAME + 1);
        for bad in ["", "two\nlines", long.as_str()] {
            let e = tracker
                .log_metrics(1, &[("loss", 0.5), (bad, 2.0)])
                .unwrap_err();
            assert!(matches!(e, CatalogError::BadMetricName { .. }), "{e}");
        }
        assert!(check_metric_name(&"x".repeat(MAX_METRIC_NAME)).is_ok());
        tracker.log_metrics(2, &[("loss", 0.25)]).unwrap();
        tracker.sync().unwrap();
        let decoded = only_segment(&trial.dir);
        assert_eq!(
            decoded.rows,
            vec![(0, named(&[("loss", 1.0)])), (2, named(&[("loss", 0.25)]))]
        );
        assert_eq!(decoded.defined, ["loss"]);
    }

    #[test]
    fn a_new_trial_carries_its_hparams_and_a_failure_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open_or_create(dir.path().join("catalog")).unwrap();
        let hparams = BTreeMap::from([
            ("lr".to_owned(), json!(0.01)),
            ("act".to_owned(), json!("relu")),
        ]);
        let tracker = Tracker::new_trial(
            &catalog,
            "py",
            hparams.clone(),
            vec!["train.py".into()],
            quiet(),
        )
        .unwrap();
        assert_eq!(tracker.hparams().unwrap(), hparams);
        let trial = tracker.trial().unwrap().clone();
        tracker
            .finish_with_message(TrialState::Failed, Some("ValueError: bad batch".into()))
            .unwrap();
        let state = read_state(&trial.dir).unwrap().unwrap();
        assert_eq!(state.state, TrialState::Failed);
        assert_eq!(state.message.as_deref(), Some("ValueError: bad batch"));
        assert!(Tracker::disabled().hparams().unwrap().is_empty());
    }

    #[test]
    fn a_follower_answers_like_the_writer_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let writer = Tracker::attach(trial.clone(), quiet()).unwrap();
        let weights = dir.path().join("w.pt");
        std::fs::write(&weights, b"w").unwrap();
        writer.checkpoint(&weights, 3, BTreeMap::new()).unwrap();
        let follower = Tracker::follower(Some(trial.dir.clone()));
        assert!(follower.trial().is_none(), "a follower writes nothing");
        assert_eq!(follower.hparams().unwrap(), writer.hparams().unwrap());
        assert_eq!(
            follower.latest_checkpoint().unwrap().map(|c| c.step),
            Some(3)
        );
        assert!(!Tracker::follower(Some(trial.dir.clone()))
            .should_stop(3)
            .unwrap());
        crate::catalog::request_stop(&trial.dir).unwrap();
        assert!(
            follower.should_stop(4).unwrap(),
            "the search asked the trial to stop"
        );
        let before = segments(&trial.dir).len();
        follower.log_metrics(4, &[("loss", 1.0)]).unwrap();
        follower.finish(TrialState::Completed).unwrap();
        assert_eq!(segments(&trial.dir).len(), before);
        assert_eq!(
            read_state(&trial.dir).unwrap().unwrap().state,
            TrialState::Running,
            "the follower does not end the trial"
        );
    }

    #[test]
    fn open_of_a_trial_that_does_not_exist_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, _) = new_trial(dir.path());
        let err = Tracker::open(&catalog, "tracker-test", Some(99), quiet()).unwrap_err();
        assert!(
            matches!(&err, CatalogError::NoTrial { id: 99, experiment } if experiment == "tracker-test"),
            "{err:?}"
        );
        let err = Tracker::open(&catalog, "nope", Some(1), quiet()).unwrap_err();
        assert!(
            matches!(&err, CatalogError::NoExperiment { name, .. } if name == "nope"),
            "{err:?}"
        );
    }

    #[test]
    fn every_tracker_writes_its_own_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let a = Tracker::attach(trial.clone(), quiet()).unwrap();
        let b = Tracker::attach(trial.clone(), TrackerOptions { rank: 1, ..quiet() }).unwrap();
        a.log_metrics(0, &[("loss", 1.0)]).unwrap();
        b.log_metrics(0, &[("grad", 7.0)]).unwrap();
        a.close().unwrap();
        b.close().unwrap();
        let found = segments(&trial.dir);
        assert_eq!(found.len(), 2);
        let mut seen: Vec<(u32, Vec<NamedRow>)> = found
            .iter()
            .map(|p| {
                let d = decode(&std::fs::read(p).unwrap());
                (d.headers[0].rank, d.rows)
            })
            .collect();
        seen.sort_by_key(|(rank, _)| *rank);
        assert_eq!(
            seen,
            [
                (0, vec![(0, named(&[("loss", 1.0)]))]),
                (1, vec![(0, named(&[("grad", 7.0)]))]),
            ]
        );
    }

    #[test]
    fn host_segment_writers_interleaved_keep_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let shared = TrackerOptions {
            host_segment: true,
            ..quiet()
        };
        let a = Tracker::attach(trial.clone(), shared.clone()).unwrap();
        let b = Tracker::attach(trial.clone(), shared).unwrap();
        a.log_metrics(0, &[("loss", 1.0)]).unwrap();
        a.sync().unwrap();
        b.log_metrics(1, &[("acc", 2.0)]).unwrap();
        b.sync().unwrap();
        a.log_metrics(2, &[("loss", 3.0)]).unwrap();
        a.close().unwrap();
        b.close().unwrap();
        assert_eq!(segments(&trial.dir).len(), 1);
        let history = crate::read::history(&trial.dir, None, &mut Vec::new()).unwrap();
        let points = |name: &str| -> Vec<(i64, f64)> {
            history
                .get(name)
                .map(|p| p.iter().map(|p| (p.step, p.value)).collect())
                .unwrap_or_default()
        };
        assert_eq!(points("loss"), [(0, 1.0), (2, 3.0)]);
        assert_eq!(points("acc"), [(1, 2.0)]);
    }

    #[test]
    fn a_checkpoint_is_in_the_log_as_soon_as_it_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let file = dir.path().join("ckpt-3.pt");
        std::fs::write(&file, b"12345").unwrap();
        let tracker = Tracker::attach(trial.clone(), quiet()).unwrap();
        tracker.log_metrics(3, &[("loss", 0.3)]).unwrap();
        tracker
            .checkpoint(&file, 3, BTreeMap::from([("epoch".to_owned(), json!(1))]))
            .unwrap();
        let decoded = only_segment(&trial.dir);
        assert_eq!(decoded.rows, [(3, named(&[("loss", 0.3)]))]);
        let [LogEvent::Checkpoint(ckpt)] = decoded.events.as_slice() else {
            panic!("{:?}", decoded.events);
        };
        assert_eq!(Path::new(&ckpt.path), file);
        assert_eq!((ckpt.step, ckpt.size), (3, 5));
        assert_eq!(ckpt.metadata["epoch"], json!(1));

        let missing = dir.path().join("never-written.pt");
        let err = tracker
            .checkpoint(&missing, 4, BTreeMap::new())
            .unwrap_err();
        assert!(err.to_string().contains("never-written.pt"), "{err}");
        tracker.close().unwrap();
    }

    #[test]
    fn the_latest_checkpoint_is_the_highest_step_whose_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let tracker = Tracker::attach(trial.clone(), quiet()).unwrap();
        assert_eq!(tracker.latest_checkpoint().unwrap(), None);
        for step in [10, 20, 15] {
            let file = dir.path().join(format!("ckpt-{step}"));
            std::fs::write(&file, b"x").unwrap();
            tracker.checkpoint(&file, step, BTreeMap::new()).unwrap();
        }
        assert_eq!(tracker.latest_checkpoint().unwrap().unwrap().step, 20);
        std::fs::remove_file(dir.path().join("ckpt-20")).unwrap();
        let latest = tracker.latest_checkpoint().unwrap().unwrap();
        assert_eq!(latest.step, 15);
        assert_eq!(Path::new(&latest.path), dir.path().join("ckpt-15"));
        tracker.close().unwrap();
    }

    #[test]
    fn should_stop_when_the_trial_was_asked_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, trial) = new_trial(dir.path());
        let exp = catalog.experiment("tracker-test").unwrap();
        let other = catalog
            .create_trial(&exp, BTreeMap::new(), Vec::new(), None)
            .unwrap();
        assert!(crate::catalog::request_stop(&trial.dir).unwrap());
        let asked = Tracker::attach(trial, quiet()).unwrap();
        let left_alone = Tracker::attach(other, quiet()).unwrap();
        assert!(asked.should_stop(1).unwrap());
        assert!(!left_alone.should_stop(1).unwrap());
        assert_eq!(asked.stopped(), Some((1, StopReason::Asked)));
        assert_eq!(asked.exit_status(), 0, "a search's stop is no warning");
    }

    #[test]
    fn the_ranks_agree_on_the_most_urgent_reason_and_a_warning_ends_the_trial_preempted() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        let tracker = Tracker::attach(trial.clone(), quiet()).unwrap();
        let weights = dir.path().join("w.pt");
        std::fs::write(&weights, b"w").unwrap();
        tracker.checkpoint(&weights, 6, BTreeMap::new()).unwrap();
        // The agreement's contract: the largest code of all ranks. Another rank saw the
        // stop signal (code 3) from step 7 on; this one saw nothing.
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = Arc::clone(&calls);
        tracker.agree_through(move |mine| {
            let call = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(if call >= 1 { mine.max(3) } else { mine })
        });
        assert!(!tracker.should_stop(6).unwrap());
        assert!(
            tracker.should_checkpoint(7).unwrap(),
            "the same step on every rank"
        );
        assert!(tracker.should_stop(7).unwrap());
        assert!(tracker.should_stop(8).unwrap(), "stopped stays stopped");
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "one agreement per step, none after the stop"
        );
        assert_eq!(tracker.stopped(), Some((7, StopReason::Warning)));
        assert_eq!(tracker.exit_status(), 75);
        tracker.finish(TrialState::Completed).unwrap();
        let state = crate::catalog::read_state(&trial.dir).unwrap().unwrap();
        assert_eq!(state.state, TrialState::Preempted);
        let message = state.message.unwrap();
        assert!(
            message.contains("stopped at step 7 (SIGUSR2")
                && message.contains("checkpoint of step 6"),
            "{message}"
        );
    }

    #[test]
    fn a_failed_agreement_is_an_error_naming_the_step() {
        let tracker = Tracker::disabled();
        tracker.agree_through(|_| Err("rank 1 (node2) is gone".into()));
        let e = tracker.should_stop(12).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the ranks could not agree whether to stop at step 12: rank 1 (node2) is gone"
        );
    }

    #[test]
    fn a_disabled_tracker_records_nothing_and_never_fails() {
        let tracker = Tracker::disabled();
        assert!(tracker.trial().is_none());
        tracker.log_metrics(0, &[("loss", 1.0)]).unwrap();
        tracker.log_hparams(BTreeMap::new()).unwrap();
        tracker
            .checkpoint(Path::new("/nonexistent/ckpt"), 0, BTreeMap::new())
            .unwrap();
        tracker.sync().unwrap();
        assert_eq!(tracker.latest_checkpoint().unwrap(), None);
        assert!(!tracker.should_stop(i64::MAX).unwrap());
        tracker.finish(TrialState::Completed).unwrap();
    }

    /// The name of this host's shared segment, as `TrackerOptions::host_segment` documents it:
    /// `metrics-host-<HOST>.clog`, the host name's characters other than letters, digits and
    /// `-` written as `_`.
    fn host_segment_name() -> String {
        let host: String = nix::unistd::gethostname()
            .unwrap()
            .to_string_lossy()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("metrics-host-{host}.clog")
    }

    #[test]
    fn a_write_error_is_kept_returned_by_the_next_call_then_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        // Every write to /dev/full fails with "no space left on device".
        let segment = trial.dir.join(host_segment_name());
        std::os::unix::fs::symlink("/dev/full", &segment).unwrap();
        let tracker = Tracker::attach(
            trial.clone(),
            TrackerOptions {
                host_segment: true,
                flush_interval: Duration::from_millis(10),
                ..quiet()
            },
        )
        .unwrap();
        // The background writer fails; the next call (which writes nothing itself, the
        // buffer being far from full) reports it.
        let mut step = 0;
        let err = eventually(|| {
            step += 1;
            tracker.log_metrics(step, &[("loss", 1.0)]).err()
        });
        let CatalogError::Io { path, what, source } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(path, &segment);
        assert_eq!(*what, "cannot write metrics");
        assert_eq!(source.kind(), ErrorKind::StorageFull);
        assert!(source.to_string().contains("were lost"), "{source}");

        // Once reported, it is not reported again; a later write fails again.
        std::thread::sleep(Duration::from_millis(100));
        let _ = tracker.sync();
        tracker.sync().unwrap();
        tracker.log_metrics(1000, &[("loss", 2.0)]).unwrap();
        let again = tracker.sync().unwrap_err();
        assert!(
            matches!(&again, CatalogError::Io { source, .. } if source.kind() == ErrorKind::StorageFull),
            "{again:?}"
        );
        drop(tracker);
    }

    #[test]
    fn names_lost_with_a_failed_write_are_written_again_with_the_next() {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (_, trial) = new_trial(dir.path());
        // The segment is a pipe: writes fail while nobody reads it and succeed once a
        // reader opens it again.
        let segment = trial.dir.join(host_segment_name());
        nix::unistd::mkfifo(&segment, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let open_reader = || {
            OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&segment)
                .unwrap()
        };
        let first_reader = open_reader();
        let tracker = Tracker::attach(
            trial.clone(),
            TrackerOptions {
                host_segment: true,
                ..quiet()
            },
        )
        .unwrap();
        drop(first_reader);
        tracker
            .log_metrics(0, &[("loss", 1.0), ("acc", 0.5)])
            .unwrap();
        // Writing the buffer (which defines both names) fails.
        let err = tracker.log_hparams(BTreeMap::new()).unwrap_err();
        assert!(
            matches!(&err, CatalogError::Io { source, .. } if source.kind() == ErrorKind::BrokenPipe),
            "{err:?}"
        );
        let mut reader = open_reader();
        tracker
            .log_metrics(1, &[("loss", 0.9), ("acc", 0.6)])
            .unwrap();
        tracker.log_hparams(BTreeMap::new()).unwrap();
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        let decoded = decode(&bytes);
        assert!(!decoded.damaged, "{decoded:?}");
        assert_eq!(decoded.rows, [(1, named(&[("loss", 0.9), ("acc", 0.6)]))]);
        drop(tracker);
    }
}
