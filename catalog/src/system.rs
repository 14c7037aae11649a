//! System metrics of a trial (`sys/gpu0/util`, ...): what the node daemons sampled while the
//! trial's step ran, written by a privileged writer (the Slurm plugin, at the step's end) as
//! one whole segment per node and launch, published at once (temporary file, fsync, `link`)
//! and owned by the trial's owner. Readers take it like any segment: `cohort metrics`, the
//! index and the web view need nothing of their own.

use std::path::{Path, PathBuf};

use cohort_proto::catalog::{SegmentHeader, CATALOG_VERSION};

use crate::error::CatalogError;
use crate::fsutil;
use crate::log::{names_payload, push_frame, Kind, PointsBuilder};

/// The prefix of every system metric's name.
pub const SYSTEM_PREFIX: &str = "sys/";

/// One row of system metrics: a step (seconds since the trial was created), the wall time and
/// the values by name.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemRow {
    /// Seconds since the trial was created, the step of every value in the row.
    pub step: i64,
    /// When the row was sampled (seconds since the Unix epoch).
    pub wall: f64,
    /// Values by metric name; each name starts with [`SYSTEM_PREFIX`].
    pub values: Vec<(String, f64)>,
}

/// Publishes `rows` as the segment `metrics-sys-TAG.clog` of the trial at `trial_dir`, owned
/// by `owner` (uid, gid) when given. `tag` names the writer's node and launch; one already
/// published under it is left alone (`Ok(None)`). Returns the segment's path.
///
/// # Errors
///
/// [`CatalogError::BadMetricName`] for a name outside [`SYSTEM_PREFIX`] or not a metric name;
/// [`CatalogError::Io`] when the trial's record cannot be read or the segment written.
pub fn publish_system_metrics(
    trial_dir: &Path,
    tag: &str,
    rows: &[SystemRow],
    owner: Option<(u32, u32)>,
) -> Result<Option<PathBuf>, CatalogError> {
    let record = crate::catalog::read_trial_record(trial_dir)?;
    let mut names: Vec<&str> = Vec::new();
    for row in rows {
        for (name, _) in &row.values {
            if !name.starts_with(SYSTEM_PREFIX) {
                return Err(CatalogError::BadMetricName {
                    name: name.clone(),
                    problem: "a system metric's name starts with sys/",
                });
            }
            crate::tracker::check_metric_name(name)?;
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    let header = SegmentHeader {
        format: "cohort.metrics".into(),
        version: CATALOG_VERSION,
        experiment: record.experiment,
        trial: record.id,
        rank: 0,
        writer: fsutil::writer(),
        created: fsutil::now(),
    };
    let mut bytes = Vec::new();
    push_frame(
        &mut bytes,
        Kind::Header,
        &serde_json::to_vec(&header).unwrap_or_default(),
    );
    push_frame(&mut bytes, Kind::Names, &names_payload(0, &names));
    let mut points = PointsBuilder::default();
    for row in rows {
        let values: Vec<(u32, f64)> = row
            .values
            .iter()
            .filter_map(|(name, value)| {
                let id = names.iter().position(|n| n == name)?;
                Some((u32::try_from(id).ok()?, *value))
            })
            .collect();
        points.row(row.step, row.wall, values.into_iter());
        // Frames stay far below the readers' limit on one payload.
        if points.len() > 256 << 10 {
            points.seal_into(&mut bytes);
        }
    }
    points.seal_into(&mut bytes);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = trial_dir.join(format!("metrics-sys-{tag}.clog"));
    Ok(fsutil::publish_new_owned(&path, &bytes, owner)?.then_some(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Catalog, NewExperiment};

    #[test]
    fn system_metrics_are_read_like_any_metric_and_published_once() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open_or_create(dir.path().join("cat")).unwrap();
        let (exp, _) = catalog
            .create_experiment(&NewExperiment {
                name: "e".into(),
                ..NewExperiment::default()
            })
            .unwrap();
        let trial = catalog
            .create_trial(&exp, Default::default(), Vec::new(), None)
            .unwrap();
        let rows: Vec<SystemRow> = (0..3)
            .map(|i| SystemRow {
                step: i * 5,
                wall: 1_000.0 + f64::from(u32::try_from(i).unwrap()) * 5.0,
                values: vec![
                    (
                        "sys/gpu0/util".into(),
                        90.0 + f64::from(u32::try_from(i).unwrap()),
                    ),
                    ("sys/gpu0/memory_gib".into(), 20.0),
                ],
            })
            .collect();
        let path = publish_system_metrics(&trial.dir, "node1/j7.0-l0", &rows, None)
            .unwrap()
            .unwrap();
        assert!(path.ends_with("metrics-sys-node1_j7.0-l0.clog"));
        assert_eq!(
            publish_system_metrics(&trial.dir, "node1/j7.0-l0", &rows, None).unwrap(),
            None
        );
        let mut warnings = Vec::new();
        let only = ["sys/gpu0/util".to_owned()];
        let history = crate::read::history(&trial.dir, Some(&only), &mut warnings).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let points: Vec<(i64, f64)> = history["sys/gpu0/util"]
            .iter()
            .map(|p| (p.step, p.value))
            .collect();
        assert_eq!(points, [(0, 90.0), (5, 91.0), (10, 92.0)]);
        let bad = SystemRow {
            values: vec![("loss".into(), 1.0)],
            ..rows[0].clone()
        };
        assert!(publish_system_metrics(&trial.dir, "x", &[bad], None)
            .unwrap_err()
            .to_string()
            .contains("starts with sys/"));
    }
}
