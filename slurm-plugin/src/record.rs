//! Recording a step in the experiment catalog (`--cohort-exp NAME`, or `COHORT_EXPERIMENT` in
//! the job's environment).
//!
//! The node that hosts rank 0 creates the trial in `user_init`, which runs as the job's user,
//! so the trial's files are the user's; it notes the step's trial in the experiment so the
//! other nodes can find it, and a requeued job (same job and step ids, the next launch) goes
//! on in that trial. A task that fails records the step's failure from `task_exit` (on any
//! node) in a file of its own, created if absent, and rank 0's node records the trial as
//! completed at the step's end; readers merge the two, so a failure is never lost to a
//! `completed` written by another node at the same moment. Those two hooks run as root in
//! slurmstepd: they write with the job's user's filesystem identity (`as_owner`), and what
//! they write is the user's.
//! At the step's end every node adds the GPU series its cohortd sampled as the trial's system
//! metrics (`sys/gpu0/util`, ...), in a segment of its own.
//! Their writes carry the user's identity, not root's, so an NFS export that maps root to
//! nobody (`root_squash`) does not refuse them; any write that fails is said in slurmd's log
//! (the trial then stays `running`).

use std::path::PathBuf;

use cohort_catalog::catalog::{
    new_state, read_state, record_step_failure, record_step_stop, write_state, write_state_owned,
};
use cohort_catalog::system::{publish_system_metrics, SystemRow};
use cohort_catalog::{Catalog, NewExperiment};
use cohort_proto::catalog::{Restart, StateRecord, StepFailure, TrialState, CATALOG_VERSION};
use cohort_proto::daemon::{GpuPoint, GpuSeries};

/// What a node knows about the step's trial.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The catalog's root.
    pub catalog: PathBuf,
    /// The experiment.
    pub experiment: String,
    /// The trial, when this node created it or it was given (`--cohort-trial`).
    pub trial: Option<u64>,
    /// Whether this node hosts rank 0 (and so records the step's end).
    pub rank0_here: bool,
}

/// Where and what to record, as the step asks.
#[derive(Debug, Clone)]
pub struct Request {
    /// The catalog: the job's `COHORT_CATALOG`, else plugstack's `catalog=`.
    pub catalog: Option<PathBuf>,
    /// The experiment.
    pub experiment: String,
    /// A trial to record into instead of a new one (a search's trial, a restart).
    pub trial: Option<u64>,
    /// Hyperparameters for a new trial (`COHORT_HPARAMS`, a JSON object).
    pub hparams: Option<String>,
    /// Slurm job and step.
    pub job: u32,
    /// Step id.
    pub step: u32,
    /// How many times Slurm has requeued the job (`SLURM_RESTART_COUNT`): a requeued job runs
    /// its steps again under the same ids.
    pub launch: u32,
    /// The job array element the job is (`SLURM_ARRAY_JOB_ID` and `SLURM_ARRAY_TASK_ID`,
    /// written `ARRAY_TASK`), when it is one.
    pub array: Option<String>,
    /// The step's nodes.
    pub nodes: Vec<String>,
    /// Whether this node hosts rank 0.
    pub rank0_here: bool,
}

/// Creates or reopens the trial (on rank 0's node) and marks it running. Runs as the user.
pub fn start(request: &Request) -> Result<Recording, String> {
    let root = request.catalog.clone().ok_or_else(|| {
        format!(
            "--cohort-exp {}: no catalog; set COHORT_CATALOG in the job's environment or catalog=DIR in plugstack.conf",
            request.experiment
        )
    })?;
    let mut recording = Recording {
        catalog: root.clone(),
        experiment: request.experiment.clone(),
        trial: request.trial,
        rank0_here: request.rank0_here,
    };
    if !request.rank0_here {
        // A requeued job's trial is noted already: this node's ranks are told it, so that
        // they resume from its checkpoint as rank 0 does. (A first launch's trial may not be
        // created yet; the tracker looks for the note itself then.)
        if recording.trial.is_none() && request.launch > 0 {
            if let Ok(catalog) = Catalog::open(&root) {
                if let Ok(experiment) = catalog.experiment(&request.experiment) {
                    recording.trial = catalog
                        .slurm_trial(&experiment, request.job, request.step)
                        .ok()
                        .flatten();
                }
            }
        }
        return Ok(recording);
    }
    let what = |e: cohort_catalog::CatalogError| format!("recording the step in the catalog: {e}");
    let catalog = Catalog::open_or_create(&root).map_err(what)?;
    let (experiment, _) = catalog
        .create_experiment(&NewExperiment {
            name: request.experiment.clone(),
            ..NewExperiment::default()
        })
        .map_err(what)?;
    let noted = match request.trial {
        Some(_) => None,
        None => catalog
            .slurm_trial(&experiment, request.job, request.step)
            .map_err(what)?,
    };
    let trial = match request.trial.or(noted) {
        // A given trial, or the one this job's step recorded into before Slurm requeued the
        // job: the same trial goes on.
        Some(id) => catalog.trial(&experiment, id).map_err(what)?,
        None => {
            let hparams = match &request.hparams {
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| format!("COHORT_HPARAMS: not a JSON object ({e})"))?,
                None => Default::default(),
            };
            let trial = catalog
                .create_trial(&experiment, hparams, Vec::new(), None)
                .map_err(what)?;
            catalog
                .note_slurm_trial(&experiment, request.job, request.step, trial.id)
                .map_err(what)?;
            trial
        }
    };
    let now = cohort_catalog::now();
    let prior = read_state(&trial.dir).map_err(what)?;
    let requeued = noted.is_some();
    let restarted = prior
        .as_ref()
        // A failed (or crashed) earlier run is a restart, and so is any run of a requeued job;
        // a search resuming a trial it stopped is not.
        .is_some_and(|p| {
            p.started.is_some()
                && (requeued
                    || matches!(
                        p.state,
                        TrialState::Failed | TrialState::Running | TrialState::Preempted
                    ))
        });
    let mut state = prior.unwrap_or_else(|| new_state(TrialState::Running));
    if restarted {
        // What the previous launch said of its end ("stopped at step 40 (SIGUSR2, ...)").
        let was = match &state.message {
            Some(message) => format!("{}: {message}", state.state),
            None => state.state.to_string(),
        };
        let reason = if requeued {
            format!(
                "Slurm job {} requeued: step {} started again, launch {} (was {was})",
                request.job,
                request.step,
                request.launch + 1,
            )
        } else {
            format!(
                "started again as Slurm job {} step {} (was {was})",
                request.job, request.step
            )
        };
        state.restarts.push(Restart { at: now, reason });
    }
    state.state = TrialState::Running;
    state.started = Some(now);
    state.ended = None;
    state.exit_status = None;
    state.exit_signal = None;
    state.message = None;
    state.slurm_job = Some(request.job.to_string());
    state.slurm_step = Some(request.step.to_string());
    state.slurm_launch = Some(request.launch);
    state.slurm_array.clone_from(&request.array);
    state.nodes.clone_from(&request.nodes);
    write_state(&trial.dir, &state).map_err(what)?;
    recording.trial = Some(trial.id);
    Ok(recording)
}

/// The trial's directory: the one this node knows, else the one noted for the step.
fn trial_dir(recording: &Recording, job: u32, step: u32) -> Result<Option<PathBuf>, String> {
    let catalog = Catalog::open(&recording.catalog).map_err(|e| e.to_string())?;
    let experiment = catalog
        .experiment(&recording.experiment)
        .map_err(|e| e.to_string())?;
    let id = match recording.trial {
        Some(id) => Some(id),
        None => catalog
            .slurm_trial(&experiment, job, step)
            .map_err(|e| e.to_string())?,
    };
    Ok(id.map(|id| experiment.trial_dir(id)))
}

/// The step's trial directory, waiting up to `wait` for it: a task on another node can end
/// before rank 0's node has created the step's trial (each node starts its tasks once the gang
/// start answers it), and on NFS a trial another node created can take a moment to show.
fn trial_dir_within(
    recording: &Recording,
    job: u32,
    step: u32,
    wait: std::time::Duration,
) -> Result<PathBuf, String> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let why = match trial_dir(recording, job, step) {
            Ok(Some(dir)) => return Ok(dir),
            Ok(None) => "it was not created".to_owned(),
            Err(e) => e,
        };
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "the step's trial cannot be found after {:.1} s ({why}; did rank 0's node start?)",
                wait.as_secs_f64()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Describes a raw wait status.
fn describe(status: i32) -> (Option<i32>, Option<String>) {
    let signal = status & 0x7f;
    if signal != 0 && signal != 0x7f {
        let name = nix::sys::signal::Signal::try_from(signal)
            .map_or_else(|_| signal.to_string(), |s| s.as_str().to_owned());
        (None, Some(name))
    } else {
        (Some((status >> 8) & 0xff), None)
    }
}

/// How a task ended, from its raw wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnd {
    /// Exit status 0.
    Succeeded,
    /// It stopped at the stop signal after checkpointing (exit status 75): the time limit is
    /// near; `--cohort-requeue` requeues the job.
    AtWarning,
    /// Slurm ended it: SIGTERM killed it, or it exited 143 after checkpointing at SIGTERM
    /// (a preemption, a requeue, a cancel, the time limit).
    Stopped,
    /// Anything else.
    Failed,
}

impl TaskEnd {
    /// Classifies a raw wait status.
    pub fn of(status: i32) -> TaskEnd {
        use cohort_proto::catalog::exit;
        match describe(status) {
            (Some(0), None) => TaskEnd::Succeeded,
            (Some(exit::AT_WARNING), None) => TaskEnd::AtWarning,
            (Some(exit::AT_SIGTERM), None) => TaskEnd::Stopped,
            (None, Some(signal)) if signal == "SIGTERM" => TaskEnd::Stopped,
            _ => TaskEnd::Failed,
        }
    }
}

/// Runs `f` with this thread's filesystem identity (`setfsuid`, `setfsgid`) set to the job's
/// owner: what the plugin writes into the user's catalog from slurmstepd, as root, is then
/// opened, created and checked as the user, so a symbolic link or a directory the user
/// controls leads nowhere the user could not write. Restored after, even on a panic; it
/// changes only the calling thread, and nothing for a caller that is already the owner.
fn as_owner<T>(owner: (u32, u32), f: impl FnOnce() -> T) -> T {
    use nix::unistd::{setfsgid, setfsuid, Gid, Uid};
    struct Restore(Uid, Gid);
    impl Drop for Restore {
        fn drop(&mut self) {
            setfsuid(self.0);
            setfsgid(self.1);
        }
    }
    // The group first, while the thread may still change it.
    let gid = setfsgid(Gid::from_raw(owner.1));
    let uid = setfsuid(Uid::from_raw(owner.0));
    let _restore = Restore(uid, gid);
    f()
}

fn change(
    recording: &Recording,
    job: u32,
    step: u32,
    owner: (u32, u32),
    apply: impl FnOnce(&mut StateRecord) -> bool,
) -> Result<(), String> {
    as_owner(owner, || {
        let Some(dir) = trial_dir(recording, job, step)? else {
            return Err("the step's trial was never created (rank 0's node did not start)".into());
        };
        let mut state = read_state(&dir)
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| new_state(TrialState::Running));
        if apply(&mut state) {
            write_state_owned(&dir, &state, Some(owner)).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Records that rank `rank` on `node` ended with wait status `status`, when that is not a
/// success: a failure in the step's failure record, a stop by Slurm (see [`TaskEnd`]) in its
/// stop record. Each is created if absent, so the first recorded stays and no other node's
/// write can undo it. Runs as root; the file goes to `owner`. Waits up to `wait` for rank 0's
/// node to have created the trial.
#[allow(clippy::too_many_arguments)]
pub fn task_ended(
    recording: &Recording,
    job: u32,
    step: u32,
    launch: u32,
    owner: (u32, u32),
    rank: u32,
    node: &str,
    status: i32,
    wait: std::time::Duration,
) -> Result<(), String> {
    as_owner(owner, || {
        let dir = trial_dir_within(recording, job, step, wait)?;
        let end = TaskEnd::of(status);
        if end == TaskEnd::Succeeded {
            return Ok(());
        }
        let (exit_status, exit_signal) = describe(status);
        let message = match (end, exit_status, &exit_signal) {
            (TaskEnd::AtWarning, ..) => format!(
                "rank {rank} on {node} stopped at Slurm's warning before the time limit (exit status {})",
                cohort_proto::catalog::exit::AT_WARNING
            ),
            (TaskEnd::Stopped, Some(code), _) => format!(
                "rank {rank} on {node} stopped at SIGTERM (exit status {code}): Slurm preempted, requeued or cancelled the job, or its time ran out"
            ),
            (TaskEnd::Stopped, ..) => format!(
                "rank {rank} on {node} was ended by SIGTERM: Slurm preempted, requeued or cancelled the job, or its time ran out"
            ),
            (_, _, Some(signal)) => format!("rank {rank} on {node} was killed by {signal}"),
            (_, Some(code), None) => format!("rank {rank} on {node} exited with status {code}"),
            (_, None, None) => format!("rank {rank} on {node} failed"),
        };
        let failure = StepFailure {
            format: "cohort.step-failure".into(),
            version: CATALOG_VERSION,
            job: job.to_string(),
            step: step.to_string(),
            launch,
            rank,
            node: node.to_owned(),
            exit_status,
            exit_signal,
            message,
            at: cohort_catalog::now(),
        };
        if end == TaskEnd::Failed {
            record_step_failure(&dir, &failure, Some(owner)).map_err(|e| e.to_string())?;
        } else {
            record_step_stop(&dir, &failure, Some(owner)).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Records, on rank 0's node after the step, what `--cohort-requeue` did: `Ok(n)` the job
/// was requeued, the n-th time; `Err(why)` it was not.
pub fn requeue_noted(
    recording: &Recording,
    job: u32,
    step: u32,
    owner: (u32, u32),
    outcome: &Result<u32, String>,
) -> Result<(), String> {
    change(recording, job, step, owner, |state| {
        let said = state.message.take().unwrap_or_default();
        let sep = if said.is_empty() { "" } else { "; " };
        match outcome {
            Ok(n) => {
                state.requeues += 1;
                state.message = Some(format!(
                    "{said}{sep}requeued by --cohort-requeue (the job's requeue {n})"
                ));
            }
            Err(why) => state.message = Some(format!("{said}{sep}not requeued: {why}")),
        }
        true
    })
}

/// The system metrics of one GPU series point (names under `sys/gpuN/`, N the GPU's number
/// within the step), at `step` seconds since the trial was created.
fn system_row(series: &GpuSeries, point: &GpuPoint, started: f64) -> SystemRow {
    let prefix = format!("sys/gpu{}", series.ordinal);
    #[allow(clippy::cast_precision_loss)]
    let t = point.t as f64;
    let mut values = vec![
        (format!("{prefix}/util"), point.util),
        (
            format!("{prefix}/memory_gib"),
            #[allow(clippy::cast_precision_loss)]
            {
                point.memory_used as f64 / f64::from(1u32 << 30)
            },
        ),
    ];
    if let Some(w) = point.power_w {
        values.push((format!("{prefix}/power_w"), w));
    }
    if let Some(c) = point.temperature_c {
        values.push((format!("{prefix}/temperature_c"), f64::from(c)));
    }
    #[allow(clippy::cast_possible_truncation)]
    let step = (t - started).max(0.0).round() as i64;
    SystemRow {
        step,
        wall: t,
        values,
    }
}

/// At the step's end on every node: the node's GPU series (from its cohortd) into the trial
/// as system metrics, one segment per node and launch, given to `owner`. Runs as root.
#[allow(clippy::too_many_arguments)]
pub fn system_metrics(
    recording: &Recording,
    job: u32,
    step: u32,
    launch: u32,
    owner: (u32, u32),
    node: &str,
    series: &[GpuSeries],
    wait: std::time::Duration,
) -> Result<(), String> {
    as_owner(owner, || {
        if series.iter().all(|s| s.points.is_empty()) {
            return Ok(());
        }
        let dir = trial_dir_within(recording, job, step, wait)?;
        // Counted from the trial's creation, which no launch changes: a requeued job's next launch
        // goes on after the previous one's points.
        let started = cohort_catalog::catalog::read_trial_record(&dir)
            .ok()
            .map(|record| record.created)
            .or_else(|| {
                #[allow(clippy::cast_precision_loss)]
                series
                    .iter()
                    .flat_map(|s| s.points.first())
                    .map(|p| p.t as f64)
                    .reduce(f64::min)
            })
            .unwrap_or(0.0);
        let rows: Vec<SystemRow> = series
            .iter()
            .flat_map(|s| s.points.iter().map(move |p| system_row(s, p, started)))
            .collect();
        publish_system_metrics(
            &dir,
            &format!("{node}-{job}.{step}-{launch}"),
            &rows,
            Some(owner),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    })
}

/// At the step's end on rank 0's node: completed, unless a failure was recorded.
pub fn step_ended(
    recording: &Recording,
    job: u32,
    step: u32,
    owner: (u32, u32),
) -> Result<(), String> {
    change(recording, job, step, owner, |state| {
        if state.state != TrialState::Running {
            return false;
        }
        state.state = TrialState::Completed;
        state.ended = Some(cohort_catalog::now());
        state.exit_status = Some(0);
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(dir: &std::path::Path) -> Request {
        Request {
            catalog: Some(dir.to_path_buf()),
            experiment: "e".into(),
            trial: None,
            hparams: Some(r#"{"lr": 0.1}"#.into()),
            job: 42,
            step: 0,
            launch: 0,
            array: None,
            nodes: vec!["node1".into(), "node2".into()],
            rank0_here: true,
        }
    }

    /// This process's uid and gid: the owner the records are given to in these tests.
    fn me() -> (u32, u32) {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    }

    /// How long a task's end waits for the trial in these tests.
    const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

    /// The directory of trial 1 of experiment `e` in the catalog at `root`.
    fn trial_1(root: &std::path::Path) -> PathBuf {
        Catalog::open(root)
            .unwrap()
            .experiment("e")
            .unwrap()
            .trial_dir(1)
    }

    #[test]
    fn a_task_that_fails_before_rank_0s_node_made_the_trial_is_still_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let me = me();
        let other = Recording {
            catalog: dir.path().to_owned(),
            experiment: "e".into(),
            trial: None,
            rank0_here: false,
        };
        // Rank 0's node creates the experiment and the trial 300 ms after the task ended.
        let root = dir.path().to_owned();
        let late = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            start(&request(&root)).unwrap()
        });
        task_ended(&other, 42, 0, 0, me, 3, "node2", 7 << 8, WAIT).unwrap();
        let here = late.join().unwrap();
        step_ended(&here, 42, 0, me).unwrap();
        let state = read_state(&trial_1(dir.path())).unwrap().unwrap();
        assert_eq!(state.state, TrialState::Failed);
        assert_eq!(state.exit_status, Some(7));
        // No trial at all within the wait: an error that says so.
        let none = Recording {
            experiment: "never".into(),
            ..other
        };
        let e = task_ended(
            &none,
            43,
            0,
            0,
            me,
            1,
            "node2",
            1 << 8,
            std::time::Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(e.contains("cannot be found after 0.2 s"), "{e}");
        assert!(e.contains("did rank 0's node start?"), "{e}");
    }

    #[test]
    fn a_failure_on_another_node_wins_over_the_end_of_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let here = start(&request(dir.path())).unwrap();
        assert_eq!(here.trial, Some(1));
        // The other node finds the trial through the note.
        let other = Recording {
            trial: None,
            rank0_here: false,
            ..here.clone()
        };
        let me = me();
        task_ended(&other, 42, 0, 0, me, 3, "node2", 7 << 8, WAIT).unwrap();
        step_ended(&here, 42, 0, me).unwrap();
        let state = read_state(&trial_1(dir.path())).unwrap().unwrap();
        assert_eq!(state.state, TrialState::Failed);
        assert_eq!(state.exit_status, Some(7));
        assert_eq!(
            state.message.as_deref(),
            Some("rank 3 on node2 exited with status 7")
        );
        assert_eq!(state.slurm_job.as_deref(), Some("42"));
        assert_eq!(state.slurm_array, None);
    }

    #[test]
    fn a_job_array_element_records_its_array_and_task() {
        let dir = tempfile::tempdir().unwrap();
        let here = start(&Request {
            array: Some("40_3".into()),
            ..request(dir.path())
        })
        .unwrap();
        step_ended(&here, 42, 0, me()).unwrap();
        let state = read_state(&trial_1(dir.path())).unwrap().unwrap();
        assert_eq!(state.state, TrialState::Completed);
        assert_eq!(
            (state.slurm_job.as_deref(), state.slurm_array.as_deref()),
            (Some("42"), Some("40_3"))
        );
    }

    #[test]
    fn a_failed_step_started_again_records_its_restart() {
        let dir = tempfile::tempdir().unwrap();
        let here = start(&request(dir.path())).unwrap();
        let me = me();
        task_ended(&here, 42, 0, 0, me, 0, "node1", 9, WAIT).unwrap();
        step_ended(&here, 42, 0, me).unwrap();
        let again = start(&Request {
            trial: Some(1),
            job: 43,
            ..request(dir.path())
        })
        .unwrap();
        assert_eq!(again.trial, Some(1));
        let trial = trial_1(dir.path());
        let state = read_state(&trial).unwrap().unwrap();
        assert_eq!(state.state, TrialState::Running);
        assert_eq!(state.restarts.len(), 1);
        assert!(
            state.restarts[0].reason.contains("job 43"),
            "{:?}",
            state.restarts
        );
        assert_eq!(describe(9), (None, Some("SIGKILL".into())));
    }

    #[test]
    fn a_failure_is_never_lost_to_a_completed_written_around_it() {
        let dir = tempfile::tempdir().unwrap();
        let me = me();
        let here = start(&request(dir.path())).unwrap();
        let other = Recording {
            trial: None,
            rank0_here: false,
            ..here.clone()
        };
        // Rank 0's node read the state while it was running; node2's failure lands; rank 0's
        // node then writes what it read, completed. Before failures had files of their own,
        // that write lost the failure.
        let trial = trial_1(dir.path());
        let mut read_before = read_state(&trial).unwrap().unwrap();
        task_ended(&other, 42, 0, 0, me, 3, "node2", 7 << 8, WAIT).unwrap();
        read_before.state = TrialState::Completed;
        read_before.exit_status = Some(0);
        write_state(&trial, &read_before).unwrap();
        let state = read_state(&trial).unwrap().unwrap();
        assert_eq!(state.state, TrialState::Failed);
        assert_eq!(state.exit_status, Some(7));
        assert_eq!(
            state.message.as_deref(),
            Some("rank 3 on node2 exited with status 7")
        );
        // A second failure of the same step does not replace the first.
        task_ended(&here, 42, 0, 0, me, 0, "node1", 9, WAIT).unwrap();
        assert_eq!(read_state(&trial).unwrap().unwrap().exit_status, Some(7));
    }

    #[test]
    fn a_requeued_job_goes_on_in_the_same_trial() {
        let dir = tempfile::tempdir().unwrap();
        let me = me();
        let first = start(&request(dir.path())).unwrap();
        // Preempted: slurmstepd's SIGTERM fails the tasks.
        task_ended(&first, 42, 0, 0, me, 0, "node1", 15, WAIT).unwrap();
        // Slurm runs the job again: same job id, same step id, the next launch.
        let again = start(&Request {
            launch: 1,
            ..request(dir.path())
        })
        .unwrap();
        assert_eq!(again.trial, Some(1), "the same trial, not a new one");
        let catalog = Catalog::open(dir.path()).unwrap();
        assert_eq!(catalog.experiment("e").unwrap().trial_count(), 1);
        step_ended(&again, 42, 0, me).unwrap();
        let state = read_state(&trial_1(dir.path())).unwrap().unwrap();
        assert_eq!(state.state, TrialState::Completed);
        assert_eq!(state.restarts.len(), 1);
        assert!(
            state.restarts[0].reason.contains("requeued")
                && state.restarts[0].reason.contains("launch 2"),
            "{:?}",
            state.restarts
        );
    }

    #[test]
    fn a_launch_slurm_stopped_is_preempted_and_the_next_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let me = me();
        let first = start(&request(dir.path())).unwrap();
        // Rank 1 fails because its peer vanished, then rank 0's node records SIGTERM.
        task_ended(&first, 42, 0, 0, me, 1, "node2", 1 << 8, WAIT).unwrap();
        task_ended(&first, 42, 0, 0, me, 0, "node1", 15, WAIT).unwrap();
        step_ended(&first, 42, 0, me).unwrap();
        let trial = trial_1(dir.path());
        let state = read_state(&trial).unwrap().unwrap();
        assert_eq!(state.state, TrialState::Preempted);
        assert_eq!(state.exit_signal.as_deref(), Some("SIGTERM"));
        assert!(
            state
                .message
                .as_deref()
                .unwrap()
                .contains("rank 0 on node1 was ended by SIGTERM"),
            "{state:?}"
        );
        let again = start(&Request {
            launch: 1,
            ..request(dir.path())
        })
        .unwrap();
        // The second launch stops at the time-limit warning after checkpointing.
        task_ended(&again, 42, 0, 1, me, 0, "node1", 75 << 8, WAIT).unwrap();
        requeue_noted(&again, 42, 0, me, &Ok(2)).unwrap();
        let state = read_state(&trial).unwrap().unwrap();
        assert_eq!(state.state, TrialState::Preempted);
        assert_eq!(state.requeues, 1);
        let message = state.message.unwrap();
        assert!(
            message.contains("stopped at Slurm's warning before the time limit (exit status 75)")
                && message.ends_with("requeued by --cohort-requeue (the job's requeue 2)"),
            "{message}"
        );
        assert!(
            state.restarts[0]
                .reason
                .contains("(was preempted: rank 0 on node1 was ended by SIGTERM"),
            "{:?}",
            state.restarts
        );
        assert_eq!(TaskEnd::of(143 << 8), TaskEnd::Stopped);
        assert_eq!(TaskEnd::of(0), TaskEnd::Succeeded);
        assert_eq!(TaskEnd::of(9), TaskEnd::Failed);
    }

    #[test]
    fn no_catalog_is_a_clear_error() {
        let err = start(&Request {
            catalog: None,
            ..request(std::path::Path::new("/nonexistent"))
        })
        .unwrap_err();
        assert!(
            err.contains("COHORT_CATALOG") && err.contains("catalog=DIR"),
            "{err}"
        );
    }

    /// As root, the owner's filesystem identity: a directory only root may write is refused,
    /// the owner's own takes the file as the owner's, and root's identity comes back after.
    #[test]
    fn writes_go_with_the_owner_s_filesystem_identity() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: changing the filesystem identity needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let roots = dir.path().join("root-only");
        std::fs::create_dir(&roots).unwrap();
        std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o755)).unwrap();
        let theirs = dir.path().join("nobody");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let nobody = (65534, 65534);
        assert!(as_owner(nobody, || std::fs::write(roots.join("x"), b"x")).is_err());
        as_owner(nobody, || std::fs::write(theirs.join("x"), b"x")).unwrap();
        let meta = std::fs::metadata(theirs.join("x")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), nobody);
        std::fs::write(roots.join("y"), b"y").unwrap();
    }
}
