//! The experiment catalog's JSON records: the catalog marker, experiments, trials, trial
//! states, the header and events of a trial's metric log, checkpoint deletions, the notes of
//! Slurm steps, the index, and the model registry (models, their versions, alias moves).
//!
//! Each record carries `format` and `version`; readers ignore unknown fields and refuse another
//! format or major version. The binary framing of metric logs is described in
//! `docs/catalog-format.md` and implemented by the `catalog` crate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Major version of every catalog record written by this release.
pub const CATALOG_VERSION: u32 = 1;

/// `catalog.json` at the catalog's root: marks a directory as a catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogMarker {
    /// Always `cohort.catalog`.
    pub format: String,
    /// Major version of the layout.
    pub version: u32,
    /// When the catalog was created (Unix seconds).
    pub created: f64,
}

/// Who wrote a record: enough to find the process again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// User name (or uid when it has no name).
    pub user: String,
}

/// `experiment.json`: written once, by whichever creator published first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRecord {
    /// Always `cohort.experiment`.
    pub format: String,
    /// Major version.
    pub version: u32,
    /// The experiment's name, as users type it.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The configuration it was created with (an experiment file, a command line).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub config: serde_json::Value,
    /// Who created it.
    pub owner: Writer,
    /// When (Unix seconds).
    pub created: f64,
    /// The searcher that drives its trials, if any (`grid`, `random`, `asha`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub searcher: Option<String>,
    /// Random token of the creator: tells a creator whether the published record is its own.
    pub nonce: String,
}

/// `trial.json`: what a trial is, written once by its creator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Always `cohort.trial`.
    pub format: String,
    /// Major version.
    pub version: u32,
    /// The experiment's name.
    pub experiment: String,
    /// Trial number within the experiment, from 1.
    pub id: u64,
    /// Hyperparameters it was started with.
    #[serde(default)]
    pub hparams: BTreeMap<String, serde_json::Value>,
    /// When (Unix seconds).
    pub created: f64,
    /// Who created it.
    pub created_by: Writer,
    /// The command it runs, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

/// The exit statuses by which a worker tells the Slurm plugin (and `cohort run`, and a
/// search) that it stopped at a warning after checkpointing, rather than failing.
pub mod exit {
    /// Stopped at the stop signal (Slurm's warning ahead of the time limit, `--signal`):
    /// `EX_TEMPFAIL`, "try again later". With `--cohort-requeue` the plugin requeues the job.
    pub const AT_WARNING: i32 = 75;
    /// Stopped at SIGTERM (Slurm preempted, requeued or cancelled the job, or its time ran
    /// out): the status a shell gives a process SIGTERM ended, which is how Slurm sees it.
    pub const AT_SIGTERM: i32 = 128 + 15;

    /// Whether an exit code is one of these: the process stopped at a warning after
    /// checkpointing, rather than failing.
    pub fn stopped_at_warning(code: Option<i32>) -> bool {
        matches!(code, Some(AT_WARNING | AT_SIGTERM))
    }
}

/// Where a trial is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    /// Created, waiting for resources.
    Queued,
    /// Its processes run.
    Running,
    /// Ended successfully.
    Completed,
    /// Ended with an error (non-zero exit, a signal, a lost node).
    Failed,
    /// Stopped on purpose (cancelled, stopped early by a searcher).
    Killed,
    /// Stopped by the cluster to go on later: its ranks checkpointed at Slurm's warning
    /// before the time limit or at a preemption, or Slurm ended them (SIGTERM). Not an
    /// error and not an end: the same trial runs again when its job is requeued (by Slurm,
    /// by `--cohort-requeue` or by a search), from its latest checkpoint.
    Preempted,
}

impl TrialState {
    /// Lower-case name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Queued => "queued",
            TrialState::Running => "running",
            TrialState::Completed => "completed",
            TrialState::Failed => "failed",
            TrialState::Killed => "killed",
            TrialState::Preempted => "preempted",
        }
    }

    /// Whether the trial has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TrialState::Completed | TrialState::Failed | TrialState::Killed
        )
    }
}

impl std::fmt::Display for TrialState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TrialState {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text {
            "queued" => TrialState::Queued,
            "running" => TrialState::Running,
            "completed" => TrialState::Completed,
            "failed" => TrialState::Failed,
            "killed" => TrialState::Killed,
            "preempted" => TrialState::Preempted,
            other => {
                return Err(format!(
                    "{other:?} is not a trial state (queued, running, completed, failed, killed, preempted)"
                ))
            }
        })
    }
}

/// One restart of a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restart {
    /// When (Unix seconds).
    pub at: f64,
    /// Why the previous attempt ended.
    pub reason: String,
}

/// `state.json`: a trial's current state, replaced as a whole (by rename) on every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    /// Always `cohort.trial-state`.
    pub format: String,
    /// Major version.
    pub version: u32,
    /// The state.
    pub state: TrialState,
    /// When it was queued (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<f64>,
    /// When it (last) started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<f64>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<f64>,
    /// Slurm job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
    /// Slurm step id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_step: Option<String>,
    /// Which launch of the Slurm job this is (`SLURM_RESTART_COUNT`: 0, then 1 after a
    /// requeue, ...); a requeued job runs its steps again under the same ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_launch: Option<u32>,
    /// The Slurm job array element it ran as (`ARRAY_TASK`, as squeue writes it: `"1234_5"`),
    /// when a search submitted it in a job array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_array: Option<String>,
    /// Nodes it ran on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Exit status of the failed (or last) process, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// Signal that ended it, when one did (`SIGKILL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    /// Why it ended as it did, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Earlier attempts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<Restart>,
    /// How many times the Slurm plugin requeued the trial's job after it stopped at the
    /// time-limit warning (`--cohort-requeue`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requeues: u32,
    /// Who wrote this state.
    pub writer: Writer,
    /// When this record was written.
    pub updated: f64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `failed-<job>.<step>.<launch>.json` in a trial's directory: a task of that Slurm step failed.
/// Written once, created if absent by the node whose task failed (the first failure of the
/// step stays), never changed. Readers of the trial's state merge it: a step with a failure
/// record is `failed`, whatever another node wrote into `state.json` around the same time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepFailure {
    /// Always `cohort.step-failure`.
    pub format: String,
    /// Major version.
    pub version: u32,
    /// Slurm job id.
    pub job: String,
    /// Slurm step id.
    pub step: String,
    /// Which launch of the job (see [`StateRecord::slurm_launch`]).
    pub launch: u32,
    /// The failed task's rank.
    pub rank: u32,
    /// Its node.
    pub node: String,
    /// Its exit status, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// The signal that ended it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    /// What happened, in words ("rank 3 on node2 exited with status 7").
    pub message: String,
    /// When (Unix seconds).
    pub at: f64,
}

/// An event in a trial's metric log (the log's JSON records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LogEvent {
    /// Hyperparameters added or changed after the trial was created.
    Hparams {
        /// The values.
        values: BTreeMap<String, serde_json::Value>,
    },
    /// A checkpoint was written.
    Checkpoint(Checkpoint),
    /// The worker ended its tracking.
    Finish {
        /// The state it reported.
        state: TrialState,
        /// When (Unix seconds).
        at: f64,
    },
}

/// A checkpoint, referenced by path (the catalog never copies checkpoint data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Absolute path of the checkpoint file or directory.
    pub path: String,
    /// Training step it was taken at.
    pub step: i64,
    /// Size in bytes when it was recorded.
    pub size: u64,
    /// When (Unix seconds).
    pub at: f64,
    /// Free-form metadata (metric values at that step, epoch, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// `gc-*.json` in a trial's directory: checkpoints a collection deleted (written before the
/// deletion, so the catalog never points at a deleted checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcRecord {
    /// Always `cohort.ckpt-gc`.
    pub format: String,
    /// Major version.
    pub version: u32,
    /// Paths of the deleted checkpoints.
    pub deleted: Vec<String>,
    /// When (Unix seconds).
    pub at: f64,
    /// Who collected.
    pub writer: Writer,
}

/// The header frame (kind 0) that starts every metric log segment: whose segment it is.
/// Readers of metrics skip it; it tells a person or tool looking at a segment where it came
/// from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentHeader {
    /// Always `cohort.metrics`.
    pub format: String,
    /// Major version.
    pub version: u32,
    /// The experiment's name.
    pub experiment: String,
    /// The trial's number.
    pub trial: u64,
    /// The rank writing the segment.
    pub rank: u32,
    /// The process writing it.
    pub writer: Writer,
    /// When the segment was started (Unix seconds).
    pub created: f64,
}

/// `models/<slug>-<hash>/model.json`: a named model (published once; the first wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Always `cohort.model`.
    pub format: String,
    /// Major version.
    pub version: u32,
    /// The model's name, as users type it.
    pub name: String,
    /// When it was first registered (Unix seconds).
    pub created: f64,
    /// Who registered it first.
    pub created_by: Writer,
}

/// Where a model version came from: a trial of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSource {
    /// The experiment's name.
    pub experiment: String,
    /// The trial's number.
    pub trial: u64,
    /// The trial's state when the version was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TrialState>,
    /// The command the trial ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The Slurm job (and step) that produced it, when Slurm ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
    /// The Slurm step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_step: Option<String>,
    /// The nodes it ran on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

/// The checkpoint a model version points at, as it was when registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCheckpoint {
    /// Absolute path of the checkpoint file or directory.
    pub path: String,
    /// `file` or `directory`.
    pub kind: String,
    /// Size in bytes (of every file under it, for a directory).
    pub size: u64,
    /// SHA-256 in hex: of the file's bytes, or for a directory of the lines `<sha256>  <relative
    /// path>` of its files sorted by path (what `sha256sum` prints for them), as described in
    /// `docs/catalog-format.md`.
    pub sha256: String,
    /// Training step it was taken at.
    pub step: i64,
    /// When the trial recorded it (Unix seconds).
    pub at: f64,
    /// The metadata recorded with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// A metric's value at a model version's checkpoint: the latest point at or before its step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricAt {
    /// The step of that point.
    pub step: i64,
    /// Its value.
    #[serde(with = "float_text")]
    pub value: f64,
}

/// `models/<slug>-<hash>/versions/<number>.json`: one version of a model, written once and
/// never changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// Always `cohort.model-version`.
    pub format: String,
    /// Major version of the record.
    pub version: u32,
    /// The model's name.
    pub model: String,
    /// The version's number, from 1.
    pub number: u64,
    /// The trial it came from.
    pub source: ModelSource,
    /// Its checkpoint.
    pub checkpoint: ModelCheckpoint,
    /// The trial's hyperparameters.
    #[serde(default)]
    pub hparams: BTreeMap<String, serde_json::Value>,
    /// The trial's metrics at the checkpoint's step.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricAt>,
    /// Free text given at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it was registered (Unix seconds).
    pub registered: f64,
    /// Who registered it.
    pub registered_by: Writer,
    /// Random token of the registering process: tells it whether the published record is its own.
    pub nonce: String,
}

/// `models/<slug>-<hash>/aliases/<alias>/<sequence>.json`: one move of an alias, written once.
/// The highest sequence number is where the alias points now; the others are its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasMove {
    /// Always `cohort.model-alias`.
    pub format: String,
    /// Major version.
    pub version: u32,
    /// The model's name.
    pub model: String,
    /// The alias.
    pub alias: String,
    /// This move's number among the alias's moves, from 1.
    pub sequence: u64,
    /// The version it pointed at before (none for its first move).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// The version it points at from now on (none: removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// Who moved it.
    pub by: Writer,
    /// When (Unix seconds).
    pub at: f64,
    /// Random token of the mover.
    pub nonce: String,
}

/// `slurm/<job>.<step>.json` in an experiment's directory: which trial a Slurm step records
/// into, so the step's other nodes find it (published once; the first note wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlurmStepRecord {
    /// Always `cohort.slurm-step`.
    pub format: String,
    /// Major version.
    pub version: u32,
    /// The trial's number.
    pub trial: u64,
}

/// Summary of one metric of a trial. Non-finite values (a diverged loss) are kept as
/// `NaN`/`inf` in `last`, never in `min`/`max`. In JSON it is an object; in binary formats
/// (the index) an array of its fields in order, which is several times smaller and faster.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSummary {
    /// Number of points.
    pub count: u64,
    /// Smallest finite value.
    pub min: Option<f64>,
    /// Step of the smallest finite value.
    pub min_step: Option<i64>,
    /// Largest finite value.
    pub max: Option<f64>,
    /// Step of the largest finite value.
    pub max_step: Option<i64>,
    /// The highest step reported.
    pub last_step: i64,
    /// Value at `last_step` (the latest written when a step was written again).
    pub last: f64,
    /// Wall time of that point (Unix seconds).
    pub last_wall: f64,
}

/// [`MetricSummary`] as a JSON object.
#[derive(Serialize, Deserialize)]
struct NamedSummary {
    count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_step: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_step: Option<i64>,
    last_step: i64,
    #[serde(with = "float_text")]
    last: f64,
    last_wall: f64,
}

type PackedSummary = (
    u64,
    Option<f64>,
    Option<i64>,
    Option<f64>,
    Option<i64>,
    i64,
    f64,
    f64,
);

impl Serialize for MetricSummary {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            NamedSummary {
                count: self.count,
                min: self.min,
                min_step: self.min_step,
                max: self.max,
                max_step: self.max_step,
                last_step: self.last_step,
                last: self.last,
                last_wall: self.last_wall,
            }
            .serialize(serializer)
        } else {
            let packed: PackedSummary = (
                self.count,
                self.min,
                self.min_step,
                self.max,
                self.max_step,
                self.last_step,
                self.last,
                self.last_wall,
            );
            packed.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for MetricSummary {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let n = NamedSummary::deserialize(deserializer)?;
            Ok(MetricSummary {
                count: n.count,
                min: n.min,
                min_step: n.min_step,
                max: n.max,
                max_step: n.max_step,
                last_step: n.last_step,
                last: n.last,
                last_wall: n.last_wall,
            })
        } else {
            let (count, min, min_step, max, max_step, last_step, last, last_wall) =
                PackedSummary::deserialize(deserializer)?;
            Ok(MetricSummary {
                count,
                min,
                min_step,
                max,
                max_step,
                last_step,
                last,
                last_wall,
            })
        }
    }
}

impl MetricSummary {
    /// A summary of one point.
    pub fn first(step: i64, value: f64, wall: f64) -> Self {
        let finite = value.is_finite();
        MetricSummary {
            count: 1,
            min: finite.then_some(value),
            min_step: finite.then_some(step),
            max: finite.then_some(value),
            max_step: finite.then_some(step),
            last_step: step,
            last: value,
            last_wall: wall,
        }
    }

    /// Folds in the summary of points written after every point already summarised.
    pub fn merge_later(&mut self, later: &MetricSummary) {
        // Counts come from files (an index entry may say anything): saturate, never overflow.
        self.count = self.count.saturating_add(later.count);
        if let Some(min) = later.min {
            if self.min.is_none_or(|m| min < m) {
                self.min = Some(min);
                self.min_step = later.min_step;
            }
        }
        if let Some(max) = later.max {
            if self.max.is_none_or(|m| max > m) {
                self.max = Some(max);
                self.max_step = later.max_step;
            }
        }
        if later.last_step >= self.last_step {
            self.last_step = later.last_step;
            self.last = later.last;
            self.last_wall = later.last_wall;
        }
    }

    /// Adds a point written after every point already summarised.
    pub fn add(&mut self, step: i64, value: f64, wall: f64) {
        self.count = self.count.saturating_add(1);
        if value.is_finite() {
            if self.min.is_none_or(|min| value < min) {
                self.min = Some(value);
                self.min_step = Some(step);
            }
            if self.max.is_none_or(|max| value > max) {
                self.max = Some(value);
                self.max_step = Some(step);
            }
        }
        if step >= self.last_step {
            self.last_step = step;
            self.last = value;
            self.last_wall = wall;
        }
    }
}

/// How far an index entry has read one metric-log segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMark {
    /// File name within the trial directory.
    pub file: String,
    /// Bytes read: the end of the last valid record.
    pub covered: u64,
    /// Metric names defined up to `covered`, by id.
    pub names: Vec<String>,
    /// Size of the file when it was read (a tail beyond `covered` was torn or being written).
    pub size: u64,
    /// Its writer recorded the end of its tracking (a `finish` event): nothing more is
    /// appended, so an index need not look at it again while the directory is unchanged.
    #[serde(default)]
    pub closed: bool,
}

/// Everything a query needs about one trial: an entry of the index, also built directly from
/// the trial's files when there is no index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialSummary {
    /// Trial number.
    pub id: u64,
    /// Its directory name.
    pub dir: String,
    /// Modification time of the directory (ns since the epoch) when summarised.
    pub dir_mtime_ns: i64,
    /// The trial record.
    pub trial: TrialRecord,
    /// Its state, when one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateRecord>,
    /// Hyperparameters: the trial's, updated by `hparams` events.
    pub hparams: BTreeMap<String, serde_json::Value>,
    /// Metric summaries by name.
    pub metrics: BTreeMap<String, MetricSummary>,
    /// Checkpoints recorded and not deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<Checkpoint>,
    /// Paths deleted by checkpoint collection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
    /// What was read of each log segment.
    pub segments: Vec<SegmentMark>,
    /// The state a worker reported in its log when it finished, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<TrialState>,
    /// Latest modification of any log segment (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write: Option<f64>,
    /// Damage found in its files (skipped bytes, torn records), in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damage: Vec<String>,
}

/// Header of `index/<experiment dir>.json`, the compacted summaries of an experiment's trials
/// (a cache: deleting it loses nothing). The file is `COHIDX01`, this header in MessagePack, then
/// `chunks` times a u32 little-endian length and a MessagePack array of [`TrialSummary`], so
/// readers decode the chunks in parallel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexDoc {
    /// Always `cohort.index`.
    pub format: String,
    /// Major version.
    pub version: u32,
    /// The experiment's name.
    pub experiment: String,
    /// When it was built (Unix seconds).
    pub built: f64,
    /// Number of chunks of trial summaries that follow.
    pub chunks: u32,
}

/// Serialises non-finite floats as the strings `NaN`, `inf`, `-inf` in human-readable formats
/// (JSON has no such numbers); binary formats keep the float.
pub mod float_text {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `value`.
    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() || !serializer.is_human_readable() {
            serializer.serialize_f64(*value)
        } else if value.is_nan() {
            serializer.serialize_str("NaN")
        } else if *value > 0.0 {
            serializer.serialize_str("inf")
        } else {
            serializer.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(f64),
        Text(String),
    }

    /// Reads a number or one of the three strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        if !deserializer.is_human_readable() {
            return f64::deserialize(deserializer);
        }
        match Either::deserialize(deserializer)? {
            Either::Number(value) => Ok(value),
            Either::Text(text) => match text.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!(
                    "{other:?} is not a number"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index entry may hold any count (fuzz/regressions/catalog_readers/index-count-overflow).
    #[test]
    fn counts_from_files_saturate() {
        let mut summary = MetricSummary::first(0, 1.0, 0.0);
        summary.count = u64::MAX;
        summary.merge_later(&MetricSummary::first(1, 0.5, 1.0));
        summary.add(2, 0.25, 2.0);
        assert_eq!(summary.count, u64::MAX);
        assert_eq!((summary.min, summary.last_step), (Some(0.25), 2));
    }

    #[test]
    fn summary_keeps_non_finite_out_of_min_and_max_and_round_trips() {
        let mut summary = MetricSummary::first(0, 2.0, 1.0);
        summary.add(1, f64::NAN, 2.0);
        summary.add(2, 0.5, 3.0);
        summary.add(3, f64::INFINITY, 4.0);
        assert_eq!((summary.min, summary.max), (Some(0.5), Some(2.0)));
        assert_eq!((summary.min_step, summary.max_step), (Some(2), Some(0)));
        assert_eq!(summary.last_step, 3);
        assert!(summary.last.is_infinite());
        let text = serde_json::to_string(&summary).unwrap();
        assert!(text.contains("\"last\":\"inf\""), "{text}");
        let back: MetricSummary = serde_json::from_str(&text).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn a_step_written_again_replaces_the_last_value() {
        let mut summary = MetricSummary::first(10, 1.0, 1.0);
        summary.add(5, 3.0, 2.0);
        assert_eq!((summary.last_step, summary.last), (10, 1.0));
        summary.add(10, 0.7, 3.0);
        assert_eq!((summary.last_step, summary.last), (10, 0.7));
    }

    #[test]
    fn states_parse_and_print() {
        for state in [
            TrialState::Queued,
            TrialState::Running,
            TrialState::Completed,
            TrialState::Failed,
            TrialState::Killed,
            TrialState::Preempted,
        ] {
            assert_eq!(state.as_str().parse::<TrialState>(), Ok(state));
        }
        assert!("done".parse::<TrialState>().is_err());
    }
}
