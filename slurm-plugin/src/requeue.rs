//! `--cohort-requeue[=N]`: a job whose ranks stopped at Slurm's warning before the time limit
//! (and checkpointed) goes back in the queue, up to N times, and its next launch goes on in
//! the same trial. Rank 0's node asks slurmctld after the step, with `scontrol requeue`
//! (slurmstepd runs the plugin as root, whom slurmctld lets requeue any job), under a
//! deadline so that a busy slurmctld never holds the step's end.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scontrol` is: on slurmstepd's `PATH`, else where Slurm's packages put it.
fn scontrol() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("scontrol"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/scontrol"))
}

/// Whether the job may be requeued once more: it has been `launch` times so far, and
/// `limit` is what `--cohort-requeue` allows.
pub(crate) fn allowed(launch: u32, limit: u32) -> Result<u32, String> {
    if launch < limit {
        Ok(launch + 1)
    } else {
        Err(format!(
            "--cohort-requeue={limit}: the job has been requeued {launch} times already"
        ))
    }
}

/// Requeues job `job`, waiting at most `deadline` for `scontrol`.
pub(crate) fn requeue(job: u32, deadline: Duration) -> Result<(), String> {
    let program = scontrol();
    let mut child = Command::new(&program)
        .args(["requeue", &job.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "scontrol requeue {job} did not answer within {} s",
                    deadline.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for scontrol: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut said);
    }
    Err(format!(
        "scontrol requeue {job} failed ({status}): {} (a job Slurm may requeue needs --requeue, or JobRequeue=1)",
        said.trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_the_jobs_requeues() {
        assert_eq!(allowed(0, 2), Ok(1));
        assert_eq!(allowed(1, 2), Ok(2));
        assert_eq!(
            allowed(2, 2).unwrap_err(),
            "--cohort-requeue=2: the job has been requeued 2 times already"
        );
        assert!(allowed(0, 0).is_err(), "0 turns it off");
    }
}
