//! The catalog's answers as JSON: one shape for an experiment and one for a trial, shared by
//! the CLI's `--json` output and the Python package, so both always say the same.

use cohort_proto::catalog::TrialSummary;

use crate::catalog::Experiment;
use crate::read::shown_state;

/// An experiment as `cohort exp list --json` prints it; `trials` is its trial count.
pub fn experiment_json(experiment: &Experiment, trials: usize) -> serde_json::Value {
    let record = &experiment.record;
    serde_json::json!({
        "name": record.name,
        "description": record.description,
        "owner": record.owner.user,
        "created": record.created,
        "searcher": record.searcher,
        "trials": trials,
    })
}

/// A trial as `cohort trials --json` prints it.
pub fn trial_json(trial: &TrialSummary) -> serde_json::Value {
    let metrics: serde_json::Map<String, serde_json::Value> = trial
        .metrics
        .iter()
        .map(|(name, m)| (name.clone(), serde_json::to_value(m).unwrap_or_default()))
        .collect();
    let state = trial.state.as_ref();
    serde_json::json!({
        "trial": trial.id,
        "state": shown_state(trial).map(|s| s.as_str()),
        "hparams": trial.hparams,
        "metrics": metrics,
        "created": trial.trial.created,
        "started": state.and_then(|s| s.started),
        "ended": state.and_then(|s| s.ended),
        "exit_status": state.and_then(|s| s.exit_status),
        "slurm_job": state.and_then(|s| s.slurm_job.clone()),
        "nodes": state.map(|s| s.nodes.clone()).unwrap_or_default(),
        "checkpoints": trial.checkpoints.len(),
        "last_write": trial.last_write,
    })
}
