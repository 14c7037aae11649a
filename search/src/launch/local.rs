//! Runs each trial on this machine through `cohort run`, with `COHORT_SEARCH_UNTIL` set and
//! its output appended to the trial's `output.log`. Each run is a process group of its own,
//! so interrupting the controller leaves the trials running; a later controller adopts them
//! through their state in the catalog.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cohort_proto::env as vars;

use super::{host, Handle, Job, Launcher, Outcome, Running};
use crate::spec::{ExperimentSpec, Launch};

/// Starts trials on this machine through `cohort run`.
#[derive(Debug)]
pub struct LocalLauncher {
    cohort: PathBuf,
    command: Vec<String>,
    cwd: PathBuf,
}

impl LocalLauncher {
    /// How often a controller using it polls its trials.
    pub const INTERVAL: Duration = Duration::from_millis(200);

    /// Runs `spec`'s trials in `cwd` with the `cohort` binary at `cohort`: its command, or
    /// its sbatch script run by `sh`.
    pub fn new(cohort: PathBuf, spec: &ExperimentSpec, cwd: PathBuf) -> LocalLauncher {
        let command = match &spec.launch {
            Launch::Command(command) => command.clone(),
            Launch::Sbatch(path) => vec!["sh".into(), path.display().to_string()],
        };
        LocalLauncher {
            cohort,
            command,
            cwd,
        }
    }
}

/// A trial's `cohort run`.
#[derive(Debug)]
struct LocalRun {
    child: Child,
}

impl Running for LocalRun {
    fn poll(&mut self) -> Option<Outcome> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) if status.success() => Some(Outcome::Completed),
            // Its ranks stopped at a warning, after checkpointing (`cohort run` passes their
            // status on).
            Ok(Some(status)) if cohort_proto::catalog::exit::stopped_at_warning(status.code()) => {
                Some(Outcome::Preempted(format!(
                    "its ranks stopped at a warning ({status})"
                )))
            }
            Ok(Some(status)) => Some(Outcome::Failed(format!("cohort run ended with {status}"))),
            Err(e) => Some(Outcome::Failed(format!("cannot wait for cohort run: {e}"))),
        }
    }

    fn handle(&self) -> Handle {
        Handle::Local {
            host: host(),
            pid: self.child.id(),
        }
    }
}

impl Launcher for LocalLauncher {
    fn launch(&mut self, job: &Job) -> Result<Box<dyn Running>, String> {
        let log_path = cohort_catalog::catalog::output_log(&job.dir);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.cohort)
            .arg("run")
            .args(["-n", "1", "--catalog"])
            .arg(&job.catalog)
            .args([
                "--experiment",
                &job.experiment,
                "--trial",
                &job.trial.to_string(),
                "--",
            ])
            .args(&self.command)
            .env(vars::SEARCH_UNTIL, job.until.to_string())
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own process group: interrupting the controller leaves the trials running.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start cohort run for trial {}: {e}", job.trial))?;
        Ok(Box::new(LocalRun { child }))
    }
}
