//! `cohort bench catalog generate|ingest|query`: synthetic experiments, ingest throughput
//! against a plain write of the same bytes, and query latency against a plain read of the
//! same files, each reference measured side by side in the same run.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use cohort_catalog::index::{IndexWrite, LoadOptions};
use cohort_catalog::query::{Agg, Field};
use cohort_catalog::synth::{generate, SynthSpec};
use cohort_catalog::{Catalog, Tracker, TrackerOptions};
use cohort_proto::catalog::TrialState;

use crate::write_out;

#[derive(Debug, Subcommand)]
pub(crate) enum CatalogBench {
    /// Write a synthetic experiment (val_loss, m1, m2, ... per step; hyperparameters lr and
    /// layers).
    Generate {
        /// The catalog directory (created if absent).
        #[arg(long, value_name = "DIR")]
        catalog: PathBuf,
        /// Experiment name.
        #[arg(long, default_value = "synth")]
        experiment: String,
        /// Trials.
        #[arg(long, default_value_t = 100)]
        trials: u64,
        /// Metrics per trial.
        #[arg(long, default_value_t = 10)]
        metrics: usize,
        /// Steps per trial.
        #[arg(long, default_value_t = 1000)]
        steps: i64,
    },
    /// Points per second from one tracker to local disk, against writing the same bytes.
    Ingest(IngestArgs),
    /// Query latency (experiment list, best trial with and without the index, one history)
    /// against reading the same files.
    Query(QueryArgs),
}

#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// Points to log.
    #[arg(long, default_value_t = 10_000_000)]
    points: u64,
    /// Metrics per step.
    #[arg(long, default_value_t = 10)]
    metrics: usize,
    /// Directory for the temporary catalog (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: u32,
}

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// The catalog directory.
    #[arg(long, value_name = "DIR")]
    catalog: PathBuf,
    /// Experiment to query.
    #[arg(long, default_value = "synth")]
    experiment: String,
    /// Metric for the best-trial query and the history.
    #[arg(long, default_value = "val_loss")]
    metric: String,
    /// Timed runs of each query (after one warm-up; the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// Trial whose history is read (default: the best).
    #[arg(long, value_name = "NUMBER")]
    history_trial: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time_runs(runs: u32, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    f()?;
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    Ok(median(times))
}

/// Peak resident memory of this process so far, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn dir_bytes(dir: &Path) -> u64 {
    cohort_catalog::ckpt::size_of(dir).unwrap_or(0)
}

pub(crate) fn run(command: &CatalogBench) -> Result<ExitCode> {
    match command {
        CatalogBench::Generate {
            catalog,
            experiment,
            trials,
            metrics,
            steps,
        } => {
            if *metrics == 0 || *steps <= 0 {
                bail!("--metrics and --steps must be at least 1");
            }
            let start = Instant::now();
            let cat = Catalog::open_or_create(catalog)?;
            let points = generate(
                &cat,
                &SynthSpec {
                    experiment: experiment.clone(),
                    trials: *trials,
                    metrics: *metrics,
                    steps: *steps,
                },
            )?;
            let secs = start.elapsed().as_secs_f64();
            write_out(&format!(
                "generated {experiment}: {trials} trials, {points} points in {secs:.1} s ({:.2} M points/s, {} MB on disk)\n",
                points as f64 / secs / 1e6,
                dir_bytes(&cat.experiment_dir(experiment)) / 1_000_000
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        CatalogBench::Ingest(args) => ingest(args),
        CatalogBench::Query(args) => query(args),
    }
}

fn ingest(args: &IngestArgs) -> Result<ExitCode> {
    if args.metrics == 0 || args.points < args.metrics as u64 {
        bail!("--metrics must be at least 1 and --points at least --metrics");
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let names: Vec<String> = (0..args.metrics).map(|i| format!("metric_{i}")).collect();
    let steps = i64::try_from(args.points / args.metrics as u64).unwrap_or(i64::MAX);
    let points = steps.unsigned_abs() * args.metrics as u64;
    let rss_before = peak_rss_kib();
    let mut ours = Vec::new();
    let mut reference = Vec::new();
    let mut bytes = 0;
    for _ in 0..args.runs.max(1) {
        let dir = tempfile::Builder::new()
            .prefix("cohort-bench-ingest-")
            .tempdir_in(&base)
            .with_context(|| format!("{}: cannot create a temporary directory", base.display()))?;
        let catalog = Catalog::open_or_create(dir.path().join("catalog"))?;
        let start = Instant::now();
        let tracker = Tracker::open(&catalog, "ingest", None, TrackerOptions::default())?;
        let mut row: Vec<(&str, f64)> = names.iter().map(|n| (n.as_str(), 0.0)).collect();
        for step in 0..steps {
            for (i, slot) in row.iter_mut().enumerate() {
                slot.1 = step as f64 * 0.001 + i as f64;
            }
            tracker.log_metrics(step, &row)?;
        }
        tracker.finish(TrialState::Completed)?;
        ours.push(start.elapsed());
        bytes = dir_bytes(&catalog.experiment_dir("ingest"));

        // Reference: the same number of bytes written in 1 MiB chunks and fsynced once.
        let path = dir.path().join("reference.bin");
        let start = Instant::now();
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0x5au8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.sync_all()?;
        reference.push(start.elapsed());
    }
    let rss_after = peak_rss_kib();
    let (ours, reference) = (median(ours), median(reference));
    let rate = points as f64 / ours.as_secs_f64();
    let mut text = format!(
        "ingest: {points} points ({steps} steps x {} metrics), {bytes} bytes, median of {} runs\n",
        args.metrics, args.runs
    );
    text.push_str(&format!(
        "  tracker           {:>9.1} ms  {:>7.2} M points/s  {:>6.1} bytes/point\n",
        ours.as_secs_f64() * 1e3,
        rate / 1e6,
        bytes as f64 / points as f64
    ));
    text.push_str(&format!(
        "  plain write+fsync {:>9.1} ms  (same bytes)\n  ratio tracker/plain write: {:.2}\n",
        reference.as_secs_f64() * 1e3,
        ours.as_secs_f64() / reference.as_secs_f64()
    ));
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        text.push_str(&format!(
            "  peak resident memory grew by {} KiB while logging {} MB\n",
            after.saturating_sub(before),
            bytes / 1_000_000
        ));
    }
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Reads every file under `dir` (the reference for a query that must read all logs).
fn read_all(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 20];
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            total += read_all(&path)?;
        } else {
            let mut file = std::fs::File::open(&path)?;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
    }
    Ok(total)
}

fn query(args: &QueryArgs) -> Result<ExitCode> {
    let catalog = Catalog::open(&args.catalog)?;
    let experiment = catalog.experiment(&args.experiment)?;
    let field = Field::Metric(args.metric.clone(), Agg::Last);
    // Make the index current first.
    let indexed = cohort_catalog::load(
        &catalog,
        &experiment,
        LoadOptions {
            use_index: false,
            write: IndexWrite::Always,
        },
    )?;
    let trials = indexed.trials.len();
    let points: u64 = indexed
        .trials
        .iter()
        .flat_map(|t| t.metrics.values())
        .map(|m| m.count)
        .sum();
    let best_with = |use_index: bool| -> Result<u64> {
        let loaded = cohort_catalog::load(
            &catalog,
            &experiment,
            LoadOptions {
                use_index,
                write: IndexWrite::Never,
            },
        )?;
        let best =
            cohort_catalog::query::select(&loaded.trials, &[], Some((&field, false)), Some(1));
        best.first()
            .map(|t| t.id)
            .with_context(|| format!("no trial reported {}", args.metric))
    };
    let best = best_with(true)?;
    if best_with(false)? != best {
        bail!("the index and the logs disagree on the best trial");
    }
    let t_list = time_runs(args.runs, || {
        let (list, _) = catalog.experiments()?;
        for e in &list {
            let _ = e.trial_count();
        }
        Ok(())
    })?;
    let t_indexed = time_runs(args.runs, || best_with(true).map(drop))?;
    let t_scan = time_runs(args.runs, || best_with(false).map(drop))?;
    let t_read = time_runs(args.runs, || {
        read_all(&experiment.trials_dir())?;
        Ok(())
    })?;
    let trial = catalog.trial(&experiment, args.history_trial.unwrap_or(best))?;
    let dirs: Vec<PathBuf> = indexed
        .trials
        .iter()
        .map(|t| experiment.summary_dir(t))
        .collect();
    let t_history_all = time_runs(args.runs, || {
        cohort_catalog::read::histories(&dirs, &args.metric, &mut Vec::new())?;
        Ok(())
    })?;
    let t_history = time_runs(args.runs, || {
        let mut warnings = Vec::new();
        cohort_catalog::read::history(
            &trial.dir,
            Some(std::slice::from_ref(&args.metric)),
            &mut warnings,
        )?;
        Ok(())
    })?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if args.json {
        let mut text = serde_json::to_string_pretty(&serde_json::json!({
            "trials": trials,
            "points": points,
            "best_trial": best,
            "exp_list_ms": ms(t_list),
            "best_indexed_ms": ms(t_indexed),
            "best_no_index_ms": ms(t_scan),
            "read_all_files_ms": ms(t_read),
            "history_trial": trial.id,
            "history_ms": ms(t_history),
            "history_all_trials_ms": ms(t_history_all),
        }))?;
        text.push('\n');
        write_out(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    write_out(&format!(
        "query {}: {trials} trials, {points} points; best trial by {} is {best}; median of {} runs\n\
         \x20 experiment list                 {:>9.2} ms\n\
         \x20 best trial, current index       {:>9.2} ms\n\
         \x20 best trial, no index            {:>9.2} ms\n\
         \x20 reference: read every log file  {:>9.2} ms  (ratio no-index/read: {:.2})\n\
         \x20 history of {} of trial {:<5} {:>9.2} ms\n\
         \x20 history of {} of every trial   {:>9.2} ms\n",
        args.experiment,
        args.metric,
        args.runs,
        ms(t_list),
        ms(t_indexed),
        ms(t_scan),
        ms(t_read),
        t_scan.as_secs_f64() / t_read.as_secs_f64(),
        args.metric,
        trial.id,
        ms(t_history),
        args.metric,
        ms(t_history_all),
    ))?;
    Ok(ExitCode::SUCCESS)
}
