//! The catalog commands: `exp`, `trials`, `trial show`, `metrics`, `compare`, `plot`,
//! `export`, `ckpt`, `index`, `log metric`.
//!
//! Tables by default, `--json` with the shapes documented in `docs/catalog.md`. Files that a
//! query skipped are named on stderr as `cohort: warning: FILE: problem`; the rest is shown.

use cohort_proto::env as vars;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use cohort_catalog::ckpt::{GcReport, Policy};
use cohort_catalog::export::Format;
use cohort_catalog::index::{IndexWrite, LoadOptions};
use cohort_catalog::query::{Field, Filter};
use cohort_catalog::read::{history, shown_state, Point};
use cohort_catalog::{
    format_number, Catalog, Experiment, Loaded, Tracker, TrackerOptions, Warning,
};
use cohort_proto::catalog::TrialSummary;

use crate::write_out;

/// Where the catalog is.
#[derive(Debug, Clone, Args)]
pub(crate) struct CatalogArg {
    /// The catalog's directory (default: COHORT_CATALOG, else `catalog` in
    /// /etc/cohort/cohort.toml, else ./cohort-catalog).
    #[arg(long, value_name = "DIR", global = true)]
    catalog: Option<PathBuf>,
}

/// Resolves the catalog directory: the option, `COHORT_CATALOG`, `/etc/cohort/cohort.toml`'s
/// `catalog`, `./cohort-catalog`.
pub(crate) fn catalog_root(option: Option<&Path>) -> Result<PathBuf> {
    match option {
        Some(path) => Ok(path.to_path_buf()),
        None => Ok(cohort_catalog::default_root()?),
    }
}

impl CatalogArg {
    /// The directory given with --catalog, if any.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.catalog.as_deref()
    }

    fn open(&self) -> Result<Catalog> {
        Ok(Catalog::open(catalog_root(self.catalog.as_deref())?)?)
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum ExpCommand {
    /// List the experiments: name, trials, owner, created.
    List {
        #[command(flatten)]
        catalog: CatalogArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one experiment: its record, trial counts by state and the best trial.
    Show {
        /// The experiment.
        experiment: String,
        #[command(flatten)]
        catalog: CatalogArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TrialsArgs {
    /// The experiment.
    experiment: String,
    #[command(flatten)]
    catalog: CatalogArg,
    /// Sort by a metric (`val_loss` is its last value; `val_loss:min`, `:max`, `:count`,
    /// `:step`), a hyperparameter, `state` or `id`. Ascending unless --desc.
    #[arg(long, value_name = "FIELD")]
    sort: Option<String>,
    /// Sort descending.
    #[arg(long)]
    desc: bool,
    /// Keep trials where FIELD OP VALUE holds (`lr<0.01`, `state=completed`); repeat to AND.
    #[arg(long = "where", value_name = "COND")]
    filters: Vec<String>,
    /// Show at most N trials.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Read every trial's logs instead of starting from the index.
    #[arg(long)]
    no_index: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OutFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct MetricsArgs {
    /// The trial: EXPERIMENT/NUMBER.
    trial: String,
    #[command(flatten)]
    catalog: CatalogArg,
    /// Only this metric (repeatable).
    #[arg(long = "name", value_name = "METRIC")]
    names: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: OutFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ExportFormat {
    Csv,
    Json,
    Parquet,
}

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

pub(crate) fn warn_all(warnings: &[Warning]) {
    let mut stderr = std::io::stderr().lock();
    for warning in warnings {
        let _ = writeln!(stderr, "cohort: warning: {warning}");
    }
}

fn note_staleness(loaded: &Loaded) {
    if let Some(fs) = loaded.stats.shared_fs {
        eprintln!(
            "cohort: note: the catalog is on {fs}; what other nodes wrote in the last seconds may not show yet (attribute caching)"
        );
    }
}

/// `EXPERIMENT/NUMBER`.
fn parse_trial_ref(text: &str) -> Result<(String, u64)> {
    let Some((experiment, id)) = text.rsplit_once('/') else {
        bail!("{text:?}: name a trial as EXPERIMENT/NUMBER (for example mlp/3)");
    };
    let id: u64 = id
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?}: {id:?} is not a trial number"))?;
    Ok((experiment.to_owned(), id))
}

fn load(catalog: &Catalog, experiment: &Experiment, use_index: bool) -> Result<Loaded> {
    let loaded = cohort_catalog::load(
        catalog,
        experiment,
        LoadOptions {
            use_index,
            write: IndexWrite::Auto,
        },
    )?;
    warn_all(&loaded.warnings);
    note_staleness(&loaded);
    Ok(loaded)
}

fn one_trial(catalog: &Catalog, text: &str) -> Result<(Experiment, TrialSummary)> {
    let (name, id) = parse_trial_ref(text)?;
    let experiment = catalog.experiment(&name)?;
    let trial = catalog.trial(&experiment, id)?;
    let mut warnings = Vec::new();
    let summary = cohort_catalog::read::summarize(&trial.dir, None, &mut warnings)?;
    warn_all(&warnings);
    let Some(summary) = summary else {
        bail!("{}: not a complete trial", trial.dir.display());
    };
    Ok((experiment, summary))
}

fn time_text(t: Option<f64>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    #[allow(clippy::cast_possible_truncation)]
    let secs = t as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn duration_text(seconds: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = seconds.max(0.0) as u64;
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 172_800 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// A plain text table: left-aligned columns two spaces apart.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            line.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn json_out(value: &impl serde::Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_out(&text)
}

fn state_text(trial: &TrialSummary) -> String {
    let state = shown_state(trial).map_or_else(|| "unknown".to_owned(), |s| s.to_string());
    // A running trial whose logs stopped moving long ago may have lost its writer.
    if shown_state(trial) == Some(cohort_proto::catalog::TrialState::Running) {
        if let Some(last) = trial.last_write {
            let idle = cohort_catalog::now() - last;
            if idle > 600.0 {
                return format!("{state} (idle {})", duration_text(idle));
            }
        }
    }
    state
}

fn hparam_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), format_number),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn trial_json(trial: &TrialSummary) -> serde_json::Value {
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

pub(crate) fn exp(command: &ExpCommand) -> Result<ExitCode> {
    match command {
        ExpCommand::List { catalog, json } => {
            let catalog = catalog.open()?;
            let (experiments, warnings) = catalog.experiments()?;
            warn_all(&warnings);
            let counts: Vec<usize> = experiments
                .iter()
                .map(|e| {
                    std::fs::read_dir(e.dir.join("trials")).map_or(0, |d| {
                        d.filter_map(Result::ok)
                            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                            .count()
                    })
                })
                .collect();
            if *json {
                let list: Vec<serde_json::Value> = experiments
                    .iter()
                    .zip(&counts)
                    .map(|(e, n)| {
                        serde_json::json!({
                            "name": e.record.name,
                            "description": e.record.description,
                            "owner": e.record.owner.user,
                            "created": e.record.created,
                            "searcher": e.record.searcher,
                            "trials": n,
                        })
                    })
                    .collect();
                json_out(&list)?;
            } else if experiments.is_empty() {
                write_out(&format!(
                    "No experiments in {} yet.\n",
                    catalog.root().display()
                ))?;
            } else {
                let rows: Vec<Vec<String>> = experiments
                    .iter()
                    .zip(&counts)
                    .map(|(e, n)| {
                        vec![
                            e.record.name.clone(),
                            n.to_string(),
                            e.record.owner.user.clone(),
                            time_text(Some(e.record.created)),
                            e.record.description.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                let header =
                    ["EXPERIMENT", "TRIALS", "OWNER", "CREATED", "DESCRIPTION"].map(String::from);
                write_out(&table(&header, &rows))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ExpCommand::Show {
            experiment,
            catalog,
            json,
        } => {
            let catalog = catalog.open()?;
            let experiment = catalog.experiment(experiment)?;
            let loaded = load(&catalog, &experiment, true)?;
            let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
            for trial in &loaded.trials {
                *by_state
                    .entry(
                        shown_state(trial)
                            .map_or("unknown", |s| s.as_str())
                            .to_owned(),
                    )
                    .or_default() += 1;
            }
            let mut metrics: Vec<&String> = loaded
                .trials
                .iter()
                .flat_map(|t| t.metrics.keys())
                .collect();
            metrics.sort();
            metrics.dedup();
            if *json {
                json_out(&serde_json::json!({
                    "experiment": experiment.record,
                    "trials": loaded.trials.len(),
                    "states": by_state,
                    "metrics": metrics,
                    "load": loaded.stats,
                }))?;
                return Ok(ExitCode::SUCCESS);
            }
            let r = &experiment.record;
            let mut text = format!("Experiment {}\n", r.name);
            if let Some(d) = &r.description {
                text.push_str(&format!("  description  {d}\n"));
            }
            text.push_str(&format!(
                "  owner        {} on {}\n  created      {}\n  directory    {}\n",
                r.owner.user,
                r.owner.host,
                time_text(Some(r.created)),
                experiment.dir.display()
            ));
            if let Some(s) = &r.searcher {
                text.push_str(&format!("  searcher     {s}\n"));
            }
            if !r.config.is_null() {
                text.push_str(&format!("  config       {}\n", r.config));
            }
            let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
            text.push_str(&format!(
                "  trials       {}{}\n",
                loaded.trials.len(),
                if states.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", states.join(", "))
                }
            ));
            let names: Vec<&str> = metrics.iter().map(|m| m.as_str()).collect();
            text.push_str(&format!("  metrics      {}\n", names.join(", ")));
            write_out(&text)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn trials(args: &TrialsArgs) -> Result<ExitCode> {
    let catalog = args.catalog.open()?;
    let experiment = catalog.experiment(&args.experiment)?;
    let loaded = load(&catalog, &experiment, !args.no_index)?;
    let filters = args
        .filters
        .iter()
        .map(|f| Filter::parse(f, &loaded.trials))
        .collect::<Result<Vec<_>, _>>()?;
    let sort = match &args.sort {
        Some(text) => Some(Field::parse(text, &loaded.trials)?),
        None => None,
    };
    let chosen = cohort_catalog::query::select(
        &loaded.trials,
        &filters,
        sort.as_ref().map(|f| (f, args.desc)),
        args.limit,
    );
    if args.json {
        let list: Vec<serde_json::Value> = chosen.iter().map(|t| trial_json(t)).collect();
        json_out(&list)?;
        // The process ends here: freeing tens of thousands of summaries one by one would
        // only delay the prompt.
        std::mem::forget(loaded);
        return Ok(ExitCode::SUCCESS);
    }
    if chosen.is_empty() {
        write_out(&format!(
            "No trial of {} matches ({} trial(s) in all).\n",
            experiment.record.name,
            loaded.trials.len()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut hparams: Vec<&String> = chosen.iter().flat_map(|t| t.hparams.keys()).collect();
    hparams.sort();
    hparams.dedup();
    let mut metrics: Vec<&String> = chosen.iter().flat_map(|t| t.metrics.keys()).collect();
    metrics.sort();
    metrics.dedup();
    // The sort field first, then up to six metrics.
    let mut columns: Vec<Field> = Vec::new();
    if let Some(field @ Field::Metric(..)) = &sort {
        columns.push(field.clone());
    }
    for name in metrics {
        let field = Field::Metric(name.clone(), cohort_catalog::query::Agg::Last);
        if columns.len() < 6 && !columns.contains(&field) {
            columns.push(field);
        }
    }
    let mut header = vec!["TRIAL".to_owned(), "STATE".to_owned()];
    header.extend(hparams.iter().map(|h| (*h).clone()));
    header.extend(columns.iter().map(|c| match c {
        Field::Metric(name, cohort_catalog::query::Agg::Last) => name.clone(),
        Field::Metric(name, agg) => format!("{name}:{}", format!("{agg:?}").to_lowercase()),
        _ => String::new(),
    }));
    let rows: Vec<Vec<String>> = chosen
        .iter()
        .map(|t| {
            let mut row = vec![t.id.to_string(), state_text(t)];
            row.extend(
                hparams
                    .iter()
                    .map(|h| t.hparams.get(*h).map_or_else(|| "-".into(), hparam_text)),
            );
            row.extend(columns.iter().map(|c| c.value(t).to_string()));
            row
        })
        .collect();
    write_out(&table(&header, &rows))?;
    std::mem::forget(loaded);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn trial_show(target: &str, catalog: &CatalogArg, json: bool) -> Result<ExitCode> {
    let catalog = catalog.open()?;
    let (experiment, trial) = one_trial(&catalog, target)?;
    if json {
        let mut value = trial_json(&trial);
        if let Some(object) = value.as_object_mut() {
            object.insert("experiment".into(), experiment.record.name.clone().into());
            object.insert("record".into(), serde_json::to_value(&trial.trial)?);
            object.insert("state_record".into(), serde_json::to_value(&trial.state)?);
            object.insert(
                "checkpoints".into(),
                serde_json::to_value(&trial.checkpoints)?,
            );
            object.insert("damage".into(), serde_json::to_value(&trial.damage)?);
        }
        json_out(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!(
        "Trial {}/{}  {}\n",
        experiment.record.name,
        trial.id,
        state_text(&trial)
    );
    let s = trial.state.as_ref();
    text.push_str(&format!(
        "  created      {}\n",
        time_text(Some(trial.trial.created))
    ));
    text.push_str(&format!(
        "  started      {}\n",
        time_text(s.and_then(|s| s.started))
    ));
    text.push_str(&format!(
        "  ended        {}\n",
        time_text(s.and_then(|s| s.ended))
    ));
    if let Some(s) = s {
        if !s.nodes.is_empty() {
            text.push_str(&format!("  nodes        {}\n", s.nodes.join(",")));
        }
        if let Some(job) = &s.slurm_job {
            text.push_str(&format!(
                "  slurm        job {job}{}\n",
                s.slurm_step
                    .as_ref()
                    .map(|st| format!(" step {st}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(code) = s.exit_status {
            text.push_str(&format!("  exit status  {code}\n"));
        }
        if let Some(signal) = &s.exit_signal {
            text.push_str(&format!("  signal       {signal}\n"));
        }
        if let Some(message) = &s.message {
            text.push_str(&format!("  message      {message}\n"));
        }
        for restart in &s.restarts {
            text.push_str(&format!(
                "  restarted    {} ({})\n",
                time_text(Some(restart.at)),
                restart.reason
            ));
        }
    }
    if !trial.trial.command.is_empty() {
        text.push_str(&format!(
            "  command      {}\n",
            trial.trial.command.join(" ")
        ));
    }
    text.push_str(&format!(
        "  directory    {}\n",
        experiment.dir.join("trials").join(&trial.dir).display()
    ));
    if !trial.hparams.is_empty() {
        text.push_str("\nHyperparameters:\n");
        for (k, v) in &trial.hparams {
            text.push_str(&format!("  {k} = {}\n", hparam_text(v)));
        }
    }
    if !trial.metrics.is_empty() {
        text.push('\n');
        let header = ["METRIC", "LAST", "STEP", "MIN", "MAX", "POINTS"].map(String::from);
        let rows: Vec<Vec<String>> = trial
            .metrics
            .iter()
            .map(|(name, m)| {
                vec![
                    name.clone(),
                    format_number(m.last),
                    m.last_step.to_string(),
                    m.min.map_or_else(|| "-".into(), format_number),
                    m.max.map_or_else(|| "-".into(), format_number),
                    m.count.to_string(),
                ]
            })
            .collect();
        text.push_str(&table(&header, &rows));
    }
    if !trial.checkpoints.is_empty() {
        text.push_str(&format!(
            "\n{} checkpoint(s); `cohort ckpt list {}/{}`\n",
            trial.checkpoints.len(),
            experiment.record.name,
            trial.id
        ));
    }
    for damage in &trial.damage {
        text.push_str(&format!("damage: {damage}\n"));
    }
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn metrics(args: &MetricsArgs) -> Result<ExitCode> {
    let catalog = args.catalog.open()?;
    let (name, id) = parse_trial_ref(&args.trial)?;
    let experiment = catalog.experiment(&name)?;
    let trial = catalog.trial(&experiment, id)?;
    let mut warnings = Vec::new();
    let only = (!args.names.is_empty()).then_some(args.names.as_slice());
    let data = history(&trial.dir, only, &mut warnings)?;
    warn_all(&warnings);
    for wanted in &args.names {
        if !data.contains_key(wanted) {
            let all = history(&trial.dir, None, &mut Vec::new())?;
            let known: Vec<&String> = all.keys().collect();
            bail!(
                "trial {name}/{id} has no metric {wanted:?} (it has: {})",
                cohort_catalog::query::list_or_none(&known)
            );
        }
    }
    match args.format {
        OutFormat::Json => {
            let metrics: BTreeMap<&String, &Vec<Point>> = data.iter().collect();
            json_out(&serde_json::json!({"experiment": name, "trial": id, "metrics": metrics}))?;
        }
        OutFormat::Csv => {
            let mut out = String::from("metric,step,value,wall_time\n");
            for (metric, points) in &data {
                for p in points {
                    out.push_str(&format!("{metric},{},{},{}\n", p.step, p.value, p.wall));
                }
            }
            write_out(&out)?;
        }
        OutFormat::Table => {
            // One row per step, one column per metric.
            let names: Vec<&String> = data.keys().collect();
            let mut rows: BTreeMap<i64, Vec<Option<f64>>> = BTreeMap::new();
            for (i, points) in data.values().enumerate() {
                for p in points {
                    rows.entry(p.step)
                        .or_insert_with(|| vec![None; names.len()])[i] = Some(p.value);
                }
            }
            let mut header = vec!["STEP".to_owned()];
            header.extend(names.iter().map(|n| (*n).clone()));
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(step, values)| {
                    let mut row = vec![step.to_string()];
                    row.extend(
                        values
                            .into_iter()
                            .map(|v| v.map_or_else(|| "-".into(), format_number)),
                    );
                    row
                })
                .collect();
            write_out(&table(&header, &rows))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn compare(targets: &[String], catalog: &CatalogArg, json: bool) -> Result<ExitCode> {
    let catalog = catalog.open()?;
    let mut trials = Vec::new();
    for target in targets {
        trials.push((target.clone(), one_trial(&catalog, target)?.1));
    }
    if json {
        let list: Vec<serde_json::Value> = trials
            .iter()
            .map(|(name, t)| {
                let mut v = trial_json(t);
                if let Some(o) = v.as_object_mut() {
                    o.insert("ref".into(), name.clone().into());
                }
                v
            })
            .collect();
        json_out(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut header = vec![String::new()];
    header.extend(trials.iter().map(|(name, _)| name.clone()));
    let mut rows = vec![{
        let mut row = vec!["state".to_owned()];
        row.extend(trials.iter().map(|(_, t)| state_text(t)));
        row
    }];
    let mut hparams: Vec<&String> = trials.iter().flat_map(|(_, t)| t.hparams.keys()).collect();
    hparams.sort();
    hparams.dedup();
    for h in hparams {
        let mut row = vec![h.clone()];
        row.extend(
            trials
                .iter()
                .map(|(_, t)| t.hparams.get(h).map_or_else(|| "-".into(), hparam_text)),
        );
        rows.push(row);
    }
    let mut metrics: Vec<&String> = trials.iter().flat_map(|(_, t)| t.metrics.keys()).collect();
    metrics.sort();
    metrics.dedup();
    for m in metrics {
        for (label, pick) in [("last", 0), ("min", 1), ("max", 2)] {
            let mut row = vec![format!("{m} ({label})")];
            row.extend(trials.iter().map(|(_, t)| {
                t.metrics
                    .get(m)
                    .and_then(|s| match pick {
                        0 => Some(s.last),
                        1 => s.min,
                        _ => s.max,
                    })
                    .map_or_else(|| "-".into(), format_number)
            }));
            rows.push(row);
        }
    }
    write_out(&table(&header, &rows))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn export(
    experiment: &str,
    catalog: &CatalogArg,
    format: ExportFormat,
    output: Option<&Path>,
) -> Result<ExitCode> {
    let catalog = catalog.open()?;
    let experiment = catalog.experiment(experiment)?;
    let loaded = load(&catalog, &experiment, true)?;
    let trials: Vec<&TrialSummary> = loaded.trials.iter().collect();
    let format = match format {
        ExportFormat::Csv => Format::Csv,
        ExportFormat::Json => Format::Json,
        ExportFormat::Parquet => Format::Parquet,
    };
    let mut warnings = Vec::new();
    match output {
        Some(path) => {
            let tmp = path.with_extension("partial");
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("{}: cannot create", tmp.display()))?;
            let result =
                cohort_catalog::export::export(&experiment, &trials, format, file, &mut warnings);
            if let Err(e) = result {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            std::fs::rename(&tmp, path)
                .with_context(|| format!("{}: cannot write", path.display()))?;
        }
        None => {
            if matches!(format, Format::Parquet)
                && std::io::IsTerminal::is_terminal(&std::io::stdout())
            {
                bail!("Parquet is binary: give --output FILE or redirect stdout");
            }
            cohort_catalog::export::export(
                &experiment,
                &trials,
                format,
                std::io::stdout(),
                &mut warnings,
            )?;
        }
    }
    warn_all(&warnings);
    Ok(ExitCode::SUCCESS)
}

fn targets(
    catalog: &Catalog,
    target: &str,
    use_index: bool,
) -> Result<(Experiment, Vec<TrialSummary>)> {
    if let Ok((name, id)) = parse_trial_ref(target) {
        if let Ok(experiment) = catalog.experiment(&name) {
            let (experiment, trial) =
                one_trial(catalog, &format!("{}/{id}", experiment.record.name))?;
            return Ok((experiment, vec![trial]));
        }
    }
    let experiment = catalog.experiment(target)?;
    let loaded = load(catalog, &experiment, use_index)?;
    Ok((experiment, loaded.trials))
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
            let mut report = GcReport::default();
            let mut warnings = Vec::new();
            for trial in &trials {
                let dir = experiment.dir.join("trials").join(&trial.dir);
                cohort_catalog::ckpt::collect_trial(
                    &dir,
                    trial,
                    &policy,
                    *dry_run,
                    &mut report,
                    &mut warnings,
                )?;
            }
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
                text.push_str(&format!(
                    "{} trial(s): kept {} checkpoint(s), {} {} ({} bytes)\n",
                    report.trials,
                    report.kept,
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

#[derive(Debug, Args)]
pub(crate) struct PlotArgs {
    /// EXPERIMENT (its best trials by --metric) or EXPERIMENT/NUMBER.
    target: String,
    #[command(flatten)]
    catalog: CatalogArg,
    /// The metric to plot.
    #[arg(long, value_name = "METRIC")]
    metric: String,
    /// For an experiment: how many trials (the best by the metric's last value).
    #[arg(long, value_name = "N", default_value_t = 5)]
    top: usize,
    /// For an experiment: larger values are better.
    #[arg(long)]
    max: bool,
    /// Chart width in characters.
    #[arg(long, default_value_t = 72)]
    width: usize,
    /// Chart height in characters.
    #[arg(long, default_value_t = 16)]
    height: usize,
    /// Write the chart as a PNG image to FILE instead of drawing it in the terminal.
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
}

pub(crate) fn plot(args: &PlotArgs) -> Result<ExitCode> {
    if args.width < 8 || args.height < 3 {
        bail!("--width must be at least 8 and --height at least 3");
    }
    let catalog = args.catalog.open()?;
    let (experiment, trials) = targets(&catalog, &args.target, true)?;
    let field =
        cohort_catalog::query::Field::Metric(args.metric.clone(), cohort_catalog::query::Agg::Last);
    let chosen = cohort_catalog::query::select(&trials, &[], Some((&field, args.max)), None);
    let chosen: Vec<&TrialSummary> = chosen
        .into_iter()
        .filter(|t| t.metrics.contains_key(&args.metric))
        .take(args.top.max(1))
        .collect();
    if chosen.is_empty() {
        let mut known: Vec<&String> = trials.iter().flat_map(|t| t.metrics.keys()).collect();
        known.sort();
        known.dedup();
        bail!(
            "no trial of {} reported metric {:?} (metrics: {})",
            experiment.record.name,
            args.metric,
            cohort_catalog::query::list_or_none(&known)
        );
    }
    let dirs: Vec<PathBuf> = chosen
        .iter()
        .map(|t| experiment.dir.join("trials").join(&t.dir))
        .collect();
    let mut warnings = Vec::new();
    let points = cohort_catalog::read::histories(&dirs, &args.metric, &mut warnings)?;
    let series: Vec<(String, Vec<Point>)> = chosen
        .iter()
        .zip(points)
        .map(|(t, p)| (format!("{}/{}", experiment.record.name, t.id), p))
        .collect();
    warn_all(&warnings);
    let title = if series.len() == 1 {
        format!("{} of {}", args.metric, series[0].0)
    } else {
        format!(
            "{} of the {} best trials of {}",
            args.metric,
            series.len(),
            experiment.record.name
        )
    };
    if let Some(path) = &args.png {
        crate::png::write(path, &title, &args.metric, &series)?;
        write_out(&format!("chart written to {}\n", path.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
    write_out(&crate::plot::chart(
        &title,
        &series,
        args.width,
        args.height,
        color,
    ))?;
    Ok(ExitCode::SUCCESS)
}
