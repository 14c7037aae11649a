//! The search controller's records, kept in an experiment's `search/` directory: the events
//! of `events.jsonl` ([`Event`], one JSON object per line), the lease of `controller-N.json`
//! ([`LeaseRecord`]), and what identifies a launched trial ([`Handle`]).
//!
//! These records have no `format` and `version` fields; they change only by gaining optional
//! fields, and every record an earlier release wrote stays readable (`docs/catalog-format.md`
//! describes the files).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the TPE sampler's model was fitted on when it chose a new trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFit {
    /// Trials with results it was fitted on.
    pub results: u64,
    /// The longest length any of them reached.
    pub length: u64,
}

/// One thing the controller did: a line of `search/events.jsonl`.
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
        hparams: Option<BTreeMap<String, serde_json::Value>>,
        /// For a new trial the TPE sampler chose: what its model was fitted on (absent when
        /// the hyperparameters were drawn at random).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<ModelFit>,
    },
    /// A trial's process was started (or submitted).
    Launched {
        /// Catalog trial.
        trial: u64,
        /// Length it trains to.
        until: u64,
        /// Attempt (0 first, then restarts).
        attempt: u32,
        /// What identifies the launched trial, so that a later controller can find it again.
        #[serde(flatten)]
        handle: Handle,
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
        /// Slurm stopped it (a preemption, the time limit), which is no failure: it runs
        /// again without counting as a restart.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        preempted: bool,
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

/// What identifies a launched trial: the process that runs it on a host, or its Slurm job.
///
/// In a `launched` record its fields sit beside the others: `"launcher": "local", "host",
/// "pid"` or `"launcher": "slurm", "job"`. Records written before `launcher` existed name
/// `host` and `pid` only, a Slurm job as host `slurm` with the job id as pid; they read as
/// the same handles.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "HandleFields", into = "HandleFields")]
pub enum Handle {
    /// A process on a host (`cohort run` started by a local search).
    Local {
        /// The host's name.
        host: String,
        /// The process id.
        pid: u32,
    },
    /// A Slurm job.
    Slurm {
        /// The job id.
        job: u32,
    },
    /// An element of a Slurm job array (`JOB_TASK` in squeue).
    SlurmArray {
        /// The array's job id.
        job: u32,
        /// The element's task id.
        task: u32,
    },
}

/// The kinds of [`Handle`], as the `launcher` field names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LauncherKind {
    Local,
    Slurm,
    SlurmArray,
}

/// A [`Handle`] as its fields are written.
#[derive(Debug, Serialize, Deserialize)]
struct HandleFields {
    /// Absent in records of earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    launcher: Option<LauncherKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task: Option<u32>,
}

/// The host name under which earlier releases recorded a Slurm job (its id as the pid).
const LEGACY_SLURM_HOST: &str = "slurm";

impl From<Handle> for HandleFields {
    fn from(handle: Handle) -> HandleFields {
        match handle {
            Handle::Local { host, pid } => HandleFields {
                launcher: Some(LauncherKind::Local),
                host: Some(host),
                pid: Some(pid),
                job: None,
                task: None,
            },
            Handle::Slurm { job } => HandleFields {
                launcher: Some(LauncherKind::Slurm),
                host: None,
                pid: None,
                job: Some(job),
                task: None,
            },
            Handle::SlurmArray { job, task } => HandleFields {
                launcher: Some(LauncherKind::SlurmArray),
                host: None,
                pid: None,
                job: Some(job),
                task: Some(task),
            },
        }
    }
}

impl TryFrom<HandleFields> for Handle {
    type Error = String;

    fn try_from(fields: HandleFields) -> Result<Handle, String> {
        match (fields.launcher, fields.host, fields.pid, fields.job) {
            (Some(LauncherKind::SlurmArray), _, _, job) => match (job, fields.task) {
                (Some(job), Some(task)) => Ok(Handle::SlurmArray { job, task }),
                _ => Err("a slurm_array launch without `job` and `task`".into()),
            },
            (Some(LauncherKind::Slurm), _, _, Some(job)) => Ok(Handle::Slurm { job }),
            (Some(LauncherKind::Slurm), ..) => Err("a slurm launch without `job`".into()),
            (Some(LauncherKind::Local), Some(host), Some(pid), _) => {
                Ok(Handle::Local { host, pid })
            }
            (Some(LauncherKind::Local), ..) => {
                Err("a local launch without `host` and `pid`".into())
            }
            (None, Some(host), Some(pid), _) if host == LEGACY_SLURM_HOST => {
                Ok(Handle::Slurm { job: pid })
            }
            (None, Some(host), Some(pid), _) => Ok(Handle::Local { host, pid }),
            (None, ..) => Err("a launch without `launcher`, or `host` and `pid`".into()),
        }
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handle::Local { host, pid } => write!(f, "pid {pid} on {host}"),
            Handle::Slurm { job } => write!(f, "Slurm job {job}"),
            Handle::SlurmArray { job, task } => write!(f, "Slurm job {job}_{task}"),
        }
    }
}

/// `search/arrays/NAME.json`: the trials of a Slurm job array a search submitted, written
/// (replaced whole) before the array is submitted: element `i` (`SLURM_ARRAY_TASK_ID`) runs
/// `trials[i]`. A controller that died before recording the array's elements finds them by the
/// array's job name (`cohort-EXP-array-NAME`) and this file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayManifest {
    /// Always `cohort.job-array`.
    pub format: String,
    /// Major version.
    pub version: u32,
    /// The catalog trial each element runs, by task id.
    pub trials: Vec<u64>,
    /// The length every element trains to.
    pub until: u64,
    /// The attempt every element is.
    pub attempt: u32,
}

/// `search/controller-N.json`: generation N of the lease of the controller that drives the
/// search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The controller's host.
    pub host: String,
    /// The controller's process id.
    pub pid: u32,
    /// When it took the search (Unix seconds).
    pub at: f64,
    /// Tells this lease from another with the same host and pid.
    #[serde(default)]
    pub nonce: String,
    /// Its controller ended and gave the search up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

impl LeaseRecord {
    /// `host:pid`, to name the holder.
    pub fn holder(&self) -> String {
        format!("{}:{}", self.host, self.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launched(json: &str) -> Result<Handle, String> {
        match serde_json::from_str::<Event>(json).map_err(|e| e.to_string())? {
            Event::Launched { handle, .. } => Ok(handle),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn handles_are_written_with_their_kind_and_read_back() {
        for handle in [
            Handle::Local {
                host: "slurm".into(),
                pid: 42,
            },
            Handle::Slurm { job: 7 },
            Handle::SlurmArray { job: 7, task: 3 },
        ] {
            let event = Event::Launched {
                trial: 3,
                until: 9,
                attempt: 1,
                handle: handle.clone(),
            };
            let text = serde_json::to_string(&event).unwrap();
            assert!(text.starts_with("{\"event\":\"launched\","), "{text}");
            assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
        }
        assert_eq!(
            serde_json::to_string(&Event::Launched {
                trial: 1,
                until: 4,
                attempt: 0,
                handle: Handle::Slurm { job: 12 },
            })
            .unwrap(),
            r#"{"event":"launched","trial":1,"until":4,"attempt":0,"launcher":"slurm","job":12}"#
        );
        assert_eq!(
            serde_json::to_string(&Handle::SlurmArray { job: 12, task: 0 }).unwrap(),
            r#"{"launcher":"slurm_array","job":12,"task":0}"#
        );
        assert_eq!(
            Handle::SlurmArray { job: 12, task: 5 }.to_string(),
            "Slurm job 12_5"
        );
        assert!(serde_json::from_str::<Handle>(r#"{"launcher":"slurm_array","job":12}"#).is_err());
    }

    #[test]
    fn launches_recorded_by_earlier_releases_read_as_the_same_handles() {
        assert_eq!(
            launched(
                r#"{"event":"launched","trial":1,"until":4,"attempt":0,"host":"node1","pid":42}"#
            ),
            Ok(Handle::Local {
                host: "node1".into(),
                pid: 42
            })
        );
        assert_eq!(
            launched(
                r#"{"event":"launched","trial":1,"until":4,"attempt":0,"host":"slurm","pid":99}"#
            ),
            Ok(Handle::Slurm { job: 99 })
        );
        let err =
            launched(r#"{"event":"launched","trial":1,"until":4,"attempt":0,"host":"node1"}"#)
                .unwrap_err();
        assert!(err.contains("without"), "{err}");
    }

    #[test]
    fn a_lease_keeps_its_shape() {
        let lease = LeaseRecord {
            host: "h".into(),
            pid: 1,
            at: 2.5,
            nonce: "n".into(),
            released: false,
        };
        let text = serde_json::to_string(&lease).unwrap();
        assert_eq!(text, r#"{"host":"h","pid":1,"at":2.5,"nonce":"n"}"#);
        let old: LeaseRecord = serde_json::from_str(r#"{"host":"h","pid":1,"at":2.5}"#).unwrap();
        assert_eq!((old.nonce.as_str(), old.released), ("", false));
        assert_eq!(lease.holder(), "h:1");
    }
}
