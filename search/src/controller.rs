//! The search controller: drives a searcher with real trials recorded in the catalog, keeps
//! at most `max_concurrent_trials` running, restarts failed trials from their checkpoints,
//! and records every decision so a killed controller resumes where it stopped.
//!
//! State lives in the catalog, in the experiment's `search/` directory, written by the
//! catalog's rules (`cohort_catalog::fsutil`; `docs/catalog-format.md` has the details):
//! - `spec.toml`: the experiment file as given, published once (create-if-absent) when the
//!   search starts; it is what says the experiment has a search;
//! - `cwd`: the directory trials start in, replaced whole (temporary file, fsync, rename);
//! - `controller-N.json`: the lease, naming the controller's host and pid; each controller
//!   publishes the next generation N (create-if-absent), only after finding the highest one
//!   released or its holder gone, so of controllers racing exactly one drives the search;
//! - `events.jsonl`: what the controller did, one JSON object per line, appended by the lease
//!   holder alone (which first cuts off a last line that a crash left torn), and made durable
//!   by one `fdatasync` before any launch, after a round's launches and at the end of each
//!   round;
//! - `stop`: asks the controller and every trial to stop (create-if-absent).
//!
//! Searchers are deterministic, so replaying the events through a fresh searcher rebuilds its
//! state exactly; trials that were running when the controller died are adopted (their
//! `cohort run` goes on and records its end in the trial's state), not started again.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cohort_catalog::catalog::read_state;
use cohort_catalog::fsutil::{mkdir_if_absent, nonce, publish_new, replace, sync_dir};
use cohort_catalog::{Catalog, Experiment, NewExperiment, SearchDir, Warning};
use cohort_proto::catalog::TrialState;
use cohort_proto::search::{Event, Handle, LeaseRecord};

use crate::launch::{alive, host, Job, Launcher, Outcome, Running, StateWatch};
use crate::searcher::{build, Decision, Next, Searcher};
use crate::space::Values;
use crate::spec::ExperimentSpec;

/// Why a search could not run.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] cohort_catalog::CatalogError),
    /// A search file is damaged or missing.
    #[error("{path}: {problem}")]
    State {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// Another controller holds the search.
    #[error("the search of {experiment} is driven by the controller {holder}; stop it first, or resume after it is gone")]
    Busy {
        /// The experiment.
        experiment: String,
        /// host:pid.
        holder: String,
    },
    /// The searcher or a launch failed.
    #[error("{0}")]
    Other(String),
}

fn state_error(path: &Path) -> impl FnOnce(std::io::Error) -> ControllerError + '_ {
    move |e| ControllerError::State {
        path: path.display().to_string(),
        problem: e.to_string(),
    }
}

/// Nonces of the leases that controllers of this process hold now. A lease naming this
/// process is held only if listed here: otherwise it was left by a controller of this
/// process that is gone, or by a dead process whose pid this one got again.
static HELD: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn held() -> MutexGuard<'static, BTreeSet<String>> {
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a controller still holds `lease`.
fn holds(lease: &LeaseRecord) -> bool {
    if lease.released {
        return false;
    }
    if lease.host == host() && lease.pid == std::process::id() {
        return held().contains(&lease.nonce);
    }
    alive(&lease.host, lease.pid)
}

/// The generations of the lease files in `dir`, lowest first.
fn lease_generations(dir: &SearchDir) -> Result<Vec<u64>, ControllerError> {
    dir.lease_generations().map_err(state_error(dir.path()))
}

/// A lease file's record; `None` when there is none or it is not a lease.
fn read_lease(path: &Path) -> Option<LeaseRecord> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The lease a controller holds: the highest generation in the search directory. Dropping
/// it releases it.
///
/// A generation's file is published with `link` (create-if-absent) and never rewritten but
/// by its holder, to mark it released; the highest generation is never removed. So a
/// controller that saw generation N released or its holder gone and then publishes N + 1
/// wins only if nobody took the search since, and of controllers racing for the same N + 1
/// exactly one wins. A live controller's lease is never taken: a holder on another host is
/// taken to live, as its process cannot be checked from here.
#[derive(Debug)]
struct LeaseGuard {
    path: PathBuf,
    lease: LeaseRecord,
}

impl LeaseGuard {
    /// Takes the search in `dir` for this process, or names the controller that holds it.
    fn take(dir: &SearchDir, experiment: &str) -> Result<LeaseGuard, ControllerError> {
        let busy = |lease: &LeaseRecord| ControllerError::Busy {
            experiment: experiment.to_owned(),
            holder: lease.holder(),
        };
        if let Some(legacy) = read_lease(&dir.legacy_lease()) {
            let own = legacy.host == host() && legacy.pid == std::process::id();
            if !own && alive(&legacy.host, legacy.pid) {
                return Err(busy(&legacy));
            }
        }
        let lease = LeaseRecord {
            host: host(),
            pid: std::process::id(),
            at: cohort_catalog::now(),
            nonce: nonce(),
            released: false,
        };
        // Listed before it is published, so that another controller of this process that
        // reads it sees it held.
        held().insert(lease.nonce.clone());
        let taken = Self::publish(dir, lease.clone(), &busy);
        if taken.is_err() {
            held().remove(&lease.nonce);
        }
        taken
    }

    fn publish(
        dir: &SearchDir,
        lease: LeaseRecord,
        busy: &dyn Fn(&LeaseRecord) -> ControllerError,
    ) -> Result<LeaseGuard, ControllerError> {
        let bytes = serde_json::to_vec(&lease).unwrap_or_default();
        let mut generation = lease_generations(dir)?.last().copied().unwrap_or(0);
        // Each pass finds a newer generation published by another controller; it holds the
        // search unless it ended at once, so few passes are ever needed.
        for _ in 0..64 {
            if generation > 0 {
                // Absent: removed by the winner of a later generation, which the link finds.
                if let Some(current) = read_lease(&dir.lease(generation)) {
                    if holds(&current) {
                        return Err(busy(&current));
                    }
                }
            }
            let path = dir.lease(generation + 1);
            // On NFS a retransmitted link can report the name taken although it took it:
            // the nonce tells.
            let won = publish_new(&path, &bytes)?
                || std::fs::read(&path).is_ok_and(|published| published == bytes);
            if won {
                for old in lease_generations(dir)? {
                    if old <= generation {
                        let _ = std::fs::remove_file(dir.lease(old));
                    }
                }
                let _ = std::fs::remove_file(dir.legacy_lease());
                return Ok(LeaseGuard { path, lease });
            }
            generation += 1;
        }
        Err(ControllerError::State {
            path: dir.lease(generation).display().to_string(),
            problem: "cannot take the search's lease: controllers keep taking it and ending".into(),
        })
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        // Only while it is still this controller's: a later generation may have replaced it
        // if this host was taken for dead.
        if read_lease(&self.path).is_some_and(|l| l.nonce == self.lease.nonce) {
            let released = LeaseRecord {
                released: true,
                ..self.lease.clone()
            };
            let _ = replace(
                &self.path,
                &serde_json::to_vec(&released).unwrap_or_default(),
            );
        }
        held().remove(&self.lease.nonce);
    }
}

/// Reads the events. A last line that a crash left torn (not ended by a newline, or not a
/// record) is ignored, and a record glued to the torn start of another (left by a controller
/// of an earlier version appending after a crash) is read; a damaged line followed by whole
/// ones is an error.
pub fn read_events(dir: &SearchDir) -> Result<Vec<Event>, ControllerError> {
    let path = dir.events();
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(state_error(&path)(e)),
    };
    Ok(scan_events(&path, &bytes)?.events)
}

/// What `events.jsonl` holds.
#[derive(Debug)]
struct EventScan {
    events: Vec<Event>,
    /// Length of the whole lines: what follows is a torn tail, never committed.
    whole: u64,
    /// What was skipped or dropped, one sentence each.
    problems: Vec<String>,
}

/// Reads events from `bytes` (the content of `path`). A line is committed once its newline is
/// written: the controller writes a record and its newline at once, and flushes them before it
/// launches anything that depends on them. So a tail with no newline, and whole lines at the end that are not records (a crash
/// can leave zeros or garbage where a write was under way), were never committed. A damaged
/// line before a record is not a crash's torn tail and is an error, so that the searcher is
/// never replayed with a decision missing.
fn scan_events(path: &Path, bytes: &[u8]) -> Result<EventScan, ControllerError> {
    let mut events = Vec::new();
    let mut problems = Vec::new();
    let mut whole = 0;
    let mut whole_lines = 0;
    // The first line since the last record that is not one: (line number, why).
    let mut damaged: Option<(usize, String)> = None;
    let mut start = 0;
    let mut number = 0;
    while let Some(len) = bytes[start..].iter().position(|&b| b == b'\n') {
        number += 1;
        let line = &bytes[start..start + len];
        start += len + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(line) {
            Ok((event, cut)) => {
                if let Some((at, why)) = damaged.take() {
                    return Err(ControllerError::State {
                        path: path.display().to_string(),
                        problem: format!(
                            "line {at}: {why}; records follow it, so it is damage, not a write cut short by a crash"
                        ),
                    });
                }
                if cut > 0 {
                    problems.push(format!(
                        "line {number}: skipped {cut} bytes left by a write cut short by a crash ({}), read the record after them",
                        excerpt(&line[..cut])
                    ));
                }
                events.push(event);
                whole = start;
                whole_lines = number;
            }
            Err(why) => {
                damaged.get_or_insert((number, why));
            }
        }
    }
    if whole < bytes.len() {
        problems.push(format!(
            "{} bytes after line {whole_lines} are a record cut short by a crash and were never committed: {}",
            bytes.len() - whole,
            excerpt(&bytes[whole..])
        ));
    }
    Ok(EventScan {
        events,
        whole: u64::try_from(whole).unwrap_or(u64::MAX),
        problems,
    })
}

/// One line's record, and how many bytes before it were skipped: a controller of an earlier
/// version, resumed after a crash mid-write, appended its first record to the torn one.
fn parse_line(line: &[u8]) -> Result<(Event, usize), String> {
    let whole_error = match serde_json::from_slice::<Event>(line) {
        Ok(event) => return Ok((event, 0)),
        Err(e) => e.to_string(),
    };
    // Records are written with their tag first, and inside a JSON string the quotes of this
    // pattern would be escaped, so it only starts a record.
    const START: &[u8] = b"{\"event\":";
    (1..line.len())
        .filter(|&at| line[at..].starts_with(START))
        .find_map(|at| {
            serde_json::from_slice::<Event>(&line[at..])
                .ok()
                .map(|event| (event, at))
        })
        .ok_or(whole_error)
}

/// The start of `bytes` for a message, quoted.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
    let more = if bytes.len() > 80 { "..." } else { "" };
    format!("{:?}{more}", text)
}

/// A trial as the controller sees it.
#[derive(Debug, Clone)]
struct TrialSlot {
    trial: u64,
    search_trial: u64,
    hparams: Values,
    /// Length being trained to, and the attempt.
    until: u64,
    attempt: u32,
}

/// The controller.
#[derive(Debug)]
pub struct Controller {
    catalog: Catalog,
    experiment: Experiment,
    spec: ExperimentSpec,
    searcher: Box<dyn Searcher>,
    dir: SearchDir,
    /// Held while the controller lives; released when it is dropped.
    _lease: LeaseGuard,
    events: std::fs::File,
    /// Length of `events.jsonl`: every record written so far, each ended by its newline.
    events_len: u64,
    /// Whether events were written since the last flush.
    unsynced: bool,
    /// What opening found wrong and repaired, for the caller to show.
    warnings: Vec<Warning>,
    /// Trials waiting for a slot (new, promoted, or to restart).
    pending: Vec<TrialSlot>,
    /// Trials running: launched here, or adopted.
    running: BTreeMap<u64, (TrialSlot, Box<dyn Running>)>,
    by_search: BTreeMap<u64, u64>,
    hparams: BTreeMap<u64, Values>,
    /// Trials an earlier controller launched, to hand to the launcher: (trial, handle).
    adopt: Vec<(u64, Handle)>,
    /// Trials an earlier controller created but died before assigning: (trial, hyperparameters).
    /// The replayed searcher asks for them again, and gets these rather than new ones.
    unassigned: Vec<(u64, Values)>,
    /// Trials the searcher stopped this round, to note in their states at its end.
    stopped: Vec<(u64, PathBuf, StopNote)>,
    done: bool,
}

impl Controller {
    /// Starts a new search of `spec`, or fails if its experiment already has one.
    pub fn start(catalog: &Catalog, spec: &ExperimentSpec) -> Result<Controller, ControllerError> {
        let config = serde_json::json!({
            "file": spec.file.display().to_string(),
            "metric": spec.searcher.metric,
            "smaller_is_better": spec.searcher.smaller_is_better,
        });
        let (experiment, _) = catalog.create_experiment(&NewExperiment {
            name: spec.name.clone(),
            description: spec.description.clone(),
            config,
            searcher: Some(searcher_name(spec)),
        })?;
        let dir = experiment.search_dir();
        mkdir_if_absent(dir.path())?;
        let text = std::fs::read(&spec.file).map_err(state_error(&spec.file))?;
        // Published once: of two starts of the same experiment, the first to link it wins.
        if !publish_new(&dir.spec(), &text)? {
            return Err(ControllerError::Other(format!(
                "experiment {} already has a search; `cohort search resume {}` continues it",
                spec.name, spec.name
            )));
        }
        Controller::open(catalog, experiment, spec.clone())
    }

    /// Resumes the search of experiment `name`: replays its events and adopts running trials.
    pub fn resume(catalog: &Catalog, name: &str) -> Result<Controller, ControllerError> {
        let experiment = catalog.experiment(name)?;
        let spec_path = experiment.search_dir().spec();
        if !spec_path.exists() {
            return Err(ControllerError::Other(format!(
                "experiment {name} has no search to resume (no {})",
                spec_path.display()
            )));
        }
        let mut spec =
            ExperimentSpec::load(&spec_path).map_err(|e| ControllerError::Other(e.to_string()))?;
        spec.file = spec_path;
        Controller::open(catalog, experiment, spec)
    }

    fn open(
        catalog: &Catalog,
        experiment: Experiment,
        spec: ExperimentSpec,
    ) -> Result<Controller, ControllerError> {
        let dir = experiment.search_dir();
        // One controller at a time: only the lease holder writes the event log.
        let lease = LeaseGuard::take(&dir, &spec.name)?;
        let events_path = dir.events();
        let mut events = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&events_path)
            .map_err(state_error(&events_path))?;
        let mut bytes = Vec::new();
        events
            .read_to_end(&mut bytes)
            .map_err(state_error(&events_path))?;
        if bytes.is_empty() {
            // Perhaps just created: its name must survive a crash with the first records.
            sync_dir(dir.path());
        }
        let scan = scan_events(&events_path, &bytes)?;
        if scan.whole < bytes.len() as u64 {
            // Cut the torn tail off, or the next record would be glued to it.
            events
                .set_len(scan.whole)
                .and_then(|()| events.sync_all())
                .map_err(|e| ControllerError::State {
                    path: events_path.display().to_string(),
                    problem: format!("cannot cut off a torn last record: {e}"),
                })?;
        }
        let warnings = scan
            .problems
            .into_iter()
            .map(|problem| Warning {
                path: events_path.clone(),
                problem,
            })
            .collect();
        let searcher = build(&spec).map_err(ControllerError::Other)?;
        let mut controller = Controller {
            catalog: catalog.clone(),
            experiment,
            spec,
            searcher,
            dir,
            _lease: lease,
            events,
            events_len: scan.whole,
            unsynced: false,
            warnings,
            pending: Vec::new(),
            running: BTreeMap::new(),
            by_search: BTreeMap::new(),
            hparams: BTreeMap::new(),
            adopt: Vec::new(),
            unassigned: Vec::new(),
            stopped: Vec::new(),
            done: false,
        };
        controller.replay(&scan.events)?;
        controller.unassigned = controller.unassigned_trials();
        Ok(controller)
    }

    /// Rebuilds the searcher's state and the trials' from past events.
    fn replay(&mut self, past: &[Event]) -> Result<(), ControllerError> {
        let mut launched: BTreeMap<u64, TrialSlot> = BTreeMap::new();
        let mut launched_by: BTreeMap<u64, Handle> = BTreeMap::new();
        let mut unreported: BTreeMap<u64, TrialSlot> = BTreeMap::new();
        for event in past {
            match event {
                Event::Assign {
                    search_trial,
                    trial,
                    until,
                    hparams,
                    ..
                } => {
                    // Every assignment came from the searcher's next(): ask it again.
                    match self.searcher.next() {
                        Next::Train { trial: t, until: u, .. } if t == *search_trial && u == *until => {}
                        other => {
                            return Err(ControllerError::Other(format!(
                                "replaying the search: the searcher gave {other:?} where the log has trial {search_trial} to length {until}; was the experiment file changed?"
                            )))
                        }
                    }
                    if let Some(h) = hparams {
                        self.hparams.insert(*trial, h.clone());
                    }
                    self.by_search.insert(*search_trial, *trial);
                    self.pending.push(TrialSlot {
                        trial: *trial,
                        search_trial: *search_trial,
                        hparams: self.hparams.get(trial).cloned().unwrap_or_default(),
                        until: *until,
                        attempt: 0,
                    });
                }
                Event::Launched {
                    trial,
                    until,
                    attempt,
                    handle,
                } => {
                    launched_by.insert(*trial, handle.clone());
                    if let Some(pos) = self.pending.iter().position(|p| p.trial == *trial) {
                        let mut slot = self.pending.remove(pos);
                        slot.until = *until;
                        slot.attempt = *attempt;
                        launched.insert(*trial, slot);
                    }
                }
                Event::Exited {
                    trial,
                    ok,
                    preempted,
                    ..
                } => {
                    if let Some(slot) = launched.remove(trial) {
                        if *ok {
                            unreported.insert(*trial, slot);
                        } else if *preempted {
                            // Runs again, which is no restart.
                            self.pending.push(slot);
                        } else {
                            // Restarted (a later Launched) unless a Failed follows.
                            self.pending.push(TrialSlot {
                                attempt: slot.attempt + 1,
                                ..slot
                            });
                        }
                    }
                }
                Event::Report {
                    search_trial,
                    length,
                    metric,
                } => {
                    let decision = self.searcher.report(*search_trial, *length, *metric);
                    let trial = self.by_search.get(search_trial).copied().unwrap_or(0);
                    unreported.remove(&trial);
                    if let Decision::Continue(until) = decision {
                        self.pending.push(TrialSlot {
                            trial,
                            search_trial: *search_trial,
                            hparams: self.hparams.get(&trial).cloned().unwrap_or_default(),
                            until,
                            attempt: 0,
                        });
                    }
                }
                Event::Failed { search_trial } => {
                    self.searcher.failed(*search_trial);
                    let trial = self.by_search.get(search_trial).copied().unwrap_or(0);
                    self.pending.retain(|p| p.trial != trial);
                    unreported.remove(&trial);
                }
                Event::Finished { .. } => self.done = true,
            }
        }
        // Launched and not seen to end: adopted. Ended without a report (the controller died
        // in between): reported at the first step.
        for (trial, slot) in launched {
            let handle = launched_by.remove(&trial).unwrap_or_else(|| Handle::Local {
                host: String::new(),
                pid: 0,
            });
            // Watched through its state until the launcher adopts it (first step).
            let watch = StateWatch::new(self.trial_dir(trial), handle.clone());
            self.adopt.push((trial, handle));
            self.running.insert(trial, (slot, Box::new(watch)));
        }
        for (trial, slot) in unreported {
            self.running.insert(trial, (slot, Box::new(Ended)));
        }
        Ok(())
    }

    /// Trials of the experiment that no event assigns and that never started: an earlier
    /// controller died between creating one and recording it.
    fn unassigned_trials(&self) -> Vec<(u64, Values)> {
        let assigned: std::collections::BTreeSet<u64> = self.by_search.values().copied().collect();
        self.catalog
            .trial_records(&self.experiment)
            .into_iter()
            .filter(|(trial, _)| !assigned.contains(&trial.id))
            .filter(|(trial, _)| {
                matches!(
                    read_state(&trial.dir),
                    Ok(None
                        | Some(cohort_proto::catalog::StateRecord {
                            state: TrialState::Queued,
                            ..
                        }))
                )
            })
            .map(|(trial, record)| (trial.id, record.hparams))
            .collect()
    }

    /// The catalog trial of each decision that needs a new one (it has hyperparameters): the
    /// unassigned one an earlier controller made for the same values, else one created now
    /// (all of the round's together). `None` for decisions that go on with their trial.
    fn new_trials<T, U>(
        &mut self,
        decided: &[(u64, Option<Values>, T, U)],
    ) -> Result<Vec<Option<u64>>, ControllerError> {
        let mut ids: Vec<Option<u64>> = Vec::with_capacity(decided.len());
        let mut create: Vec<(usize, Values)> = Vec::new();
        for (i, (_, hparams, _, _)) in decided.iter().enumerate() {
            let Some(values) = hparams else {
                ids.push(None);
                continue;
            };
            match self.unassigned.iter().position(|(_, h)| h == values) {
                Some(pos) => ids.push(Some(self.unassigned.remove(pos).0)),
                None => {
                    ids.push(None);
                    create.push((i, values.clone()));
                }
            }
        }
        let command = command_of(&self.spec);
        let created = self.catalog.create_trials(
            &self.experiment,
            create
                .iter()
                .map(|(_, values)| (values.clone(), command.clone()))
                .collect(),
            Some(TrialState::Queued),
        )?;
        for ((i, _), trial) in create.into_iter().zip(created) {
            ids[i] = Some(trial.id);
        }
        Ok(ids)
    }

    /// Appends `event` and its newline to the log in one write; [`Controller::commit`] makes
    /// it durable, which happens before any launch, after a round's launches and at the end of
    /// each round, so that a round's records cost a flush or two rather than one each.
    fn record(&mut self, event: &Event) -> Result<(), ControllerError> {
        let mut line = serde_json::to_vec(event).unwrap_or_default();
        line.push(b'\n');
        let written = self.events.write_all(&line);
        if let Err(e) = written {
            // A part written (a full disk) would be glued to the next record: cut it off.
            // Should that fail too, the next controller cuts it off when it opens the log.
            let _ = self.events.set_len(self.events_len);
            return Err(ControllerError::State {
                path: self.dir.events().display().to_string(),
                problem: format!("cannot record: {e}"),
            });
        }
        self.events_len += line.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Makes every recorded event durable (one `fdatasync`).
    fn commit(&mut self) -> Result<(), ControllerError> {
        if !self.unsynced {
            return Ok(());
        }
        self.events
            .sync_data()
            .map_err(|e| ControllerError::State {
                path: self.dir.events().display().to_string(),
                problem: format!("cannot record: {e}"),
            })?;
        self.unsynced = false;
        Ok(())
    }

    /// What opening the search found wrong and repaired (a torn last record of the event log),
    /// each naming the file; empty once taken.
    pub fn take_warnings(&mut self) -> Vec<Warning> {
        std::mem::take(&mut self.warnings)
    }

    /// Records the directory the search's trials start in (`search/cwd`, replaced whole).
    pub fn save_workdir(&self, cwd: &Path) -> Result<(), ControllerError> {
        replace(&self.dir.workdir(), cwd.as_os_str().as_encoded_bytes())?;
        Ok(())
    }

    /// The directory the search's trials start in, as [`Controller::save_workdir`] recorded it.
    pub fn workdir(&self) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        let bytes = std::fs::read(self.dir.workdir()).ok()?;
        (!bytes.is_empty()).then(|| PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }

    /// Runs at most `n` trials at once (fewer than the file allows).
    pub fn limit_concurrency(&mut self, n: u64) {
        self.spec.searcher.max_concurrent_trials =
            self.spec.searcher.max_concurrent_trials.min(n.max(1));
    }

    /// The experiment.
    pub fn experiment(&self) -> &Experiment {
        &self.experiment
    }

    fn trial_dir(&self, trial: u64) -> PathBuf {
        self.experiment.trial_dir(trial)
    }

    fn slots(&self) -> usize {
        usize::try_from(self.spec.searcher.max_concurrent_trials).unwrap_or(usize::MAX)
    }

    /// The metric a trial reported at or before `until`: the value at the highest such step.
    fn metric_at(&self, trial: u64, until: u64) -> Option<f64> {
        let name = &self.spec.searcher.metric;
        let history = cohort_catalog::read::history(
            &self.trial_dir(trial),
            Some(std::slice::from_ref(name)),
            &mut Vec::new(),
        )
        .ok()?;
        let until = i64::try_from(until).unwrap_or(i64::MAX);
        history
            .get(name)?
            .iter()
            .rfind(|p| p.step <= until)
            .map(|p| p.value)
    }

    /// One round: launch what fits, see what ended, decide. Returns false when the search is
    /// over.
    pub fn step(&mut self, launcher: &mut dyn Launcher) -> Result<bool, ControllerError> {
        let more = self.round(launcher);
        let committed = self.commit();
        let more = more?;
        committed?;
        Ok(more)
    }

    fn round(&mut self, launcher: &mut dyn Launcher) -> Result<bool, ControllerError> {
        if self.done {
            return Ok(false);
        }
        for (trial, launched) in std::mem::take(&mut self.adopt) {
            let dir = self.trial_dir(trial);
            let Some((slot, handle)) = self.running.get_mut(&trial) else {
                continue;
            };
            let job = Job {
                catalog: self.catalog.root().to_path_buf(),
                experiment: self.spec.name.clone(),
                trial,
                dir,
                hparams: slot.hparams.clone(),
                until: slot.until,
                attempt: slot.attempt,
            };
            if let Some(adopted) = launcher.adopt(&launched, &job) {
                *handle = adopted;
            }
        }
        if self.dir.stop().exists() {
            for trial in self.running.keys() {
                let _ = cohort_catalog::catalog::request_stop(&self.trial_dir(*trial));
            }
            if self.running.is_empty() {
                self.record(&Event::Finished {
                    reason: "stopped".into(),
                })?;
                self.done = true;
                return Ok(false);
            }
        } else {
            self.fill(launcher)?;
        }
        // What ended is decided on at once: its slot, or its promotion, is launched in this
        // round rather than the next.
        if self.reap()? > 0 && !self.dir.stop().exists() {
            self.fill(launcher)?;
        }
        // What the searcher stopped is noted in the trials' states once the round's launches
        // are out; one the searcher promoted again within the round runs already, and keeps
        // the state its launch gave it.
        let stopped: Vec<(PathBuf, StopNote)> = std::mem::take(&mut self.stopped)
            .into_iter()
            .filter(|(trial, _, _)| {
                !self.running.contains_key(trial) && !self.pending.iter().any(|s| s.trial == *trial)
            })
            .map(|(_, dir, note)| (dir, note))
            .collect();
        note_stopped(stopped);
        if self.running.is_empty() && self.pending.is_empty() {
            // Nothing runs and nothing waits: ask once more, then end.
            self.fill(launcher)?;
            if self.running.is_empty() && self.pending.is_empty() {
                self.record(&Event::Finished {
                    reason: "done".into(),
                })?;
                self.done = true;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Starts what fits: the trials waiting to run again, then the searcher's next ones; all
    /// of this round's together (a Slurm launcher may submit them as job arrays).
    fn fill(&mut self, launcher: &mut dyn Launcher) -> Result<(), ControllerError> {
        let mut round: Vec<TrialSlot> = Vec::new();
        while self.running.len() + round.len() < self.slots() && !self.pending.is_empty() {
            round.push(self.pending.remove(0));
        }
        // The searcher's decisions first, then their new trials created together (one disk
        // wait for all, not one per file), then the assignments recorded in order.
        let mut decided: Vec<(u64, Option<Values>, u64, Option<crate::tpe::Fit>)> = Vec::new();
        while self.running.len() + round.len() + decided.len() < self.slots() {
            match self.searcher.next() {
                Next::Train {
                    trial,
                    hparams,
                    until,
                } => {
                    let model = hparams
                        .is_some()
                        .then(|| self.searcher.last_fit())
                        .flatten();
                    decided.push((trial, hparams, until, model));
                }
                Next::Wait | Next::Done => break,
            }
        }
        let ids = self.new_trials(&decided)?;
        for ((search_trial, hparams, until, model), id) in decided.into_iter().zip(ids) {
            let trial = match (id, self.by_search.get(&search_trial)) {
                (Some(id), _) => {
                    if let Some(values) = &hparams {
                        self.hparams.insert(id, values.clone());
                    }
                    id
                }
                (None, Some(&trial)) => trial,
                (None, None) => {
                    return Err(ControllerError::Other(format!(
                        "the searcher resumed trial {search_trial}, which it never created"
                    )))
                }
            };
            self.by_search.insert(search_trial, trial);
            self.record(&Event::Assign {
                search_trial,
                trial,
                until,
                hparams,
                model,
            })?;
            round.push(TrialSlot {
                trial,
                search_trial,
                hparams: self.hparams.get(&trial).cloned().unwrap_or_default(),
                until,
                attempt: 0,
            });
        }
        let jobs: Vec<Job> = round
            .iter()
            .map(|slot| Job {
                catalog: self.catalog.root().to_path_buf(),
                experiment: self.spec.name.clone(),
                trial: slot.trial,
                dir: self.trial_dir(slot.trial),
                hparams: slot.hparams.clone(),
                until: slot.until,
                attempt: slot.attempt,
            })
            .collect();
        if jobs.is_empty() {
            return Ok(());
        }
        // Assignments are durable before anything is launched.
        self.commit()?;
        // A copy started just before a controller died, unrecorded, still runs or waits: the
        // launcher finds it rather than start the trial twice.
        let started = launcher.start(&jobs);
        let mut failure = None;
        for (slot, result) in round.into_iter().zip(started) {
            match result {
                Ok(running) => {
                    self.record(&Event::Launched {
                        trial: slot.trial,
                        until: slot.until,
                        attempt: slot.attempt,
                        handle: running.handle(),
                    })?;
                    self.running.insert(slot.trial, (slot, running));
                }
                Err(e) => {
                    // Run again by the next controller (the trial is assigned, not launched).
                    failure.get_or_insert(e);
                }
            }
        }
        // What was launched is durable at once: a controller that takes over adopts it rather
        // than looking for it.
        self.commit()?;
        failure.map_or(Ok(()), |e| Err(ControllerError::Other(e)))
    }

    /// Takes the trials that ended and decides on each; returns how many ended.
    fn reap(&mut self) -> Result<usize, ControllerError> {
        let mut ended: Vec<(u64, Outcome)> = Vec::new();
        for (trial, (_, handle)) in &mut self.running {
            if let Some(outcome) = handle.poll() {
                ended.push((*trial, outcome));
            }
        }
        let count = ended.len();
        for (trial, outcome) in ended {
            let Some((slot, _)) = self.running.remove(&trial) else {
                continue;
            };
            match outcome {
                Outcome::Completed => {
                    self.record(&Event::Exited {
                        trial,
                        ok: true,
                        reason: None,
                        preempted: false,
                    })?;
                    match self.metric_at(trial, slot.until) {
                        Some(metric) => {
                            self.record(&Event::Report {
                                search_trial: slot.search_trial,
                                length: slot.until,
                                metric,
                            })?;
                            match self.searcher.report(slot.search_trial, slot.until, metric) {
                                Decision::Continue(until) => self.pending.push(TrialSlot {
                                    until,
                                    attempt: 0,
                                    ..slot
                                }),
                                Decision::Stop => self.stopped.push((
                                    trial,
                                    self.trial_dir(trial),
                                    (slot.until, self.searcher.position(slot.search_trial)),
                                )),
                                Decision::Complete => {}
                            }
                        }
                        None => {
                            // It ran but never reported the metric: it cannot be compared.
                            self.record(&Event::Failed {
                                search_trial: slot.search_trial,
                            })?;
                            self.searcher.failed(slot.search_trial);
                            mark(
                                &self.trial_dir(trial),
                                &format!(
                                    "the trial never reported metric {:?} up to step {}",
                                    self.spec.searcher.metric, slot.until
                                ),
                            );
                        }
                    }
                }
                Outcome::Preempted(reason) => {
                    // Slurm took its nodes back and its job is gone: it runs again from its
                    // checkpoint, under the same attempt (a preemption is no failure).
                    self.record(&Event::Exited {
                        trial,
                        ok: false,
                        reason: Some(reason),
                        preempted: true,
                    })?;
                    self.pending.push(slot);
                }
                Outcome::Failed(reason) => {
                    self.record(&Event::Exited {
                        trial,
                        ok: false,
                        reason: Some(reason.clone()),
                        preempted: false,
                    })?;
                    if slot.attempt < self.spec.searcher.max_restarts {
                        self.pending.push(TrialSlot {
                            attempt: slot.attempt + 1,
                            ..slot
                        });
                    } else {
                        self.record(&Event::Failed {
                            search_trial: slot.search_trial,
                        })?;
                        self.searcher.failed(slot.search_trial);
                    }
                }
            }
        }
        Ok(count)
    }

    /// Runs the search to its end, polling every `interval`.
    pub fn run(
        &mut self,
        launcher: &mut dyn Launcher,
        interval: Duration,
    ) -> Result<(), ControllerError> {
        let mut last = Instant::now();
        while self.step(launcher)? {
            let spent = last.elapsed();
            if spent < interval {
                std::thread::sleep(interval - spent);
            }
            last = Instant::now();
        }
        Ok(())
    }
}

/// A trial that ended before the controller could record its report.
#[derive(Debug)]
struct Ended;

impl Running for Ended {
    fn poll(&mut self) -> Option<Outcome> {
        Some(Outcome::Completed)
    }
    fn handle(&self) -> Handle {
        Handle::Local {
            host: host(),
            pid: 0,
        }
    }
}

/// Records that the searcher stopped a trial at `length` (it may resume it later).
/// Why a trial was stopped: the length it reached, and its bracket and rung.
type StopNote = (u64, Option<(usize, usize)>);

/// Marks trials the searcher stopped (`(directory, length, bracket and rung)`) as killed with
/// why, all at once: informational, so done after the round's launches, and a failure is
/// ignored (the event log has the decision).
fn note_stopped(stopped: Vec<(PathBuf, StopNote)>) {
    let _ = cohort_catalog::catalog::update_states(stopped, |(length, position), s| {
        s.state = TrialState::Killed;
        s.message = Some(match position {
            Some((bracket, rung)) => format!(
                "stopped by the searcher after length {length} (bracket {bracket}, rung {rung}); it resumes from its checkpoint if promoted"
            ),
            None => format!("stopped by the searcher after length {length}"),
        });
    });
}

/// Sets a failure message on a trial's state without changing who wrote the rest.
fn mark(dir: &Path, message: &str) {
    let _ = cohort_catalog::catalog::update_state(dir, |s| {
        s.state = TrialState::Failed;
        s.message = Some(message.to_owned());
    });
}

fn command_of(spec: &ExperimentSpec) -> Vec<String> {
    match &spec.launch {
        crate::spec::Launch::Command(command) => command.clone(),
        crate::spec::Launch::Sbatch(path) => vec!["sbatch".into(), path.display().to_string()],
    }
}

fn searcher_name(spec: &ExperimentSpec) -> String {
    match &spec.searcher.kind {
        crate::spec::SearcherKind::Single => "single",
        crate::spec::SearcherKind::Grid => "grid",
        crate::spec::SearcherKind::Random => "random",
        crate::spec::SearcherKind::Asha(_) => "asha",
    }
    .to_owned()
}

/// Asks a running search and its trials to stop.
pub fn request_stop(catalog: &Catalog, name: &str) -> Result<PathBuf, ControllerError> {
    let dir = catalog.experiment(name)?.search_dir();
    if !dir.spec().exists() {
        return Err(ControllerError::Other(format!(
            "experiment {name} has no search"
        )));
    }
    let path = dir.stop();
    // Already there: asked before, which is as good.
    publish_new(&path, b"")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
name = "orphans"
command = ["true"]
[searcher]
name = "random"
metric = "loss"
max_trials = 4
max_concurrent_trials = 2
max_length = 4
[hyperparameters]
x = { type = "double", minval = 0.0, maxval = 1.0 }
"#;

    /// Launches nothing for real: remembers the jobs, which never end.
    #[derive(Default)]
    struct Recorder(Vec<Job>);

    #[derive(Debug)]
    struct Forever;

    impl Running for Forever {
        fn poll(&mut self) -> Option<Outcome> {
            None
        }
        fn handle(&self) -> Handle {
            Handle::Local {
                host: host(),
                pid: 0,
            }
        }
    }

    impl Launcher for Recorder {
        fn launch(&mut self, job: &Job) -> Result<Box<dyn Running>, String> {
            self.0.push(job.clone());
            Ok(Box::new(Forever))
        }
        fn find(&mut self, _: &Job) -> Option<Box<dyn Running>> {
            None
        }
    }

    #[test]
    fn a_trial_created_but_not_recorded_before_a_crash_is_used_not_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("exp.toml");
        std::fs::write(&file, SPEC).unwrap();
        let spec = ExperimentSpec::load(&file).unwrap();
        let catalog = Catalog::open_or_create(dir.path().join("catalog")).unwrap();
        // The controller starts, creates its first trial, and dies before recording it.
        let controller = Controller::start(&catalog, &spec).unwrap();
        let Next::Train {
            hparams: Some(first),
            ..
        } = build(&spec).unwrap().next()
        else {
            panic!("the searcher offers no first trial");
        };
        let orphan = catalog
            .create_trial(
                controller.experiment(),
                first.clone(),
                vec![],
                Some(TrialState::Queued),
            )
            .unwrap();
        drop(controller);

        let mut resumed = Controller::resume(&catalog, "orphans").unwrap();
        let mut launcher = Recorder::default();
        assert!(resumed.step(&mut launcher).unwrap());
        let launched: Vec<(u64, Values)> = launcher
            .0
            .iter()
            .map(|job| (job.trial, job.hparams.clone()))
            .collect();
        assert_eq!(launched.len(), 2);
        assert_eq!(launched[0], (orphan.id, first));
        let experiment = catalog.experiment("orphans").unwrap();
        assert_eq!(
            catalog.trial_records(&experiment).len(),
            2,
            "one trial per searcher trial"
        );
    }

    /// Launches nothing for real: every trial fails at once, so each step records events.
    struct FailNow;

    #[derive(Debug)]
    struct Failed;

    impl Running for Failed {
        fn poll(&mut self) -> Option<Outcome> {
            Some(Outcome::Failed("failed at once".into()))
        }
        fn handle(&self) -> Handle {
            Handle::Local {
                host: host(),
                pid: 0,
            }
        }
    }

    impl Launcher for FailNow {
        fn launch(&mut self, _: &Job) -> Result<Box<dyn Running>, String> {
            Ok(Box::new(Failed))
        }
        fn adopt(&mut self, _: &Handle, _: &Job) -> Option<Box<dyn Running>> {
            Some(Box::new(Failed))
        }
        fn find(&mut self, _: &Job) -> Option<Box<dyn Running>> {
            None
        }
    }

    /// Every run is preempted at once, and its job does not come back by itself; remembers
    /// the attempts it launched.
    #[derive(Default)]
    struct PreemptNow(Vec<(u64, u32)>);

    #[derive(Debug)]
    struct Preempted;

    impl Running for Preempted {
        fn poll(&mut self) -> Option<Outcome> {
            Some(Outcome::Preempted("stopped at step 3 (SIGTERM)".into()))
        }
        fn handle(&self) -> Handle {
            Handle::Local {
                host: host(),
                pid: 0,
            }
        }
    }

    impl Launcher for PreemptNow {
        fn launch(&mut self, job: &Job) -> Result<Box<dyn Running>, String> {
            self.0.push((job.trial, job.attempt));
            Ok(Box::new(Preempted))
        }
        fn adopt(&mut self, _: &Handle, _: &Job) -> Option<Box<dyn Running>> {
            Some(Box::new(Preempted))
        }
        fn find(&mut self, _: &Job) -> Option<Box<dyn Running>> {
            None
        }
    }

    #[test]
    fn a_preempted_trial_runs_again_without_using_its_restarts_also_after_a_resume() {
        let (_dir, spec, catalog) = setup();
        assert_eq!(spec.searcher.max_restarts, 5);
        let mut controller = Controller::start(&catalog, &spec).unwrap();
        let mut launcher = PreemptNow::default();
        // Far more preemptions than max_restarts allows failures.
        for _ in 0..20 {
            assert!(controller.step(&mut launcher).unwrap());
        }
        drop(controller);
        assert!(launcher.0.len() >= 20, "{:?}", launcher.0);
        assert!(
            launcher.0.iter().all(|&(_, attempt)| attempt == 0),
            "a preemption is no restart: {:?}",
            launcher.0
        );
        let events = read_events(&controller_search(&catalog)).unwrap();
        assert!(!events.iter().any(|e| matches!(e, Event::Failed { .. })));
        assert!(events.iter().any(|e| matches!(
            e,
            Event::Exited {
                preempted: true,
                ok: false,
                ..
            }
        )));
        // A controller resumed from the log runs them again, still as first attempts.
        let mut controller = Controller::resume(&catalog, "orphans").unwrap();
        let before = launcher.0.len();
        assert!(controller.step(&mut launcher).unwrap());
        assert!(launcher.0.len() > before);
        assert!(launcher.0[before..]
            .iter()
            .all(|&(_, attempt)| attempt == 0));
    }

    fn controller_search(catalog: &Catalog) -> SearchDir {
        catalog.experiment("orphans").unwrap().search_dir()
    }

    /// A catalog with the experiment file `SPEC` beside it.
    fn setup() -> (tempfile::TempDir, ExperimentSpec, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("exp.toml");
        std::fs::write(&file, SPEC).unwrap();
        let spec = ExperimentSpec::load(&file).unwrap();
        let catalog = Catalog::open_or_create(dir.path().join("catalog")).unwrap();
        (dir, spec, catalog)
    }

    fn append(path: &Path, bytes: &[u8]) {
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
    }

    /// Every line of the log, each parsed on its own (a glued line fails to).
    fn lines_one_record_each(path: &Path) -> Vec<Event> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.ends_with('\n'),
            "the log ends with a whole line: {text:?}"
        );
        text.lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("line {line:?} is not one record: {e}"))
            })
            .collect()
    }

    #[test]
    fn a_torn_last_event_is_cut_off_at_each_resume_and_no_committed_event_is_lost() {
        let (_dir, spec, catalog) = setup();
        let mut controller = Controller::start(&catalog, &spec).unwrap();
        let search = controller.experiment().search_dir();
        let log = search.events();
        assert!(controller.step(&mut FailNow).unwrap());
        drop(controller);
        let first = read_events(&search).unwrap();
        assert!(first.len() >= 4, "{first:?}");
        let committed = std::fs::metadata(&log).unwrap().len();

        // A crash in the middle of a record: part of it, no newline.
        let torn = br#"{"event":"launched","trial":1,"un"#;
        append(&log, torn);
        assert_eq!(
            read_events(&search).unwrap(),
            first,
            "a reader skips the torn tail"
        );
        let mut controller = Controller::resume(&catalog, "orphans").unwrap();
        let warnings = controller.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].path, log);
        assert!(
            warnings[0]
                .problem
                .contains(&format!("{} bytes", torn.len()))
                && warnings[0].problem.contains("never committed")
                && warnings[0].problem.contains("launched"),
            "the warning says what was dropped: {}",
            warnings[0].problem
        );
        assert_eq!(std::fs::metadata(&log).unwrap().len(), committed);
        assert_eq!(lines_one_record_each(&log), first);
        assert!(controller.step(&mut FailNow).unwrap());
        drop(controller);
        let second = lines_one_record_each(&log);
        assert!(second.len() > first.len() && second.starts_with(&first));

        // Another crash, this time leaving a whole line that is not a record.
        append(&log, b"{\"event\":\"exited\",\"trial\":2,\"ok\":fa\0\0\n");
        let mut controller = Controller::resume(&catalog, "orphans").unwrap();
        assert_eq!(controller.take_warnings().len(), 1);
        assert_eq!(lines_one_record_each(&log), second);
        assert!(controller.step(&mut FailNow).unwrap());
        drop(controller);
        let third = lines_one_record_each(&log);
        assert!(third.len() > second.len() && third.starts_with(&second));
        assert_eq!(read_events(&search).unwrap(), third);

        // A clean log gives no warning.
        let mut controller = Controller::resume(&catalog, "orphans").unwrap();
        assert!(controller.take_warnings().is_empty());
    }

    #[test]
    fn a_last_line_without_its_newline_is_not_committed_even_when_it_parses() {
        let bytes =
            b"{\"event\":\"failed\",\"search_trial\":0}\n{\"event\":\"failed\",\"search_trial\":1}";
        let scan = scan_events(Path::new("events.jsonl"), bytes).unwrap();
        assert_eq!(scan.events, vec![Event::Failed { search_trial: 0 }]);
        assert_eq!(scan.whole, 36);
        assert_eq!(scan.problems.len(), 1);
    }

    #[test]
    fn a_record_glued_to_a_torn_one_is_read_and_the_torn_bytes_are_named() {
        let bytes = b"{\"event\":\"failed\",\"search_trial\":0}\n{\"event\":\"exi{\"event\":\"failed\",\"search_trial\":1}\n{\"event\":\"failed\",\"search_trial\":2}\n";
        let scan = scan_events(Path::new("events.jsonl"), bytes).unwrap();
        let trials: Vec<Event> = (0..3).map(|t| Event::Failed { search_trial: t }).collect();
        assert_eq!(scan.events, trials);
        assert_eq!(scan.whole, bytes.len() as u64);
        assert_eq!(scan.problems.len(), 1);
        assert!(
            scan.problems[0].starts_with("line 2: skipped 13 bytes"),
            "{:?}",
            scan.problems
        );
    }

    #[test]
    fn damage_before_whole_records_is_an_error_not_a_torn_tail() {
        let bytes = b"{\"event\":\"failed\",\"search_trial\":0}\nnot a record\n{\"event\":\"failed\",\"search_trial\":1}\n";
        let err = scan_events(Path::new("events.jsonl"), bytes).unwrap_err();
        assert!(
            err.to_string().starts_with("events.jsonl: line 2:"),
            "{err}"
        );
    }

    /// Takes the lease of `dir` from `threads` threads at once; returns how many won, keeping
    /// the winners' leases until all are done.
    fn race_for_lease(dir: &Path, threads: usize) -> (usize, Vec<String>) {
        let barrier = std::sync::Barrier::new(threads);
        let results: Vec<Result<LeaseGuard, ControllerError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        LeaseGuard::take(&SearchDir::new(dir), "raced")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let losers: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        (won, losers)
    }

    fn lease_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn of_controllers_racing_for_a_new_lease_exactly_one_wins() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let (won, losers) = race_for_lease(dir.path(), 6);
            assert_eq!(won, 1, "{losers:?}");
            assert!(
                losers
                    .iter()
                    .all(|e| e.contains("is driven by the controller")),
                "{losers:?}"
            );
            // One generation, published whole, and no temporary file left.
            assert_eq!(lease_files(dir.path()), vec!["controller-1.json"]);
        }
    }

    /// A pid above Linux's highest: no process has it.
    const DEAD_PID: u32 = 0x3FFF_FFFF;

    fn write_lease(path: &Path, host: String, pid: u32, released: bool) {
        let lease = LeaseRecord {
            host,
            pid,
            at: 0.0,
            nonce: "old".into(),
            released,
        };
        std::fs::write(path, serde_json::to_vec(&lease).unwrap()).unwrap();
    }

    #[test]
    fn of_controllers_racing_to_take_over_a_dead_controllers_lease_exactly_one_wins() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            write_lease(
                &SearchDir::new(dir.path()).lease(3),
                host(),
                DEAD_PID,
                false,
            );
            let (won, losers) = race_for_lease(dir.path(), 6);
            assert_eq!(won, 1, "{losers:?}");
            // The next generation, the dead one's removed.
            assert_eq!(lease_files(dir.path()), vec!["controller-4.json"]);
        }
    }

    #[test]
    fn a_live_controllers_lease_is_never_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = SearchDir::new(dir.path()).lease(1);
        let parent = std::os::unix::process::parent_id();
        write_lease(&path, host(), parent, false);
        let err = LeaseGuard::take(&SearchDir::new(dir.path()), "raced").unwrap_err();
        assert!(err.to_string().contains(&format!(":{parent}")), "{err}");
        // Another host's controller cannot be checked from here: it is taken to live.
        write_lease(&path, "elsewhere".into(), DEAD_PID, false);
        let err = LeaseGuard::take(&SearchDir::new(dir.path()), "raced").unwrap_err();
        assert!(err.to_string().contains("elsewhere"), "{err}");
        // A live controller of this process holds its lease against another of it.
        let dir = tempfile::tempdir().unwrap();
        let held = LeaseGuard::take(&SearchDir::new(dir.path()), "raced").unwrap();
        assert!(LeaseGuard::take(&SearchDir::new(dir.path()), "raced").is_err());
        drop(held);
        assert_eq!(lease_files(dir.path()), vec!["controller-1.json"]);
        assert!(
            read_lease(&SearchDir::new(dir.path()).lease(1))
                .unwrap()
                .released
        );
        let again = LeaseGuard::take(&SearchDir::new(dir.path()), "raced").unwrap();
        assert_eq!(again.path, SearchDir::new(dir.path()).lease(2));
        assert_eq!(lease_files(dir.path()), vec!["controller-2.json"]);
        // Nothing is written while refusing.
        let live = tempfile::tempdir().unwrap();
        write_lease(&SearchDir::new(live.path()).lease(5), host(), parent, false);
        assert!(LeaseGuard::take(&SearchDir::new(live.path()), "raced").is_err());
        assert_eq!(lease_files(live.path()), vec!["controller-5.json"]);
    }

    #[test]
    fn a_released_or_dead_lease_is_taken_by_the_next_generation() {
        let dir = tempfile::tempdir().unwrap();
        write_lease(
            &SearchDir::new(dir.path()).lease(1),
            host(),
            std::os::unix::process::parent_id(),
            true,
        );
        let taken = LeaseGuard::take(&SearchDir::new(dir.path()), "x").unwrap();
        assert_eq!(taken.path, SearchDir::new(dir.path()).lease(2));
        let on_disk = read_lease(&taken.path).unwrap();
        assert_eq!(on_disk.nonce, taken.lease.nonce);
        assert!(!on_disk.released);
        assert_eq!((on_disk.host, on_disk.pid), (host(), std::process::id()));
        drop(taken);
        // Left unreleased by a dead process whose pid this one has now.
        write_lease(
            &SearchDir::new(dir.path()).lease(2),
            host(),
            std::process::id(),
            false,
        );
        let taken = LeaseGuard::take(&SearchDir::new(dir.path()), "x").unwrap();
        assert_eq!(taken.path, SearchDir::new(dir.path()).lease(3));
        drop(taken);
        // The lease file of earlier versions: a dead holder's is taken over and removed.
        let legacy = tempfile::tempdir().unwrap();
        write_lease(
            &SearchDir::new(legacy.path()).legacy_lease(),
            host(),
            DEAD_PID,
            false,
        );
        drop(LeaseGuard::take(&SearchDir::new(legacy.path()), "x").unwrap());
        assert_eq!(lease_files(legacy.path()), vec!["controller-1.json"]);
        write_lease(
            &SearchDir::new(legacy.path()).legacy_lease(),
            host(),
            std::os::unix::process::parent_id(),
            false,
        );
        assert!(LeaseGuard::take(&SearchDir::new(legacy.path()), "x").is_err());
    }

    #[test]
    fn starting_a_search_publishes_its_files_whole_and_leaves_no_temporary_file() {
        let (dir, spec, catalog) = setup();
        let controller = Controller::start(&catalog, &spec).unwrap();
        let search = controller.experiment().search_dir();
        assert_eq!(std::fs::read(search.spec()).unwrap(), SPEC.as_bytes());
        controller.save_workdir(Path::new("/first")).unwrap();
        controller.save_workdir(dir.path()).unwrap();
        assert_eq!(controller.workdir().as_deref(), Some(dir.path()));
        assert_eq!(
            lease_files(search.path()),
            vec!["controller-1.json", "cwd", "events.jsonl", "spec.toml"]
        );
        // A second start of the experiment, from another file, changes nothing.
        let other = dir.path().join("other.toml");
        std::fs::write(&other, SPEC.replace("max_trials = 4", "max_trials = 9")).unwrap();
        let err = Controller::start(&catalog, &ExperimentSpec::load(&other).unwrap()).unwrap_err();
        assert!(err.to_string().contains("already has a search"), "{err}");
        assert_eq!(std::fs::read(search.spec()).unwrap(), SPEC.as_bytes());
        // Asking it to stop twice is as good as once.
        let stop = request_stop(&catalog, "orphans").unwrap();
        assert_eq!(request_stop(&catalog, "orphans").unwrap(), stop);
        assert!(stop.is_file());
        drop(controller);
        assert_eq!(
            lease_files(search.path()),
            vec![
                "controller-1.json",
                "cwd",
                "events.jsonl",
                "spec.toml",
                "stop"
            ]
        );
    }

    #[test]
    fn of_starts_of_one_search_racing_exactly_one_runs() {
        let (_dir, spec, catalog) = setup();
        let barrier = std::sync::Barrier::new(4);
        let started: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (barrier, spec, catalog) = (&barrier, &spec, &catalog);
                    scope.spawn(move || {
                        barrier.wait();
                        Controller::start(catalog, spec)
                            .map(drop)
                            .map_err(|e| e.to_string())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            started.iter().filter(|r| r.is_ok()).count(),
            1,
            "{started:?}"
        );
        assert!(
            started
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| e.contains("already has a search")),
            "{started:?}"
        );
    }
}
