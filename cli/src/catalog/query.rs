//! The queries: `exp list|show`, `trials`, `trial show`, `metrics`, `compare`, `export` and
//! `plot`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use cohort_catalog::export::Format;
use cohort_catalog::query::Field;
use cohort_catalog::read::{history, Point};
use cohort_catalog::{format_number, Experiment};
use cohort_proto::catalog::TrialSummary;

use super::format::{hparam_text, json_out, state_text, table, time_text};
use super::{load, one_trial, parse_trial_ref, targets, warn_all, CatalogArg};
use crate::write_out;
use cohort_catalog::json::{
    experiment_detail_json, experiment_json, metric_names, states_of, trial_detail_json, trial_json,
};

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

pub(crate) fn exp(command: &ExpCommand) -> Result<ExitCode> {
    match command {
        ExpCommand::List { catalog, json } => {
            let catalog = catalog.open()?;
            let (experiments, warnings) = catalog.experiments()?;
            warn_all(&warnings);
            let counts: Vec<usize> = experiments.iter().map(Experiment::trial_count).collect();
            if *json {
                let list: Vec<serde_json::Value> = experiments
                    .iter()
                    .zip(&counts)
                    .map(|(e, n)| experiment_json(e, *n))
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
            let by_state = states_of(&loaded.trials);
            let metrics = metric_names(&loaded.trials);
            if *json {
                json_out(&experiment_detail_json(&experiment, &loaded))?;
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
    let chosen = cohort_catalog::query::query(
        &loaded.trials,
        &args.filters,
        args.sort.as_deref().map(|text| (text, args.desc)),
        args.limit,
    )?;
    let sort = match &args.sort {
        Some(text) => Some(Field::parse(text, &loaded.trials)?),
        None => None,
    };
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
        json_out(&trial_detail_json(&experiment, &trial))?;
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
                "  slurm        job {job}{}{}\n",
                s.slurm_step
                    .as_ref()
                    .map(|st| format!(" step {st}"))
                    .unwrap_or_default(),
                s.slurm_array
                    .as_ref()
                    .map(|a| format!(" (array element {a})"))
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
        if s.requeues > 0 {
            text.push_str(&format!(
                "  requeued     {} time{} by --cohort-requeue\n",
                s.requeues,
                if s.requeues == 1 { "" } else { "s" }
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
        experiment.summary_dir(&trial).display()
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
    let dirs: Vec<PathBuf> = chosen.iter().map(|t| experiment.summary_dir(t)).collect();
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
