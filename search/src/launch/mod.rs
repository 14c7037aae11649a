//! Starting and watching trials: the [`Launcher`] and [`Running`] traits the controller drives
//! trials through, and the two launchers, [`local::LocalLauncher`] (`cohort run` on this
//! machine) and [`slurm::SlurmLauncher`] (a Slurm job per trial, through `sbatch` and
//! `squeue`).
//!
//! A launched trial is named by a [`Handle`] (a process on a host, or a Slurm job), which the
//! controller records so that a later controller can adopt the trial rather than start it
//! again. A trial whose launcher cannot watch it is watched through its state in the catalog,
//! which its `cohort run` or the Slurm plugin records.

use std::path::PathBuf;

use cohort_catalog::catalog::read_state;
use cohort_proto::catalog::TrialState;
pub use cohort_proto::search::Handle;

use crate::space::Values;

mod array;
pub mod local;
pub mod simulated;
pub mod slurm;

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

/// Starts trial processes.
pub trait Launcher {
    /// Starts `job`; returns a way to see it end.
    fn launch(&mut self, job: &Job) -> Result<Box<dyn Running>, String>;

    /// A handle on a trial an earlier controller launched (`handle` as its [`Running`]
    /// reported it), when this launcher can watch it; otherwise the trial is watched through
    /// its state in the catalog.
    fn adopt(&mut self, handle: &Handle, job: &Job) -> Option<Box<dyn Running>> {
        let _ = (handle, job);
        None
    }

    /// Starts the trials of one round of the controller: each one's copy that already runs
    /// ([`Launcher::find`]), else a new launch (its stop request cleared first); one result
    /// per job, in order. A launcher that can start them together (Slurm job arrays) does.
    fn start(&mut self, jobs: &[Job]) -> Vec<Result<Box<dyn Running>, String>> {
        jobs.iter().map(|job| start_one(self, job)).collect()
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
            Box::new(StateWatch::new(
                job.dir.clone(),
                Handle::Local {
                    host: state.writer.host,
                    pid: state.writer.pid,
                },
            )) as Box<dyn Running>
        })
    }
}

/// Starts one trial: the copy `launcher` finds already running, else a new launch.
pub(crate) fn start_one<L: Launcher + ?Sized>(
    launcher: &mut L,
    job: &Job,
) -> Result<Box<dyn Running>, String> {
    match launcher.find(job) {
        Some(found) => Ok(found),
        None => {
            cohort_catalog::catalog::clear_stop(&job.dir);
            launcher.launch(job)
        }
    }
}

/// How a trial's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran to the length it was given.
    Completed,
    /// Slurm stopped it (a preemption, the time limit; it checkpointed if it could), and its
    /// job is not coming back by itself: it runs again, which is no restart.
    Preempted(String),
    /// It failed, for this reason.
    Failed(String),
}

/// A started trial.
pub trait Running: std::fmt::Debug {
    /// `None` while it runs; then how it ended.
    fn poll(&mut self) -> Option<Outcome>;

    /// What identifies it: recorded, so that a later controller can find it again.
    fn handle(&self) -> Handle;
}

/// A trial started by an earlier controller, watched through its state in the catalog: its
/// launcher records the end there; a launcher gone without recording it failed.
#[derive(Debug)]
pub(crate) struct StateWatch {
    dir: PathBuf,
    handle: Handle,
}

impl StateWatch {
    /// Watches the trial in `dir`, launched as `handle`.
    pub(crate) fn new(dir: PathBuf, handle: Handle) -> StateWatch {
        StateWatch { dir, handle }
    }
}

impl Running for StateWatch {
    fn poll(&mut self) -> Option<Outcome> {
        match read_state(&self.dir) {
            Ok(Some(state)) if state.state.is_final() => {
                Some(if state.state == TrialState::Completed {
                    Outcome::Completed
                } else {
                    Outcome::Failed(state.message.unwrap_or_else(|| state.state.to_string()))
                })
            }
            Ok(Some(state)) if state.state == TrialState::Preempted => Some(Outcome::Preempted(
                state.message.unwrap_or_else(|| "preempted".into()),
            )),
            Ok(Some(state)) if !alive(&state.writer.host, state.writer.pid) => {
                Some(Outcome::Failed(format!(
                    "its launcher (pid {} on {}) is gone",
                    state.writer.pid, state.writer.host
                )))
            }
            _ => None,
        }
    }

    fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

/// This host's name.
pub(crate) fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Whether process `pid` of `host_name` lives. Another host's process cannot be checked from
/// here: it is taken to live.
pub(crate) fn alive(host_name: &str, pid: u32) -> bool {
    if host_name != host() {
        // Another host's process cannot be checked from here: assume it lives.
        return true;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // EPERM: it exists, under another user.
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Ok(()) | Err(nix::errno::Errno::EPERM)
    )
}
