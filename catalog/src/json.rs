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
        "slurm_array": state.and_then(|s| s.slurm_array.clone()),
        "nodes": state.map(|s| s.nodes.clone()).unwrap_or_default(),
        "checkpoints": trial.checkpoints.len(),
        "last_write": trial.last_write,
    })
}

/// A trial as `cohort trial show --json` prints it: [`trial_json`] with its experiment, its
/// records (`trial.json`, `state.json`), its checkpoints and what the reader skipped.
pub fn trial_detail_json(experiment: &Experiment, trial: &TrialSummary) -> serde_json::Value {
    let mut value = trial_json(trial);
    if let Some(object) = value.as_object_mut() {
        object.insert("experiment".into(), experiment.record.name.clone().into());
        object.insert(
            "record".into(),
            serde_json::to_value(&trial.trial).unwrap_or_default(),
        );
        object.insert(
            "state_record".into(),
            serde_json::to_value(&trial.state).unwrap_or_default(),
        );
        object.insert(
            "checkpoints".into(),
            serde_json::to_value(&trial.checkpoints).unwrap_or_default(),
        );
        object.insert(
            "damage".into(),
            serde_json::to_value(&trial.damage).unwrap_or_default(),
        );
    }
    value
}

/// Trials counted by the state they show (`unknown` for one without a state).
pub fn states_of(trials: &[TrialSummary]) -> std::collections::BTreeMap<&'static str, usize> {
    let mut by_state = std::collections::BTreeMap::new();
    for trial in trials {
        *by_state
            .entry(shown_state(trial).map_or("unknown", |s| s.as_str()))
            .or_default() += 1;
    }
    by_state
}

/// The names of the metrics any of `trials` logged, sorted.
pub fn metric_names(trials: &[TrialSummary]) -> Vec<&String> {
    let mut metrics: Vec<&String> = trials.iter().flat_map(|t| t.metrics.keys()).collect();
    metrics.sort();
    metrics.dedup();
    metrics
}

/// An experiment as `cohort exp show --json` prints it: its record, its trials counted by
/// state, the names of its metrics, and how it was loaded.
pub fn experiment_detail_json(
    experiment: &Experiment,
    loaded: &crate::Loaded,
) -> serde_json::Value {
    serde_json::json!({
        "experiment": experiment.record,
        "trials": loaded.trials.len(),
        "states": states_of(&loaded.trials),
        "metrics": metric_names(&loaded.trials),
        "load": loaded.stats,
    })
}
