//! Checkpoint retention: which of a trial's checkpoints a policy keeps, and collection that
//! deletes the others without ever leaving the catalog pointing at a deleted one.
//!
//! Collection first publishes a `gc-*.json` record naming what it will delete (readers drop
//! those checkpoints from then on), then deletes. A collection interrupted between the two
//! leaves files no longer referenced; the next one deletes them. Running it again changes
//! nothing: it is idempotent. A checkpoint that a model version points at is never deleted
//! (`crate::model`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cohort_proto::catalog::{Checkpoint, GcRecord, TrialSummary, CATALOG_VERSION};

use crate::error::{CatalogError, Warning};
use crate::fsutil;

/// Size of a file, or of everything under a directory.
pub fn size_of(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        total += size_of(&entry?.path())?;
    }
    Ok(total)
}

/// Which checkpoints to keep, per trial.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Keep the N with the highest steps.
    pub keep_latest: Option<usize>,
    /// Keep the N best by this metric.
    pub keep_best: Option<(usize, String)>,
    /// For `keep_best`: whether a smaller value is better (losses) or larger (accuracy).
    pub smaller_is_better: bool,
}

/// The value of `metric` that a checkpoint is judged by: its own metadata's, else the value
/// logged at the latest step not after the checkpoint's.
pub(crate) fn value_at(
    ckpt: &Checkpoint,
    metric: &str,
    history: &[crate::read::Point],
) -> Option<f64> {
    if let Some(value) = ckpt
        .metadata
        .get(metric)
        .and_then(serde_json::Value::as_f64)
    {
        return Some(value);
    }
    let index = history.partition_point(|p| p.step <= ckpt.step);
    index
        .checked_sub(1)
        .map(|i| history[i].value)
        .filter(|v| v.is_finite())
}

/// `checkpoints`, the latest first (highest step, then the latest written).
pub(crate) fn latest_first(checkpoints: &[Checkpoint]) -> Vec<&Checkpoint> {
    let mut by_step: Vec<&Checkpoint> = checkpoints.iter().collect();
    by_step.sort_by(|a, b| b.step.cmp(&a.step).then(b.at.total_cmp(&a.at)));
    by_step
}

/// The checkpoints with a value of `metric` (see `value_at`), with it, the best first (the
/// later of equal ones first).
pub(crate) fn best_first<'a>(
    checkpoints: &'a [Checkpoint],
    metric: &str,
    smaller_is_better: bool,
    history: &[crate::read::Point],
) -> Vec<(f64, &'a Checkpoint)> {
    let mut scored: Vec<(f64, &Checkpoint)> = latest_first(checkpoints)
        .into_iter()
        .filter_map(|c| value_at(c, metric, history).map(|v| (v, c)))
        .collect();
    scored.sort_by(|(a, ca), (b, cb)| {
        let order = if smaller_is_better {
            a.total_cmp(b)
        } else {
            b.total_cmp(a)
        };
        order.then(cb.step.cmp(&ca.step))
    });
    scored
}

/// The paths `policy` keeps of `checkpoints`. `history` is the metric's history when the
/// policy keeps the best. A trial that has not ended always keeps its latest checkpoint.
pub fn kept(
    checkpoints: &[Checkpoint],
    policy: &Policy,
    history: &[crate::read::Point],
    ended: bool,
) -> BTreeSet<String> {
    let mut keep = BTreeSet::new();
    let latest = policy.keep_latest.unwrap_or(0).max(usize::from(!ended));
    keep.extend(
        latest_first(checkpoints)
            .iter()
            .take(latest)
            .map(|c| c.path.clone()),
    );
    if let Some((n, metric)) = &policy.keep_best {
        let scored = best_first(checkpoints, metric, policy.smaller_is_better, history);
        keep.extend(scored.iter().take(*n).map(|(_, c)| c.path.clone()));
    }
    keep
}

/// What one collection did (or would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    /// Trials looked at.
    pub trials: usize,
    /// Checkpoints kept by the policy.
    pub kept: usize,
    /// `(trial, path, bytes)` deleted (or to delete, in a dry run).
    pub deleted: Vec<(u64, String, u64)>,
    /// Bytes freed.
    pub freed: u64,
    /// `(trial, path, versions)`: checkpoints the policy would delete but that model versions
    /// (`NAME@K`) point at, so they are kept.
    pub registered: Vec<(u64, String, Vec<String>)>,
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies `policy` to the `trials` (each a trial's directory and summary), keeping every
/// checkpoint a model version points at, and returns what it did.
///
/// Per trial, a `gc-*.json` record naming what will be deleted is published first; then the
/// model registry is read again, and only checkpoints that no version points at are deleted
/// (with the leftovers of interrupted collections). A registration racing the collection
/// either is seen by that second look, or sees the record and reports it (see
/// `model::register`). A dry run records and deletes nothing.
///
/// # Errors
///
/// A record that cannot be published, or a registry that cannot be read whole (collection
/// never guesses what a version points at).
pub fn collect(
    catalog: &crate::Catalog,
    trials: &[(std::path::PathBuf, TrialSummary)],
    policy: &Policy,
    dry_run: bool,
    warnings: &mut Vec<Warning>,
) -> Result<GcReport, CatalogError> {
    let registered = crate::model::registered_checkpoints(catalog)?;
    let mut report = GcReport::default();
    let mut pending: Vec<(u64, String)> = Vec::new();
    for (dir, summary) in trials {
        pending.extend(collect_trial(
            dir,
            summary,
            policy,
            &registered,
            dry_run,
            &mut report,
            warnings,
        )?);
    }
    if dry_run || pending.is_empty() {
        return Ok(report);
    }
    // Versions registered while the records were being written are kept too.
    let registered = crate::model::registered_checkpoints(catalog)?;
    for (trial, path) in pending {
        if let Some(versions) = registered.get(&path) {
            if let Some(at) = report.deleted.iter().position(|(_, p, _)| *p == path) {
                let (_, _, size) = report.deleted.remove(at);
                report.freed -= size;
            }
            report.registered.push((trial, path, versions.clone()));
            continue;
        }
        if let Err(e) = remove(Path::new(&path)) {
            warnings.push(Warning {
                path: path.into(),
                problem: format!(
                    "cannot delete ({e}); it is no longer listed, the next `cohort ckpt gc` tries again"
                ),
            });
        }
    }
    Ok(report)
}

/// Applies `policy` to one trial: records what it does not keep (checkpoints `registered`
/// names are kept) and returns `(trial, path)` of everything to delete, the leftovers an
/// interrupted collection recorded but did not delete among them.
fn collect_trial(
    trial_dir: &Path,
    summary: &TrialSummary,
    policy: &Policy,
    registered: &BTreeMap<String, Vec<String>>,
    dry_run: bool,
    report: &mut GcReport,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<(u64, String)>, CatalogError> {
    report.trials += 1;
    let history = match &policy.keep_best {
        Some((_, metric)) => {
            let mut found =
                crate::read::history(trial_dir, Some(std::slice::from_ref(metric)), warnings)?;
            found.remove(metric).unwrap_or_default()
        }
        None => Vec::new(),
    };
    let ended = crate::read::shown_state(summary).is_some_and(|s| s.is_final());
    let keep = kept(&summary.checkpoints, policy, &history, ended);
    report.kept += keep.len();
    let mut doomed: Vec<&Checkpoint> = Vec::new();
    for ckpt in summary
        .checkpoints
        .iter()
        .filter(|c| !keep.contains(&c.path))
    {
        match registered.get(&ckpt.path) {
            Some(versions) => {
                report
                    .registered
                    .push((summary.id, ckpt.path.clone(), versions.clone()));
            }
            None => doomed.push(ckpt),
        }
    }
    let leftovers: Vec<&String> = summary
        .deleted
        .iter()
        .filter(|p| Path::new(p).exists() && !registered.contains_key(*p))
        .collect();
    for ckpt in &doomed {
        let size = size_of(Path::new(&ckpt.path)).unwrap_or(0);
        report.deleted.push((summary.id, ckpt.path.clone(), size));
        report.freed += size;
    }
    if dry_run {
        return Ok(Vec::new());
    }
    if !doomed.is_empty() {
        let record = GcRecord {
            format: "cohort.ckpt-gc".into(),
            version: CATALOG_VERSION,
            deleted: doomed.iter().map(|c| c.path.clone()).collect(),
            at: fsutil::now(),
            writer: fsutil::writer(),
        };
        let mut bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
        bytes.push(b'\n');
        let name = format!("gc-{:.0}-{}.json", record.at * 1000.0, fsutil::nonce());
        fsutil::publish_new(&trial_dir.join(name), &bytes)?;
    }
    Ok(doomed
        .iter()
        .map(|c| &c.path)
        .chain(leftovers)
        .map(|p| (summary.id, p.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::Point;

    fn ckpt(step: i64, loss: Option<f64>) -> Checkpoint {
        Checkpoint {
            path: format!("/c/{step}"),
            step,
            size: 1,
            at: step as f64,
            metadata: loss
                .map(|l| [("val_loss".to_owned(), serde_json::json!(l))].into())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn keeps_latest_and_best_by_metadata_or_history() {
        let checkpoints = vec![
            ckpt(100, Some(0.9)),
            ckpt(200, Some(0.3)),
            ckpt(300, None),
            ckpt(400, Some(0.5)),
            ckpt(500, Some(0.8)),
        ];
        // History says step 300 had 0.1: best without metadata.
        let history: Vec<Point> = [(100, 0.9), (200, 0.3), (300, 0.1), (400, 0.5), (500, 0.8)]
            .iter()
            .map(|&(step, value)| Point {
                step,
                value,
                wall: 0.0,
            })
            .collect();
        let policy = Policy {
            keep_latest: Some(1),
            keep_best: Some((2, "val_loss".into())),
            smaller_is_better: true,
        };
        let keep = kept(&checkpoints, &policy, &history, true);
        assert_eq!(
            keep.into_iter().collect::<Vec<_>>(),
            vec!["/c/200", "/c/300", "/c/500"]
        );
        let larger = Policy {
            smaller_is_better: false,
            keep_latest: None,
            ..policy
        };
        let keep = kept(&checkpoints, &larger, &history, true);
        assert_eq!(
            keep.into_iter().collect::<Vec<_>>(),
            vec!["/c/100", "/c/500"]
        );
    }

    #[test]
    fn a_running_trial_keeps_its_latest_checkpoint() {
        let checkpoints = vec![ckpt(1, None), ckpt(2, None)];
        let policy = Policy {
            keep_best: Some((1, "val_loss".into())),
            ..Policy::default()
        };
        assert_eq!(kept(&checkpoints, &policy, &[], false).len(), 1);
        assert!(kept(&checkpoints, &policy, &[], true).is_empty());
    }
}
