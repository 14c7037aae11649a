//! Synthetic experiments for benchmarks and comparisons: deterministic hyperparameters and
//! learning curves, written through the ordinary tracker.

use std::collections::BTreeMap;
use std::time::Duration;

use cohort_proto::catalog::TrialState;
use rayon::prelude::*;

use crate::catalog::{Catalog, NewExperiment};
use crate::error::CatalogError;
use crate::tracker::{Tracker, TrackerOptions};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Experiment name.
    pub experiment: String,
    /// Number of trials.
    pub trials: u64,
    /// Metrics per trial: `val_loss`, then `m1`, `m2`, ...
    pub metrics: usize,
    /// Steps per trial (one point per metric per step).
    pub steps: i64,
}

/// SplitMix64: a tiny deterministic generator (quality is ample for synthetic curves).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn unit(x: u64) -> f64 {
    (mix(x) >> 11) as f64 / (1u64 << 53) as f64
}

/// Metric names of a synthetic trial.
pub fn metric_names(metrics: usize) -> Vec<String> {
    (0..metrics)
        .map(|i| {
            if i == 0 {
                "val_loss".to_owned()
            } else {
                format!("m{i}")
            }
        })
        .collect()
}

/// The learning rate of trial `id`: log-uniform in [1e-4, 1e-1].
pub fn learning_rate(id: u64) -> f64 {
    10f64.powf(-4.0 + 3.0 * unit(id))
}

/// Generates the experiment; returns the number of points written.
pub fn generate(catalog: &Catalog, spec: &SynthSpec) -> Result<u64, CatalogError> {
    let (exp, _) = catalog.create_experiment(&NewExperiment {
        name: spec.experiment.clone(),
        description: Some(format!(
            "synthetic: {} trials x {} metrics x {} steps",
            spec.trials, spec.metrics, spec.steps
        )),
        ..NewExperiment::default()
    })?;
    let names = metric_names(spec.metrics);
    (1..=spec.trials)
        .into_par_iter()
        .map(|seq| {
            let lr = learning_rate(seq);
            let layers = 1 + seq % 8;
            let hparams: BTreeMap<String, serde_json::Value> = [
                ("lr".to_owned(), serde_json::json!(lr)),
                ("layers".to_owned(), serde_json::json!(layers)),
            ]
            .into();
            let trial =
                catalog.create_trial(&exp, hparams, Vec::new(), Some(TrialState::Running))?;
            let tracker = Tracker::attach(
                trial,
                TrackerOptions {
                    owns_state: true,
                    flush_interval: Duration::from_secs(3600),
                    ..TrackerOptions::default()
                },
            )?;
            // A curve that falls faster with a good learning rate and ends higher the further
            // the rate is from 10^-2.5.
            let floor = 0.05 + 0.1 * (lr.log10() + 2.5).abs() + 0.02 * layers as f64 / 8.0;
            let speed = lr * 50.0 / spec.steps.max(1) as f64 * 100.0;
            let mut row: Vec<(&str, f64)> = names.iter().map(|n| (n.as_str(), 0.0)).collect();
            for step in 0..spec.steps {
                let noise = unit(seq.wrapping_mul(1_000_003) ^ step.unsigned_abs()) - 0.5;
                let loss = floor + (1.0 - floor) * (-(step as f64) * speed).exp() + 0.01 * noise;
                for (i, slot) in row.iter_mut().enumerate() {
                    slot.1 = if i == 0 {
                        loss
                    } else {
                        loss * (1.0 + i as f64) + noise
                    };
                }
                tracker.log_metrics(step, &row)?;
            }
            tracker.finish(TrialState::Completed)?;
            Ok(spec.steps.max(0).unsigned_abs() * names.len() as u64)
        })
        .sum()
}
