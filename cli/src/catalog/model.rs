//! `cohort model`: named model versions registered from trials' checkpoints, aliases with
//! their history, and export with a model card (`cohort_catalog::model`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;
use cohort_catalog::format_number;
use cohort_catalog::model::{self, CheckpointChoice, Model, VersionRef};
use cohort_proto::catalog::ModelVersion;

use super::format::{hparam_text, json_out, table, time_text};
use super::{parse_trial_ref, warn_all, CatalogArg};
use crate::write_out;

#[derive(Debug, Subcommand)]
pub(crate) enum ModelCommand {
    /// Register a trial's checkpoint as the next version of model NAME (created by its
    /// first version). The checkpoint is hashed (SHA-256); the version records the trial, its
    /// hyperparameters, its metrics at the checkpoint's step and its command.
    Register {
        /// The model's name.
        name: String,
        /// The trial, as EXPERIMENT/NUMBER.
        #[arg(long, value_name = "EXPERIMENT/NUMBER")]
        from: String,
        /// Which checkpoint: latest, best:METRIC (smallest; best:METRIC:max for the largest)
        /// or a step number.
        #[arg(long, value_name = "CHOICE", default_value = "latest")]
        checkpoint: String,
        /// Free text kept with the version.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        #[command(flatten)]
        catalog: CatalogArg,
        /// Print the version as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Point ALIAS (production, staging, ...) at version NAME@K; the move is recorded with
    /// who made it, when and from which version.
    Alias {
        /// NAME@K (or NAME with --remove).
        target: String,
        /// The alias: letters, digits, '-', '_', '.', starting with a letter.
        alias: String,
        /// Remove the alias instead (recorded in its history like a move).
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        catalog: CatalogArg,
        /// Print the move as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The catalog's models: versions, the latest, aliases.
    List {
        #[command(flatten)]
        catalog: CatalogArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A model (its versions, aliases and the aliases' history) or one version (NAME@K or
    /// NAME@ALIAS): provenance, checkpoint, hyperparameters, metrics.
    Show {
        /// NAME, NAME@K or NAME@ALIAS.
        target: String,
        #[command(flatten)]
        catalog: CatalogArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy a version's checkpoint into DIR, verifying its SHA-256, with a model card beside
    /// it (model-card.json and model-card.md).
    Export {
        /// NAME@K, NAME@ALIAS, or NAME for its latest version.
        target: String,
        /// The directory to write into (created if absent).
        dir: PathBuf,
        #[command(flatten)]
        catalog: CatalogArg,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn model_command(command: &ModelCommand) -> Result<ExitCode> {
    let mut warnings = Vec::new();
    let result = run(command, &mut warnings);
    warn_all(&warnings);
    result
}

fn run(command: &ModelCommand, warnings: &mut Vec<cohort_catalog::Warning>) -> Result<ExitCode> {
    match command {
        ModelCommand::Register {
            name,
            from,
            checkpoint,
            description,
            catalog,
            json,
        } => {
            let catalog = catalog.open()?;
            let (experiment, trial) = parse_trial_ref(from)?;
            let choice: CheckpointChoice = checkpoint.parse()?;
            let version = model::register(
                &catalog,
                name,
                &experiment,
                trial,
                &choice,
                description.clone(),
                warnings,
            )?;
            if *json {
                let found = model::model(&catalog, name, warnings)?;
                json_out(&model::version_json(&found, &version))?;
            } else {
                write_out(&format!(
                    "registered {name}@{}: {}/{} step {}, {} ({} bytes, sha256 {})\n",
                    version.number,
                    experiment,
                    trial,
                    version.checkpoint.step,
                    version.checkpoint.path,
                    version.checkpoint.size,
                    version.checkpoint.sha256
                ))?;
            }
        }
        ModelCommand::Alias {
            target,
            alias,
            remove,
            catalog,
            json,
        } => {
            let catalog = catalog.open()?;
            let (name, version) = model::parse_ref(target)?;
            let to = match (version, remove) {
                (Some(VersionRef::Number(n)), false) => Some(n),
                (None, true) => None,
                (Some(VersionRef::Alias(other)), false) => {
                    // NAME@staging production: point production where staging points now.
                    let found = model::model(&catalog, &name, warnings)?;
                    Some(found.version(Some(&VersionRef::Alias(other)))?.number)
                }
                (None, false) => bail!(
                    "{target:?}: name the version the alias points at, as NAME@VERSION (or NAME with --remove)"
                ),
                (Some(_), true) => {
                    bail!("{target:?}: --remove takes the model's name alone (NAME ALIAS)")
                }
            };
            let moved = model::move_alias(&catalog, &name, alias, to, warnings)?;
            match (&moved, json) {
                (Some(record), true) => json_out(record)?,
                (None, true) => json_out(&serde_json::json!({
                    "model": name, "alias": alias, "to": to, "unchanged": true,
                }))?,
                (Some(record), false) => write_out(&format!(
                    "{name}: {alias} {}\n",
                    match (record.from, record.to) {
                        (None, Some(to)) => format!("-> version {to}"),
                        (Some(from), Some(to)) => format!("moved from version {from} to {to}"),
                        (Some(from), None) => format!("removed (was version {from})"),
                        (None, None) => "removed".to_owned(),
                    }
                ))?,
                (None, false) => write_out(&format!(
                    "{name}: {alias} already points at version {}; nothing recorded\n",
                    to.unwrap_or_default()
                ))?,
            }
        }
        ModelCommand::List { catalog, json } => {
            let catalog = catalog.open()?;
            let found = model::models(&catalog, warnings)?;
            if *json {
                let list: Vec<serde_json::Value> =
                    found.iter().map(model::model_summary_json).collect();
                json_out(&list)?;
            } else if found.is_empty() {
                write_out(
                    "No models registered (cohort model register NAME --from EXPERIMENT/NUMBER).\n",
                )?;
            } else {
                let header =
                    ["MODEL", "VERSIONS", "LATEST", "REGISTERED", "ALIASES"].map(String::from);
                let rows: Vec<Vec<String>> = found
                    .iter()
                    .map(|m| {
                        let latest = m.versions.last();
                        vec![
                            m.record.name.clone(),
                            m.versions.len().to_string(),
                            latest.map_or_else(|| "-".into(), |v| v.number.to_string()),
                            time_text(latest.map(|v| v.registered)),
                            aliases_text(m),
                        ]
                    })
                    .collect();
                write_out(&table(&header, &rows))?;
            }
        }
        ModelCommand::Show {
            target,
            catalog,
            json,
        } => {
            let catalog = catalog.open()?;
            let (name, which) = model::parse_ref(target)?;
            let found = model::model(&catalog, &name, warnings)?;
            match which {
                None if *json => json_out(&model::model_json(&found))?,
                None => write_out(&model_text(&found))?,
                Some(which) => {
                    let version = found.version(Some(&which))?;
                    if *json {
                        json_out(&model::version_json(&found, version))?;
                    } else {
                        write_out(&version_text(&found, version))?;
                    }
                }
            }
        }
        ModelCommand::Export {
            target,
            dir,
            catalog,
            json,
        } => {
            let catalog = catalog.open()?;
            let (name, which) = model::parse_ref(target)?;
            let found = model::model(&catalog, &name, warnings)?;
            let version = found.version(which.as_ref())?;
            let exported = model::export(&found, version, dir)?;
            if *json {
                json_out(&exported)?;
            } else {
                write_out(&format!(
                    "exported {name}@{}: {} ({} bytes, sha256 {} verified), {}, {}\n",
                    version.number,
                    exported.checkpoint.display(),
                    exported.size,
                    exported.sha256,
                    exported.card_json.display(),
                    exported.card_markdown.display()
                ))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn aliases_text(model: &Model) -> String {
    let aliases: Vec<String> = model
        .current_aliases()
        .into_iter()
        .map(|(alias, to)| format!("{alias}={to}"))
        .collect();
    if aliases.is_empty() {
        "-".into()
    } else {
        aliases.join(" ")
    }
}

fn checkpoint_cell(version: &ModelVersion) -> String {
    if model::checkpoint_present(version) {
        version.checkpoint.path.clone()
    } else {
        format!("{} (missing)", version.checkpoint.path)
    }
}

fn model_text(model: &Model) -> String {
    let mut text = format!(
        "Model {}  created {} by {}\n",
        model.record.name,
        time_text(Some(model.record.created)),
        model.record.created_by.user
    );
    if model.versions.is_empty() {
        text.push_str("  no readable version\n");
        return text;
    }
    text.push('\n');
    let header = [
        "VERSION",
        "ALIASES",
        "TRIAL",
        "STEP",
        "SIZE",
        "REGISTERED",
        "BY",
        "CHECKPOINT",
    ]
    .map(String::from);
    let rows: Vec<Vec<String>> = model
        .versions
        .iter()
        .map(|v| {
            let aliases = model.aliases_of(v.number);
            vec![
                v.number.to_string(),
                if aliases.is_empty() {
                    "-".into()
                } else {
                    aliases.join(",")
                },
                format!("{}/{}", v.source.experiment, v.source.trial),
                v.checkpoint.step.to_string(),
                v.checkpoint.size.to_string(),
                time_text(Some(v.registered)),
                v.registered_by.user.clone(),
                checkpoint_cell(v),
            ]
        })
        .collect();
    text.push_str(&table(&header, &rows));
    let moves = model.alias_history();
    if !moves.is_empty() {
        text.push_str("\nAlias history\n");
        let header = ["WHEN", "ALIAS", "FROM", "TO", "BY"].map(String::from);
        let version = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
        let rows: Vec<Vec<String>> = moves
            .iter()
            .map(|m| {
                vec![
                    time_text(Some(m.at)),
                    m.alias.clone(),
                    version(m.from),
                    if m.to.is_none() {
                        "(removed)".into()
                    } else {
                        version(m.to)
                    },
                    format!("{}@{}", m.by.user, m.by.host),
                ]
            })
            .collect();
        text.push_str(&table(&header, &rows));
    }
    text
}

fn version_text(model: &Model, version: &ModelVersion) -> String {
    let aliases = model.aliases_of(version.number);
    let mut text = format!(
        "{}@{}{}\n",
        model.record.name,
        version.number,
        if aliases.is_empty() {
            String::new()
        } else {
            format!("  ({})", aliases.join(", "))
        }
    );
    if let Some(description) = &version.description {
        text.push_str(&format!("  description  {description}\n"));
    }
    let source = &version.source;
    text.push_str(&format!(
        "  trial        {}/{}{}\n",
        source.experiment,
        source.trial,
        source.state.map(|s| format!(" ({s})")).unwrap_or_default()
    ));
    if let Some(job) = &source.slurm_job {
        text.push_str(&format!(
            "  slurm        job {job}{}\n",
            source
                .slurm_step
                .as_ref()
                .map(|s| format!(" step {s}"))
                .unwrap_or_default()
        ));
    }
    if !source.nodes.is_empty() {
        text.push_str(&format!("  nodes        {}\n", source.nodes.join(",")));
    }
    if !source.command.is_empty() {
        text.push_str(&format!("  command      {}\n", source.command.join(" ")));
    }
    let ckpt = &version.checkpoint;
    text.push_str(&format!(
        "  checkpoint   {}\n               {}, {} bytes, step {}, sha256 {}\n",
        checkpoint_cell(version),
        ckpt.kind,
        ckpt.size,
        ckpt.step,
        ckpt.sha256
    ));
    text.push_str(&format!(
        "  registered   {} by {}@{}\n",
        time_text(Some(version.registered)),
        version.registered_by.user,
        version.registered_by.host
    ));
    if !version.hparams.is_empty() {
        text.push_str("\nHyperparameters\n");
        for (key, value) in &version.hparams {
            text.push_str(&format!("  {key} = {}\n", hparam_text(value)));
        }
    }
    if !version.metrics.is_empty() {
        text.push_str(&format!("\nMetrics at step {}\n", ckpt.step));
        let header = ["METRIC", "VALUE", "LOGGED AT STEP"].map(String::from);
        let rows: Vec<Vec<String>> = version
            .metrics
            .iter()
            .map(|(name, at)| vec![name.clone(), format_number(at.value), at.step.to_string()])
            .collect();
        text.push_str(&table(&header, &rows));
    }
    text
}
