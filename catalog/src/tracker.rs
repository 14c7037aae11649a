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
            let written = if self.options.host_segment {
                // Other processes of this host append to the same file: one locked write.
                self.file
                    .try_clone()
                    .and_then(|clone| {
                        nix::fcntl::Flock::lock(clone, nix::fcntl::FlockArg::LockExclusive)
                            .map_err(|(_, errno)| std::io::Error::from(errno))
                    })
                    .and_then(|mut locked| locked.write_all(&self.buf))
            } else {
                self.file.write_all(&self.buf)
            };
            match written {
                Ok(()) => self.unsynced = true,
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
    /// When the stop file was last looked for, and whether it was there.
    stop_seen: Mutex<(Option<Instant>, bool)>,
}

/// Name of the file in a trial's directory that asks its workers to stop (`cohort search
/// stop`, a searcher's decision).
pub const STOP_FILE: &str = "stop";

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

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
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
            stop_seen: Mutex::new((None, false)),
        }
    }

    /// The tracker the environment describes: the catalog of [`crate::default_root`],
    /// `COHORT_EXPERIMENT` (default: the program's name), `COHORT_TRIAL` (set by launchers; if
    /// absent a new trial is created and this tracker owns its state). Ranks other than 0
    /// (`COHORT_RANK`, else `RANK`) get a disabled tracker unless `COHORT_TRACK_ALL_RANKS=1`,
    /// and so does a process with neither `COHORT_EXPERIMENT` nor `COHORT_CATALOG` set.
    pub fn from_env() -> Result<Tracker, CatalogError> {
        let rank: u32 = env(vars::RANK)
            .or_else(|| env("RANK"))
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        if rank != 0 && env(vars::TRACK_ALL_RANKS).as_deref() != Some("1") {
            return Ok(Tracker::disabled());
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
        mut options: TrackerOptions,
    ) -> Result<Tracker, CatalogError> {
        let trial = match trial {
            Some(id) => catalog.trial(&catalog.experiment(experiment)?, id)?,
            None => {
                let (exp, _) = catalog.create_experiment(&NewExperiment {
                    name: experiment.to_owned(),
                    ..NewExperiment::default()
                })?;
                options.owns_state = true;
                let command: Vec<String> = std::env::args().collect();
                catalog.create_trial(&exp, BTreeMap::new(), command, Some(TrialState::Running))?
            }
        };
        Tracker::attach(trial, options)
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
            stop_seen: Mutex::new((None, false)),
        })
    }

    /// Whether the worker should checkpoint and exit after `step`: it reached the length a
    /// search gave it (`COHORT_SEARCH_UNTIL`), or the search asked its trial to stop. Cheap to
    /// call every step (the stop file is looked for at most once a second).
    pub fn should_stop(&self, step: i64) -> bool {
        if self.until.is_some_and(|until| step >= until) {
            return true;
        }
        let Some(trial) = &self.trial else {
            return false;
        };
        let mut seen = self
            .stop_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen
            .0
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            *seen = (Some(Instant::now()), trial.dir.join(STOP_FILE).exists());
        }
        seen.1
    }

    /// The checkpoint to resume from: the trial's latest one (by step) whose file still
    /// exists, if any. A trial restarted or promoted by a search continues from there.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, CatalogError> {
        let Some(trial) = &self.trial else {
            return Ok(None);
        };
        let summary = crate::read::summarize(&trial.dir, None, &mut Vec::new())?;
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
        if let (true, Some(state), Some(trial)) = (self.owns_state, state, &self.trial) {
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
