//! `cohort log metric|checkpoint`: recording into the current trial from any program or shell
//! script, through the tracker's shared host segment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use cohort_catalog::{Catalog, Tracker, TrackerOptions};
use cohort_proto::env as vars;

use super::{catalog_root, CatalogArg};

#[derive(Debug, Subcommand)]
pub(crate) enum LogCommand {
    /// Record metric values for the current trial: `cohort log metric loss=0.31 acc=0.9
    /// --step 100`. The trial comes from COHORT_EXPERIMENT and COHORT_TRIAL (set by `cohort
    /// run` and the Slurm plugin) or --experiment/--trial.
    Metric {
        /// NAME=VALUE pairs.
        #[arg(required = true, value_name = "NAME=VALUE")]
        values: Vec<String>,
        /// The training step.
        #[arg(long)]
        step: i64,
        #[command(flatten)]
        target: TrialTarget,
    },
    /// Record a checkpoint the program wrote (a file or directory) at a step: `cohort log
    /// checkpoint ckpt/step-100.pt --step 100`. `cohort ckpt list EXP/N` finds it again.
    Checkpoint {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// The training step it holds.
        #[arg(long)]
        step: i64,
        #[command(flatten)]
        target: TrialTarget,
    },
}

/// Which trial `cohort log` writes to.
#[derive(Debug, Args)]
pub(crate) struct TrialTarget {
    /// The experiment (default COHORT_EXPERIMENT).
    #[arg(long)]
    experiment: Option<String>,
    /// The trial number (default COHORT_TRIAL).
    #[arg(long)]
    trial: Option<u64>,
    #[command(flatten)]
    catalog: CatalogArg,
}

/// `NAME=VALUE` pairs of `cohort log metric`.
fn metric_pairs(values: &[String]) -> Result<Vec<(String, f64)>> {
    let mut pairs: Vec<(String, f64)> = Vec::new();
    for text in values {
        let Some((name, value)) = text.split_once('=') else {
            bail!("{text:?}: expected NAME=VALUE (for example loss=0.31)");
        };
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{text:?}: {value:?} is not a number"))?;
        if name.trim().is_empty() {
            bail!("{text:?}: the metric name is empty");
        }
        pairs.push((name.trim().to_owned(), value));
    }
    Ok(pairs)
}

pub(crate) fn log(command: &LogCommand) -> Result<ExitCode> {
    let target = match command {
        LogCommand::Metric { target, .. } | LogCommand::Checkpoint { target, .. } => target,
    };
    // Bad values are refused before anything is written.
    let pairs = match command {
        LogCommand::Metric { values, .. } => metric_pairs(values)?,
        LogCommand::Checkpoint { .. } => Vec::new(),
    };
    let TrialTarget {
        experiment,
        trial,
        catalog,
    } = target;
    let experiment = match experiment.clone().or_else(|| std::env::var(vars::EXPERIMENT).ok().filter(|v| !v.is_empty())) {
        Some(e) => e,
        None => bail!("no experiment: run under `cohort run` or the Slurm plugin (which set COHORT_EXPERIMENT and COHORT_TRIAL), or give --experiment and --trial"),
    };
    let trial = match trial {
        Some(t) => *t,
        None => match std::env::var(vars::TRIAL).ok().filter(|v| !v.is_empty()) {
            Some(text) => text.parse().map_err(|_| anyhow::anyhow!("environment variable COHORT_TRIAL: {text:?} is not a trial number"))?,
            None => bail!("no trial: run under `cohort run` or the Slurm plugin (which set COHORT_TRIAL), or give --trial"),
        },
    };
    let root = catalog_root(catalog.catalog.as_deref())?;
    let catalog = Catalog::open(root)?;
    let tracker = Tracker::open(
        &catalog,
        &experiment,
        Some(trial),
        TrackerOptions {
            host_segment: true,
            ..TrackerOptions::default()
        },
    )?;
    match command {
        LogCommand::Metric { step, .. } => {
            let refs: Vec<(&str, f64)> = pairs.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            tracker.log_metrics(*step, &refs)?;
        }
        LogCommand::Checkpoint { path, step, .. } => {
            tracker.checkpoint(path, *step, BTreeMap::new())?;
        }
    }
    tracker.close()?;
    Ok(ExitCode::SUCCESS)
}
