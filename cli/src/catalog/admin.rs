//! Keeping the catalog: `ckpt list|gc` (checkpoints and their collection) and `index` (the
//! index rebuilt from the trials' files).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;
use cohort_catalog::ckpt::Policy;
use cohort_catalog::index::{IndexWrite, LoadOptions};

use super::format::{json_out, table, time_text};
use super::{targets, warn_all, CatalogArg};
use crate::write_out;

#[derive(Debug, Subcommand)]
pub(crate) enum CkptCommand {
    /// List the checkpoints of an experiment's trials (or one trial).
    List {
        /// EXPERIMENT or EXPERIMENT/NUMBER.
        target: String,
        #[command(flatten)]
        catalog: CatalogArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete the checkpoints the retention policy does not keep (per trial). Idempotent.
    Gc {
        /// EXPERIMENT or EXPERIMENT/NUMBER.
        target: String,
        #[command(flatten)]
        catalog: CatalogArg,
        /// Keep the N latest checkpoints of each trial.
        #[arg(long, value_name = "N")]
        keep_latest: Option<usize>,
        /// Keep the N best checkpoints of each trial by --by.
        #[arg(long, value_name = "N", requires = "by")]
        keep_best: Option<usize>,
        /// The metric that ranks checkpoints (its value in the checkpoint's metadata, else
        /// the value logged at the checkpoint's step).
        #[arg(long, value_name = "METRIC")]
        by: Option<String>,
        /// Larger values of --by are better (accuracy); default: smaller (loss).
        #[arg(long)]
        max: bool,
        /// Show what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn ckpt(command: &CkptCommand) -> Result<ExitCode> {
    match command {
        CkptCommand::List {
            target,
            catalog,
            json,
        } => {
            let catalog = catalog.open()?;
            let (_, trials) = targets(&catalog, target, true)?;
            let rows: Vec<(u64, &cohort_proto::catalog::Checkpoint)> = trials
                .iter()
                .flat_map(|t| t.checkpoints.iter().map(move |c| (t.id, c)))
                .collect();
            if *json {
                let list: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(id, c)| {
                        serde_json::json!({
                            "trial": id, "path": c.path, "step": c.step, "size": c.size,
                            "at": c.at, "metadata": c.metadata,
                            "exists": Path::new(&c.path).exists(),
                        })
                    })
                    .collect();
                json_out(&list)?;
            } else if rows.is_empty() {
                write_out("No checkpoints recorded.\n")?;
            } else {
                let header = ["TRIAL", "STEP", "SIZE", "WRITTEN", "PATH"].map(String::from);
                let table_rows: Vec<Vec<String>> = rows
                    .iter()
                    .map(|(id, c)| {
                        vec![
                            id.to_string(),
                            c.step.to_string(),
                            c.size.to_string(),
                            time_text(Some(c.at)),
                            if Path::new(&c.path).exists() {
                                c.path.clone()
                            } else {
                                format!("{} (missing)", c.path)
                            },
                        ]
                    })
                    .collect();
                write_out(&table(&header, &table_rows))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        CkptCommand::Gc {
            target,
            catalog,
            keep_latest,
            keep_best,
            by,
            max,
            dry_run,
            json,
        } => {
            if keep_latest.is_none() && keep_best.is_none() {
                bail!("give a retention policy: --keep-latest N and/or --keep-best N --by METRIC");
            }
            let catalog = catalog.open()?;
            let (experiment, trials) = targets(&catalog, target, true)?;
            if let Some(metric) = by {
                if !trials.iter().any(|t| t.metrics.contains_key(metric))
                    && !trials.iter().any(|t| {
                        t.checkpoints
                            .iter()
                            .any(|c| c.metadata.contains_key(metric))
                    })
                {
                    bail!("no trial of {} reported metric {metric:?}, so --by {metric} cannot rank checkpoints", experiment.record.name);
                }
            }
            let policy = Policy {
                keep_latest: *keep_latest,
                keep_best: keep_best.zip(by.clone()),
                smaller_is_better: !*max,
            };
            let mut warnings = Vec::new();
            let trials: Vec<_> = trials
                .into_iter()
                .map(|trial| (experiment.summary_dir(&trial), trial))
                .collect();
            let report =
                cohort_catalog::ckpt::collect(&catalog, &trials, &policy, *dry_run, &mut warnings)?;
            warn_all(&warnings);
            if *json {
                json_out(&report)?;
            } else {
                let mut text = String::new();
                for (id, path, size) in &report.deleted {
                    text.push_str(&format!(
                        "{} trial {id}: {path} ({size} bytes)\n",
                        if *dry_run { "would delete" } else { "deleted" }
                    ));
                }
                for (id, path, versions) in &report.registered {
                    text.push_str(&format!(
                        "kept trial {id}: {path} (registered as {})\n",
                        versions.join(", ")
                    ));
                }
                text.push_str(&format!(
                    "{} trial(s): kept {} checkpoint(s){}, {} {} ({} bytes)\n",
                    report.trials,
                    report.kept,
                    if report.registered.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " and {} that model versions point at",
                            report.registered.len()
                        )
                    },
                    if *dry_run { "would delete" } else { "deleted" },
                    report.deleted.len(),
                    report.freed
                ));
                write_out(&text)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn index(experiment: Option<&str>, catalog: &CatalogArg) -> Result<ExitCode> {
    let catalog = catalog.open()?;
    let experiments = match experiment {
        Some(name) => vec![catalog.experiment(name)?],
        None => {
            let (all, warnings) = catalog.experiments()?;
            warn_all(&warnings);
            all
        }
    };
    let mut text = String::new();
    for experiment in &experiments {
        let loaded = cohort_catalog::load(
            &catalog,
            experiment,
            LoadOptions {
                use_index: false,
                write: IndexWrite::Always,
            },
        )?;
        warn_all(&loaded.warnings);
        text.push_str(&format!(
            "{}: indexed {} trial(s) -> {}\n",
            experiment.record.name,
            loaded.trials.len(),
            catalog.index_path(experiment).display()
        ));
    }
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}
