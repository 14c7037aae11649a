//! Slurm job arrays (`[resources] job_array = true`): the trials a round of the controller
//! starts together, grouped by the length they train to and their attempt, go to Slurm as one
//! `sbatch --array` each (up to [`MAX_ELEMENTS`] elements), so a search of thousands of short
//! trials does not submit thousands of jobs; and one `squeue` a round watches every element,
//! rather than one per trial.
//!
//! Element `i` runs trial `trials[i]` of the array's manifest (`search/arrays/NAME.json`,
//! written before the submission): the batch script maps `SLURM_ARRAY_TASK_ID` to the trial,
//! its directory and hyperparameters, sends its output to the trial's `slurm-JOBID.out` and
//! runs the command with `srun`, which the plugin records into that trial (`COHORT_TRIAL`). The
//! plugin writes the element (`ARRAY_TASK`) into the trial's state, so an end is matched to the
//! element that ran. The array's job name, `cohort-EXP-array-NAME`, and the manifest let a
//! controller find elements its predecessor submitted but did not record.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use cohort_catalog::fsutil;
use cohort_proto::env as vars;
use cohort_proto::search::ArrayManifest;

use super::slurm::{
    ended_by_record, output_within, sbatch, shell_quote, submit, SLURM_COMMAND_LIMIT,
};
use super::{Handle, Job, Outcome, Running};
use crate::spec::ExperimentSpec;

/// The most elements one array gets: Slurm's default `MaxArraySize` (1001) allows task ids
/// up to 1000; a larger round is split.
pub(super) const MAX_ELEMENTS: usize = 1000;
/// How long squeue may keep failing before the elements count as lost.
const SQUEUE_FAILING_LIMIT: Duration = Duration::from_secs(600);
/// A listing younger than this is reused: the elements polled in one round share one squeue.
const LISTING_FRESH: Duration = Duration::from_millis(500);
const MANIFEST_FORMAT: &str = "cohort.job-array";

/// The user's array elements in the queue, listed by one squeue for all of them.
#[derive(Debug, Default)]
struct Queue {
    /// (array job id, task id) of every element listed.
    listed: BTreeSet<(u32, u32)>,
    /// The array job names seen, by array job id.
    names: BTreeMap<u32, String>,
    /// When it was listed.
    at: Option<Instant>,
    /// Since when squeue has failed in a row, and its last error.
    failing: Option<(Instant, String)>,
}

impl Queue {
    /// Lists the user's array elements again, unless the listing is fresh.
    fn refresh(&mut self, user: &str) {
        if self.at.is_some_and(|at| at.elapsed() < LISTING_FRESH) {
            return;
        }
        let mut squeue = Command::new("squeue");
        // -r: one line per element, pending ones too. %F: the array's job id, %K: the task
        // id ("N/A" for a job that is no array element).
        squeue.args(["-h", "-r", "-u", user, "-o", "%F|%K|%j"]);
        match output_within(squeue, SLURM_COMMAND_LIMIT) {
            Ok(out) if out.status.success() => {
                self.listed.clear();
                self.names.clear();
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let mut fields = line.splitn(3, '|');
                    let (Some(array), Some(task), Some(name)) =
                        (fields.next(), fields.next(), fields.next())
                    else {
                        continue;
                    };
                    if let (Ok(array), Ok(task)) = (array.parse(), task.parse()) {
                        self.listed.insert((array, task));
                        self.names.insert(array, name.to_owned());
                    }
                }
                self.at = Some(Instant::now());
                self.failing = None;
            }
            failed => {
                let why = match failed {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => e,
                };
                let since = self.failing.take().map_or_else(Instant::now, |(at, _)| at);
                self.failing = Some((since, why));
                // Failed or not, one squeue a round: the round's other elements wait for the
                // next, rather than each waiting out squeue's deadline again.
                self.at = Some(Instant::now());
            }
        }
    }
}

/// Submits and watches job arrays for a [`super::slurm::SlurmLauncher`].
#[derive(Debug)]
pub(super) struct Arrays {
    user: String,
    /// The search's `arrays/` directory.
    dir: PathBuf,
    queue: Rc<RefCell<Queue>>,
}

/// One element of an array: one trial's run.
#[derive(Debug)]
struct Element {
    array: u32,
    task: u32,
    /// The trial's directory.
    dir: PathBuf,
    /// Slurm's own output of the element (`arrays/ARRAY_TASK.out`).
    slurm_output: PathBuf,
    user: String,
    queue: Rc<RefCell<Queue>>,
    gone_since: Option<Instant>,
}

impl Running for Element {
    fn poll(&mut self) -> Option<Outcome> {
        let mut queue = self.queue.borrow_mut();
        queue.refresh(&self.user);
        if let Some((since, why)) = &queue.failing {
            if since.elapsed() < SQUEUE_FAILING_LIMIT {
                return None;
            }
            return Some(Outcome::Failed(format!(
                "job {}_{}: squeue has failed for {} s: {why}",
                self.array,
                self.task,
                SQUEUE_FAILING_LIMIT.as_secs()
            )));
        }
        if queue.listed.contains(&(self.array, self.task)) {
            // Pending, running, or requeued by Slurm (a requeued element stays listed).
            self.gone_since = None;
            return None;
        }
        drop(queue);
        let element = format!("{}_{}", self.array, self.task);
        ended_by_record(
            &self.dir,
            &format!("job {element}"),
            |state| state.slurm_array.as_deref() == Some(element.as_str()),
            &format!(
                "{}/slurm-*.out, and Slurm's own {}",
                self.dir.display(),
                self.slurm_output.display()
            ),
            &mut self.gone_since,
        )
    }

    fn handle(&self) -> Handle {
        Handle::SlurmArray {
            job: self.array,
            task: self.task,
        }
    }
}

/// The array's name: its first trial, the length, the attempt and a nonce, so that no two
/// submissions share a name (or a manifest), even by controllers after a crash.
fn array_name(experiment: &str, first: &Job, nonce: &str) -> String {
    format!(
        "cohort-{experiment}-array-t{}-u{}-a{}-{nonce}",
        first.trial, first.until, first.attempt
    )
}

impl Arrays {
    /// Arrays of the search whose directory is `search_dir`, submitted as the current user.
    pub(super) fn new(search_dir: &Path) -> Arrays {
        // squeue lists jobs by user name; without one (a container with no passwd entry),
        // the uid does as well.
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map_or_else(|| nix::unistd::getuid().to_string(), |u| u.name);
        Arrays {
            user,
            dir: search_dir.join("arrays"),
            queue: Rc::default(),
        }
    }

    fn element(&self, array: u32, task: u32, dir: &Path) -> Box<dyn Running> {
        Box::new(Element {
            array,
            task,
            dir: dir.to_path_buf(),
            slurm_output: self.dir.join(format!("{array}_{task}.out")),
            user: self.user.clone(),
            queue: Rc::clone(&self.queue),
            gone_since: None,
        })
    }

    /// The elements already in the queue, by the trial, length and attempt each runs (from
    /// their arrays' names and manifests, each manifest read once): how a controller finds
    /// what a predecessor submitted but did not record.
    pub(super) fn queued(&self, experiment: &str) -> BTreeMap<(u64, u64, u32), (u32, u32)> {
        let prefix = format!("cohort-{experiment}-array-");
        let mut queue = self.queue.borrow_mut();
        queue.refresh(&self.user);
        let mut manifests: BTreeMap<u32, Option<ArrayManifest>> = BTreeMap::new();
        let mut found = BTreeMap::new();
        for &(array, task) in &queue.listed {
            let manifest = manifests.entry(array).or_insert_with(|| {
                let name = queue.names.get(&array)?.strip_prefix(&prefix)?;
                read_manifest(&self.dir.join(format!("{name}.json")))
            });
            let Some(m) = manifest else { continue };
            if let Some(&trial) = usize::try_from(task).ok().and_then(|t| m.trials.get(t)) {
                found.insert((trial, m.until, m.attempt), (array, task));
            }
        }
        found
    }

    /// Watches element `task` of `array`, which runs `job` (an element an earlier controller
    /// recorded, or found in the queue).
    pub(super) fn watch(&self, array: u32, task: u32, job: &Job) -> Box<dyn Running> {
        self.element(array, task, &job.dir)
    }

    /// Submits `jobs` (same length and attempt, at most [`MAX_ELEMENTS`]) as one array.
    pub(super) fn submit(
        &self,
        spec: &ExperimentSpec,
        cwd: &Path,
        command: &[String],
        jobs: &[Job],
    ) -> Result<Vec<Box<dyn Running>>, String> {
        let Some(first) = jobs.first() else {
            return Ok(Vec::new());
        };
        let job_name = array_name(&first.experiment, first, &fsutil::nonce());
        let short = job_name
            .strip_prefix(&format!("cohort-{}-array-", first.experiment))
            .unwrap_or(&job_name);
        let manifest = ArrayManifest {
            format: MANIFEST_FORMAT.into(),
            version: 1,
            trials: jobs.iter().map(|j| j.trial).collect(),
            until: first.until,
            attempt: first.attempt,
        };
        fsutil::mkdir_if_absent(&self.dir).map_err(|e| e.to_string())?;
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        fsutil::replace(&self.dir.join(format!("{short}.json")), &bytes)
            .map_err(|e| e.to_string())?;

        // The script is a file: its table of elements passes the kernel's limit on one
        // argument (128 KiB) long before 1,000 elements.
        let mut script = String::from("#!/bin/sh\ncase $SLURM_ARRAY_TASK_ID in\n");
        for (i, job) in jobs.iter().enumerate() {
            script.push_str(&format!(
                "{i}) trial={} dir={} hparams={} ;;\n",
                job.trial,
                shell_quote(&job.dir.display().to_string()),
                shell_quote(&serde_json::to_string(&job.hparams).unwrap_or_default())
            ));
        }
        script.push_str(
            "*) echo \"cohort: element $SLURM_ARRAY_TASK_ID is not in this array\" >&2; exit 1 ;;\nesac\n",
        );
        script.push_str("exec >>\"$dir/slurm-$SLURM_JOB_ID.out\" 2>&1\n");
        script.push_str(&format!(
            "export {}=\"$trial\" {}=\"$hparams\"\n",
            vars::TRIAL,
            vars::HPARAMS
        ));
        let line: Vec<String> = command.iter().map(|w| shell_quote(w)).collect();
        script.push_str(&format!("exec srun {}\n", line.join(" ")));

        let mut sbatch = sbatch(spec, cwd, &first.experiment, &job_name);
        sbatch
            .arg(format!("--array=0-{}", jobs.len() - 1))
            .arg(format!("--output={}/%A_%a.out", self.dir.display()));
        let script_path = self.dir.join(format!("{short}.sh"));
        fsutil::replace(&script_path, script.as_bytes()).map_err(|e| e.to_string())?;
        sbatch
            .arg(&script_path)
            .env(vars::CATALOG, &first.catalog)
            .env(vars::SEARCH_UNTIL, first.until.to_string())
            .env_remove(vars::TRIAL)
            .env_remove(vars::HPARAMS);
        let trials = || {
            let first = jobs.first().map_or(0, |j| j.trial);
            let last = jobs.last().map_or(0, |j| j.trial);
            format!("trials {first}..{last} ({} in all)", jobs.len())
        };
        let array = submit(sbatch, &format!("the job array of {}", trials()))?;
        Ok(jobs
            .iter()
            .zip(0u32..)
            .map(|(job, task)| self.element(array, task, &job.dir))
            .collect())
    }
}

fn read_manifest(path: &Path) -> Option<ArrayManifest> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<ArrayManifest>(&bytes)
        .ok()
        .filter(|m| m.format == MANIFEST_FORMAT)
}

/// Groups `jobs` into arrays: by length and attempt, in order, at most [`MAX_ELEMENTS`] each.
/// Returns each group's positions in `jobs`.
pub(super) fn groups(jobs: &[Job]) -> Vec<Vec<usize>> {
    let mut by_kind: BTreeMap<(u64, u32), Vec<usize>> = BTreeMap::new();
    for (i, job) in jobs.iter().enumerate() {
        by_kind.entry((job.until, job.attempt)).or_default().push(i);
    }
    by_kind
        .into_values()
        .flat_map(|positions| {
            positions
                .chunks(MAX_ELEMENTS)
                .map(<[usize]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(trial: u64, until: u64, attempt: u32) -> Job {
        Job {
            catalog: PathBuf::from("/c"),
            experiment: "e".into(),
            trial,
            dir: PathBuf::from(format!("/c/t/{trial}")),
            hparams: crate::space::Values::new(),
            until,
            attempt,
        }
    }

    #[test]
    fn a_round_is_grouped_by_length_and_attempt_in_arrays_of_at_most_1000() {
        let mut jobs: Vec<Job> = (0..2500).map(|t| job(t, 4, 0)).collect();
        jobs.insert(1, job(9000, 16, 0));
        jobs.push(job(9001, 4, 1));
        let groups = groups(&jobs);
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1000, 1000, 500, 1, 1]);
        // Each group keeps the round's order and holds one length and attempt.
        assert_eq!(jobs[groups[0][0]].trial, 0);
        assert_eq!(jobs[groups[0][1]].trial, 1);
        assert_eq!(jobs[groups[3][0]].trial, 9001);
        assert_eq!(jobs[groups[4][0]].trial, 9000);
        assert_eq!(
            array_name("e", &jobs[0], "n1"),
            "cohort-e-array-t0-u4-a0-n1"
        );
    }
}
