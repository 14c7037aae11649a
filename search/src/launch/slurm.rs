//! Submits each trial as a Slurm job (`sbatch --cohort --cohort-exp --cohort-trial`) and
//! watches it with `squeue`; the job's end is read from the trial's state, which the Slurm
//! plugin records. Every Slurm command has a deadline, so a hung slurmctld never hangs the
//! search, and a job counts as ended only by its own end record.
//!
//! A job's name carries the trial, its length and its attempt, so that a controller finds a
//! job its predecessor submitted without recording it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cohort_catalog::catalog::{read_state, slurm_output, slurm_output_pattern};
use cohort_proto::catalog::{StateRecord, TrialState};
use cohort_proto::env as vars;

use super::array::{groups, Arrays};
use super::{start_one, Handle, Job, Launcher, Outcome, Running};
use crate::spec::{ExperimentSpec, Launch};

/// Submits each trial as a Slurm job, or a round's trials as job arrays.
#[derive(Debug)]
pub struct SlurmLauncher {
    spec: ExperimentSpec,
    cwd: PathBuf,
    /// Submits and watches job arrays: the file asks for them (`[resources] job_array =
    /// true`), or an earlier controller's elements are adopted.
    arrays: Arrays,
}

impl SlurmLauncher {
    /// How often a controller using it polls its trials.
    pub const INTERVAL: Duration = Duration::from_secs(1);

    /// Submits `spec`'s trials, each starting in `cwd`; the search's files are in
    /// `search_dir` (where job arrays are described).
    pub fn new(spec: ExperimentSpec, cwd: PathBuf, search_dir: &Path) -> SlurmLauncher {
        let arrays = Arrays::new(search_dir);
        SlurmLauncher { spec, cwd, arrays }
    }

    /// Whether `sbatch` runs here (a Slurm login or compute node).
    pub fn available() -> bool {
        Command::new("sbatch")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

/// A trial's Slurm job, watched with squeue; its end is read from the trial's state, which
/// the plugin records.
#[derive(Debug)]
struct SlurmJob {
    id: u32,
    dir: PathBuf,
    /// When squeue first stopped listing it (the plugin may still be recording its end).
    gone_since: Option<Instant>,
    /// When squeue first failed in a row (slurmctld busy or unreachable).
    failing_since: Option<Instant>,
}

impl SlurmJob {
    fn new(id: u32, dir: &Path) -> SlurmJob {
        SlurmJob {
            id,
            dir: dir.to_path_buf(),
            gone_since: None,
            failing_since: None,
        }
    }
}

/// How long a Slurm command may take before it counts as failed.
pub(super) const SLURM_COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How long squeue may keep failing before the trial's job counts as lost.
const SQUEUE_FAILING_LIMIT: Duration = Duration::from_secs(600);
/// How long the plugin has to record a trial's end after its job left the queue.
const END_RECORD_GRACE: Duration = Duration::from_secs(30);

/// Runs `command` to its end, killing it after `limit`: a Slurm command waiting on a hung
/// slurmctld must not hang the search.
pub(super) fn output_within(mut command: Command, limit: Duration) -> Result<Output, String> {
    let name = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{name} did not answer within {} s (is slurmctld up?)",
                    limit.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for {name}: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// `sbatch --parsable` for one of `spec`'s trials (or job arrays) of `experiment`, named
/// `name`, on the resources the file asks for, starting in `cwd`, through the plugin; the
/// caller adds the output, the trial and the script.
pub(super) fn sbatch(spec: &ExperimentSpec, cwd: &Path, experiment: &str, name: &str) -> Command {
    let mut command = Command::new("sbatch");
    command
        .arg("--parsable")
        .arg(format!("--job-name={name}"))
        .arg(format!("--nodes={}", spec.nodes))
        .arg(format!("--ntasks-per-node={}", spec.gpus_per_node.max(1)))
        .arg(format!("--chdir={}", cwd.display()))
        .arg("--cohort")
        .arg(format!("--cohort-exp={experiment}"));
    if spec.gpus_per_node > 0 {
        command.arg(format!("--gpus-per-node={}", spec.gpus_per_node));
    }
    command
}

/// Runs `command` (an `sbatch --parsable`) within its deadline; returns the job id it printed,
/// or why `what` was not submitted.
pub(super) fn submit(command: Command, what: &str) -> Result<u32, String> {
    let out = output_within(command, SLURM_COMMAND_LIMIT).map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "sbatch refused {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split(';')
        .next()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("sbatch printed {text:?}, not a job id"))
}

/// The job name of a trial's run: one name per trial, length and attempt, so that a
/// controller can find a job its predecessor submitted without recording it.
fn slurm_job_name(job: &Job) -> String {
    format!(
        "cohort-{}-{}-u{}-a{}",
        job.experiment, job.trial, job.until, job.attempt
    )
}

pub(super) fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// How a job that has left the queue ended, by the record the plugin wrote of it in the
/// trial's state: only the record `ours` accepts counts (an earlier run's end is not this
/// one's). Without one, the plugin may still be recording the end: `None` for a grace period,
/// then a failure naming `output`.
pub(super) fn ended_by_record(
    dir: &Path,
    what: &str,
    ours: impl Fn(&StateRecord) -> bool,
    output: &str,
    gone_since: &mut Option<Instant>,
) -> Option<Outcome> {
    match read_state(dir) {
        Ok(Some(state))
            if (state.state.is_final() || state.state == TrialState::Preempted) && ours(&state) =>
        {
            let message = state
                .message
                .unwrap_or_else(|| format!("{what} ended {}", state.state));
            Some(match state.state {
                TrialState::Completed => Outcome::Completed,
                TrialState::Preempted => Outcome::Preempted(message),
                _ => Outcome::Failed(message),
            })
        }
        _ => {
            // The plugin records the end as the step finishes; give it a moment.
            let since = *gone_since.get_or_insert_with(Instant::now);
            (since.elapsed() > END_RECORD_GRACE).then(|| {
                Outcome::Failed(format!(
                    "{what} ended without recording the trial's end (see {output})"
                ))
            })
        }
    }
}

impl Running for SlurmJob {
    fn poll(&mut self) -> Option<Outcome> {
        let mut squeue = Command::new("squeue");
        squeue.args(["-h", "-o", "%T", "-j", &self.id.to_string()]);
        match output_within(squeue, SLURM_COMMAND_LIMIT) {
            Ok(out) if out.status.success() => {
                self.failing_since = None;
                if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                    return None;
                }
            }
            // A job slurmctld has forgotten.
            Ok(out) if String::from_utf8_lossy(&out.stderr).contains("Invalid job id") => {
                self.failing_since = None;
            }
            failed => {
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() < SQUEUE_FAILING_LIMIT {
                    return None;
                }
                let why = match failed {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => e,
                };
                return Some(Outcome::Failed(format!(
                    "job {}: squeue has failed for {} s: {why}",
                    self.id,
                    SQUEUE_FAILING_LIMIT.as_secs()
                )));
            }
        }
        // The job has left the queue: a job Slurm requeues (a preemption, `scontrol
        // requeue`, `--cohort-requeue`) stays listed, pending, and is followed above.
        let id = self.id.to_string();
        ended_by_record(
            &self.dir,
            &format!("job {id}"),
            |state| state.slurm_job.as_deref() == Some(&id),
            &slurm_output(&self.dir, self.id).display().to_string(),
            &mut self.gone_since,
        )
    }

    fn handle(&self) -> Handle {
        Handle::Slurm { job: self.id }
    }
}

impl Launcher for SlurmLauncher {
    fn launch(&mut self, job: &Job) -> Result<Box<dyn Running>, String> {
        let mut command = sbatch(&self.spec, &self.cwd, &job.experiment, &slurm_job_name(job));
        command
            .arg(format!(
                "--output={}",
                slurm_output_pattern(&job.dir).display()
            ))
            .arg(format!("--cohort-trial={}", job.trial));
        match &self.spec.launch {
            Launch::Sbatch(path) => {
                command.arg(path);
            }
            Launch::Command(words) => {
                let line: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
                command.arg(format!("--wrap=srun {}", line.join(" ")));
            }
        }
        // sbatch passes its environment on (the values hold commas, which --export cannot).
        command
            .env(vars::CATALOG, &job.catalog)
            .env(vars::SEARCH_UNTIL, job.until.to_string())
            .env(
                vars::HPARAMS,
                serde_json::to_string(&job.hparams).unwrap_or_default(),
            );
        let id = submit(command, &format!("trial {}", job.trial))?;
        Ok(Box::new(SlurmJob::new(id, &job.dir)))
    }

    fn find(&mut self, job: &Job) -> Option<Box<dyn Running>> {
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)?;
        let mut squeue = Command::new("squeue");
        squeue
            .args(["-h", "-o", "%i", "-u", &user, "-n"])
            .arg(slurm_job_name(job));
        let out = output_within(squeue, SLURM_COMMAND_LIMIT).ok()?;
        let listed = String::from_utf8_lossy(&out.stdout);
        let id: u32 = listed.split_whitespace().next()?.parse().ok()?;
        Some(Box::new(SlurmJob::new(id, &job.dir)))
    }

    fn adopt(&mut self, handle: &Handle, job: &Job) -> Option<Box<dyn Running>> {
        match handle {
            Handle::Slurm { job: id } => Some(Box::new(SlurmJob::new(*id, &job.dir))),
            Handle::SlurmArray { job: array, task } => Some(self.arrays.watch(*array, *task, job)),
            Handle::Local { .. } => None,
        }
    }

    fn start(&mut self, jobs: &[Job]) -> Vec<Result<Box<dyn Running>, String>> {
        let (true, Launch::Command(words)) = (self.spec.job_array, &self.spec.launch) else {
            return jobs.iter().map(|job| start_one(self, job)).collect();
        };
        let arrays = &self.arrays;
        let queued = match jobs.first() {
            Some(first) => arrays.queued(&first.experiment),
            None => return Vec::new(),
        };
        let mut started: Vec<Option<Result<Box<dyn Running>, String>>> = jobs
            .iter()
            .map(|job| {
                queued
                    .get(&(job.trial, job.until, job.attempt))
                    .map(|&(array, task)| Ok(arrays.watch(array, task, job)))
            })
            .collect();
        let new: Vec<Job> = jobs
            .iter()
            .zip(&started)
            .filter(|(_, found)| found.is_none())
            .map(|(job, _)| job.clone())
            .collect();
        let positions: Vec<usize> = (0..jobs.len()).filter(|&i| started[i].is_none()).collect();
        for group in groups(&new) {
            let members: Vec<Job> = group.iter().map(|&i| new[i].clone()).collect();
            for job in &members {
                cohort_catalog::catalog::clear_stop(&job.dir);
            }
            match arrays.submit(&self.spec, &self.cwd, words, &members) {
                Ok(elements) => {
                    for (&i, element) in group.iter().zip(elements) {
                        started[positions[i]] = Some(Ok(element));
                    }
                }
                Err(e) => {
                    for &i in &group {
                        started[positions[i]] = Some(Err(e.clone()));
                    }
                }
            }
        }
        started
            .into_iter()
            .map(|s| s.unwrap_or_else(|| Err("not submitted".into())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_srun_only_when_needed() {
        assert_eq!(shell_quote("train.py"), "train.py");
        assert_eq!(shell_quote("--lr=0.1"), "--lr=0.1");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn a_job_name_tells_trial_length_and_attempt() {
        let job = Job {
            catalog: PathBuf::from("/c"),
            experiment: "mlp".into(),
            trial: 3,
            dir: PathBuf::from("/c/t"),
            hparams: Default::default(),
            until: 27,
            attempt: 1,
        };
        assert_eq!(slurm_job_name(&job), "cohort-mlp-3-u27-a1");
    }

    #[test]
    fn a_slurm_command_past_its_deadline_is_killed_and_named() {
        let mut sleep = Command::new("sleep");
        sleep.arg("5");
        let started = Instant::now();
        let err = output_within(sleep, Duration::from_millis(100)).unwrap_err();
        assert!(err.starts_with("sleep did not answer"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(4));
        let mut echo = Command::new("echo");
        echo.arg("42;cluster");
        let out = output_within(echo, Duration::from_secs(10)).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "42;cluster\n");
    }
}
