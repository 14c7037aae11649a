//! The search controller: drives a searcher with real trials recorded in the catalog, keeps
//! at most `max_concurrent_trials` running, restarts failed trials from their checkpoints,
//! and records every decision so a killed controller resumes where it stopped.
//!
//! State lives in the catalog, in the experiment's `search/` directory:
//! - `spec.json`: the experiment file as parsed (written once, when the search starts);
//! - `events.jsonl`: what the controller did, one JSON object per line, appended and fsynced
//!   by the one controller that holds `controller.json` (a lease naming its host and pid);
//! - `stop`: asks the controller and every trial to stop.
//!
//! Searchers are deterministic, so replaying the events through a fresh searcher rebuilds its
//! state exactly; trials that were running when the controller died are adopted (their
//! `cohort run` goes on and records its end in the trial's state), not started again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cohort_catalog::catalog::{read_state, trial_dir_name};
use cohort_catalog::{Catalog, Experiment, NewExperiment};
use cohort_proto::catalog::TrialState;
use serde::{Deserialize, Serialize};

use crate::searcher::{build, Decision, Next, Searcher};
use crate::space::Values;
use crate::spec::ExperimentSpec;

/// One thing the controller did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The searcher handed out work: `search_trial` is the searcher's number, `trial` the
    /// catalog's.
    Assign {
        /// Searcher's trial number.
        search_trial: u64,
        /// Catalog trial number.
        trial: u64,
        /// Length to reach.
        until: u64,
        /// Hyperparameters of a new trial.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hparams: Option<Values>,
    },
    /// A trial's process was started.
    Launched {
        /// Catalog trial.
        trial: u64,
        /// Length it trains to.
        until: u64,
        /// Attempt (0 first, then restarts).
        attempt: u32,
        /// Host and pid of its launcher process.
        host: String,
        /// Pid.
        pid: u32,
    },
    /// A trial's process ended.
    Exited {
        /// Catalog trial.
        trial: u64,
        /// Whether it succeeded.
        ok: bool,
        /// Why it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A trial reported its metric at a length (what the searcher was told).
    Report {
        /// Searcher's trial number.
        search_trial: u64,
        /// Length reached.
        length: u64,
        /// The metric.
        metric: f64,
    },
    /// A trial failed for good.
    Failed {
        /// Searcher's trial number.
        search_trial: u64,
    },
    /// The search ended.
    Finished {
        /// Why (done, stopped).
        reason: String,
    },
}

/// Starts trial processes.
pub trait Launcher {
    /// Starts `job`; returns its pid and a way to see it end.
    fn launch(&mut self, job: &Job) -> Result<Box<dyn Running>, String>;

    /// A handle on a trial an earlier controller launched (`host` and `pid` as its
    /// [`Running`] reported them), when this launcher can watch it; otherwise the trial is
    /// watched through its state in the catalog.
    fn adopt(&mut self, host: &str, pid: u32, job: &Job) -> Option<Box<dyn Running>> {
        let _ = (host, pid, job);
        None
    }

    /// Before `job` is launched: a handle on a copy of it that already runs or waits to
    /// (started by a controller that died before recording it), so that it is not started
    /// twice. By default, a trial whose state says it runs under a live process of this
    /// host is watched through its state.
    fn find(&mut self, job: &Job) -> Option<Box<dyn Running>> {
        let state = read_state(&job.dir).ok()??;
        (state.state == TrialState::Running
            && state.writer.host == host()
            && alive(&state.writer.host, state.writer.pid))
        .then(|| {
            Box::new(StateWatch {
                dir: job.dir.clone(),
                host: state.writer.host,
                pid: state.writer.pid,
            }) as Box<dyn Running>
        })
    }
}

/// A started trial.
pub trait Running: std::fmt::Debug {
    /// `None` while it runs; then whether it succeeded (with the reason when not).
    fn poll(&mut self) -> Option<Result<(), String>>;
    /// Its pid (or the scheduler's job id).
    fn pid(&self) -> u32;

    /// Where it runs: this host's name for a local process, or a scheduler's tag
    /// (`slurm`), recorded with the pid so a later controller can find it again.
    fn host(&self) -> String {
        host()
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Job {
    /// The catalog.
    pub catalog: PathBuf,
    /// The experiment.
    pub experiment: String,
    /// Catalog trial number.
    pub trial: u64,
    /// Its directory.
    pub dir: PathBuf,
    /// Hyperparameters.
    pub hparams: Values,
    /// Length to train to (`COHORT_SEARCH_UNTIL`).
    pub until: u64,
    /// Attempt number.
    pub attempt: u32,
}

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

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    host: String,
    pid: u32,
    at: f64,
}

fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

fn alive(host_name: &str, pid: u32) -> bool {
    if host_name != host() {
        // Another host's process cannot be checked from here: assume it lives.
        return true;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Where a search keeps its state.
pub fn search_dir(experiment: &Experiment) -> PathBuf {
    experiment.dir.join("search")
}

/// Reads the events (a torn last line, from a controller killed mid-write, is ignored).
pub fn read_events(dir: &Path) -> Result<Vec<Event>, ControllerError> {
    let path = dir.join("events.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ControllerError::State {
                path: path.display().to_string(),
                problem: e.to_string(),
            })
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(event) => events.push(event),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(ControllerError::State {
                    path: path.display().to_string(),
                    problem: format!("line {}: {e}", i + 1),
                })
            }
        }
    }
    Ok(events)
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
    dir: PathBuf,
    events: std::fs::File,
    /// Trials waiting for a slot (new, promoted, or to restart).
    pending: Vec<TrialSlot>,
    /// Trials running: launched here, or adopted.
    running: BTreeMap<u64, (TrialSlot, Box<dyn Running>)>,
    by_search: BTreeMap<u64, u64>,
    hparams: BTreeMap<u64, Values>,
    /// Trials an earlier controller launched, to hand to the launcher: (trial, host, pid).
    adopt: Vec<(u64, String, u32)>,
    /// Trials an earlier controller created but died before assigning: (trial, hyperparameters).
    /// The replayed searcher asks for them again, and gets these rather than new ones.
    unassigned: Vec<(u64, Values)>,
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
        let dir = search_dir(&experiment);
        if dir.join("spec.toml").exists() {
            return Err(ControllerError::Other(format!(
                "experiment {} already has a search; `cohort search resume {}` continues it",
                spec.name, spec.name
            )));
        }
        std::fs::create_dir_all(&dir).map_err(|e| ControllerError::State {
            path: dir.display().to_string(),
            problem: e.to_string(),
        })?;
        let text = std::fs::read_to_string(&spec.file).map_err(|e| ControllerError::State {
            path: spec.file.display().to_string(),
            problem: e.to_string(),
        })?;
        std::fs::write(dir.join("spec.toml"), text).map_err(|e| ControllerError::State {
            path: dir.join("spec.toml").display().to_string(),
            problem: e.to_string(),
        })?;
        Controller::open(catalog, experiment, spec.clone())
    }

    /// Resumes the search of experiment `name`: replays its events and adopts running trials.
    pub fn resume(catalog: &Catalog, name: &str) -> Result<Controller, ControllerError> {
        let experiment = catalog.experiment(name)?;
        let dir = search_dir(&experiment);
        let spec_path = dir.join("spec.toml");
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
        let dir = search_dir(&experiment);
        // The lease: one controller at a time.
        let lease_path = dir.join("controller.json");
        if let Ok(bytes) = std::fs::read(&lease_path) {
            if let Ok(lease) = serde_json::from_slice::<Lease>(&bytes) {
                if lease.pid != std::process::id() && alive(&lease.host, lease.pid) {
                    return Err(ControllerError::Busy {
                        experiment: spec.name.clone(),
                        holder: format!("{}:{}", lease.host, lease.pid),
                    });
                }
            }
        }
        let lease = Lease {
            host: host(),
            pid: std::process::id(),
            at: cohort_catalog::now(),
        };
        let tmp = dir.join(format!(".controller.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&lease).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, &lease_path))
            .map_err(|e| ControllerError::State {
                path: lease_path.display().to_string(),
                problem: e.to_string(),
            })?;
        let past = read_events(&dir)?;
        let events_path = dir.join("events.jsonl");
        let events = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&events_path)
            .map_err(|e| ControllerError::State {
                path: events_path.display().to_string(),
                problem: e.to_string(),
            })?;
        let searcher = build(&spec).map_err(ControllerError::Other)?;
        let mut controller = Controller {
            catalog: catalog.clone(),
            experiment,
            spec,
            searcher,
            dir,
            events,
            pending: Vec::new(),
            running: BTreeMap::new(),
            by_search: BTreeMap::new(),
            hparams: BTreeMap::new(),
            adopt: Vec::new(),
            unassigned: Vec::new(),
            done: false,
        };
        controller.replay(&past)?;
        controller.unassigned = controller.unassigned_trials();
        Ok(controller)
    }

    /// Rebuilds the searcher's state and the trials' from past events.
    fn replay(&mut self, past: &[Event]) -> Result<(), ControllerError> {
        let mut launched: BTreeMap<u64, TrialSlot> = BTreeMap::new();
        let mut launched_by: BTreeMap<u64, (String, u32)> = BTreeMap::new();
        let mut unreported: BTreeMap<u64, TrialSlot> = BTreeMap::new();
        for event in past {
            match event {
                Event::Assign {
                    search_trial,
                    trial,
                    until,
                    hparams,
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
                    host,
                    pid,
                } => {
                    launched_by.insert(*trial, (host.clone(), *pid));
                    if let Some(pos) = self.pending.iter().position(|p| p.trial == *trial) {
                        let mut slot = self.pending.remove(pos);
                        slot.until = *until;
                        slot.attempt = *attempt;
                        launched.insert(*trial, slot);
                    }
                }
                Event::Exited { trial, ok, .. } => {
                    if let Some(slot) = launched.remove(trial) {
                        if *ok {
                            unreported.insert(*trial, slot);
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
            let (host, pid) = launched_by.remove(&trial).unwrap_or_default();
            // Watched through its state until the launcher adopts it (first step).
            let watch = StateWatch {
                dir: self.trial_dir(trial),
                host: host.clone(),
                pid,
            };
            self.adopt.push((trial, host, pid));
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

    /// A new catalog trial for `values`, or the unassigned one an earlier controller made.
    fn new_trial(&mut self, values: &Values) -> Result<u64, ControllerError> {
        if let Some(pos) = self.unassigned.iter().position(|(_, h)| h == values) {
            return Ok(self.unassigned.remove(pos).0);
        }
        let created = self.catalog.create_trial(
            &self.experiment,
            values.clone(),
            command_of(&self.spec),
            Some(TrialState::Queued),
        )?;
        Ok(created.id)
    }

    fn record(&mut self, event: &Event) -> Result<(), ControllerError> {
        let mut line = serde_json::to_vec(event).unwrap_or_default();
        line.push(b'\n');
        self.events
            .write_all(&line)
            .and_then(|()| self.events.sync_data())
            .map_err(|e| ControllerError::State {
                path: self.dir.join("events.jsonl").display().to_string(),
                problem: format!("cannot record: {e}"),
            })
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
        self.experiment
            .dir
            .join("trials")
            .join(trial_dir_name(trial))
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
        if self.done {
            return Ok(false);
        }
        for (trial, host, pid) in std::mem::take(&mut self.adopt) {
            let Some((slot, handle)) = self.running.get_mut(&trial) else {
                continue;
            };
            let job = Job {
                catalog: self.catalog.root().to_path_buf(),
                experiment: self.spec.name.clone(),
                trial,
                dir: self
                    .experiment
                    .dir
                    .join("trials")
                    .join(trial_dir_name(trial)),
                hparams: slot.hparams.clone(),
                until: slot.until,
                attempt: slot.attempt,
            };
            if let Some(adopted) = launcher.adopt(&host, pid, &job) {
                *handle = adopted;
            }
        }
        if self.dir.join("stop").exists() {
            for trial in self.running.keys() {
                let _ = std::fs::write(
                    self.trial_dir(*trial)
                        .join(cohort_catalog::tracker::STOP_FILE),
                    b"",
                );
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
        self.reap()?;
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

    fn fill(&mut self, launcher: &mut dyn Launcher) -> Result<(), ControllerError> {
        while self.running.len() < self.slots() {
            let slot = if self.pending.is_empty() {
                match self.searcher.next() {
                    Next::Train {
                        trial: search_trial,
                        hparams,
                        until,
                    } => {
                        let trial = match (hparams.clone(), self.by_search.get(&search_trial)) {
                            (Some(values), _) => {
                                let id = self.new_trial(&values)?;
                                self.hparams.insert(id, values);
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
                        })?;
                        TrialSlot {
                            trial,
                            search_trial,
                            hparams: self.hparams.get(&trial).cloned().unwrap_or_default(),
                            until,
                            attempt: 0,
                        }
                    }
                    Next::Wait | Next::Done => break,
                }
            } else {
                self.pending.remove(0)
            };
            let job = Job {
                catalog: self.catalog.root().to_path_buf(),
                experiment: self.spec.name.clone(),
                trial: slot.trial,
                dir: self.trial_dir(slot.trial),
                hparams: slot.hparams.clone(),
                until: slot.until,
                attempt: slot.attempt,
            };
            // A copy started just before a controller died, unrecorded, still runs or waits:
            // adopt it rather than start the trial twice.
            let running = match launcher.find(&job) {
                Some(found) => found,
                None => {
                    let _ = std::fs::remove_file(job.dir.join(cohort_catalog::tracker::STOP_FILE));
                    launcher.launch(&job).map_err(ControllerError::Other)?
                }
            };
            self.record(&Event::Launched {
                trial: slot.trial,
                until: slot.until,
                attempt: slot.attempt,
                host: running.host(),
                pid: running.pid(),
            })?;
            self.running.insert(slot.trial, (slot, running));
        }
        Ok(())
    }

    fn reap(&mut self) -> Result<(), ControllerError> {
        let mut ended: Vec<(u64, Result<(), String>)> = Vec::new();
        for (trial, (_, handle)) in &mut self.running {
            if let Some(outcome) = handle.poll() {
                ended.push((*trial, outcome));
            }
        }
        for (trial, outcome) in ended {
            let Some((slot, _)) = self.running.remove(&trial) else {
                continue;
            };
            match outcome {
                Ok(()) => {
                    self.record(&Event::Exited {
                        trial,
                        ok: true,
                        reason: None,
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
                                Decision::Stop => note_stopped(
                                    &self.trial_dir(trial),
                                    slot.until,
                                    self.searcher.position(slot.search_trial),
                                ),
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
                Err(reason) => {
                    self.record(&Event::Exited {
                        trial,
                        ok: false,
                        reason: Some(reason.clone()),
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
        Ok(())
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
        let _ = std::fs::remove_file(self.dir.join("controller.json"));
        Ok(())
    }
}

/// A trial that ended before the controller could record its report.
#[derive(Debug)]
struct Ended;

impl Running for Ended {
    fn poll(&mut self) -> Option<Result<(), String>> {
        Some(Ok(()))
    }
    fn pid(&self) -> u32 {
        0
    }
}

/// A trial started by an earlier controller, watched through its state in the catalog: its
/// launcher records the end there; a launcher gone without recording it failed.
#[derive(Debug)]
struct StateWatch {
    dir: PathBuf,
    host: String,
    pid: u32,
}

impl Running for StateWatch {
    fn poll(&mut self) -> Option<Result<(), String>> {
        adopted_outcome(&self.dir)
    }
    fn pid(&self) -> u32 {
        self.pid
    }
    fn host(&self) -> String {
        self.host.clone()
    }
}

fn adopted_outcome(dir: &Path) -> Option<Result<(), String>> {
    match read_state(dir) {
        Ok(Some(state)) if state.state.is_final() => {
            Some(if state.state == TrialState::Completed {
                Ok(())
            } else {
                Err(state.message.unwrap_or_else(|| state.state.to_string()))
            })
        }
        Ok(Some(state)) if !alive(&state.writer.host, state.writer.pid) => Some(Err(format!(
            "its launcher (pid {} on {}) is gone",
            state.writer.pid, state.writer.host
        ))),
        _ => None,
    }
}

/// Records that the searcher stopped a trial at `length` (it may resume it later).
fn note_stopped(dir: &Path, length: u64, position: Option<(usize, usize)>) {
    let _ = cohort_catalog::catalog::update_state(dir, |s| {
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
    let experiment = catalog.experiment(name)?;
    let dir = search_dir(&experiment);
    if !dir.join("spec.toml").exists() {
        return Err(ControllerError::Other(format!(
            "experiment {name} has no search"
        )));
    }
    let path = dir.join("stop");
    std::fs::write(&path, b"").map_err(|e| ControllerError::State {
        path: path.display().to_string(),
        problem: e.to_string(),
    })?;
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
        fn poll(&mut self) -> Option<Result<(), String>> {
            None
        }
        fn pid(&self) -> u32 {
            0
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
}
