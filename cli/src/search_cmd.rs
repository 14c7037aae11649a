//! `cohort search start|resume|status|stop|preview|simulate` and `cohort bench search`.
//!
//! `start --local N` runs each trial through `cohort run` on this machine, N at a time, with
//! `COHORT_SEARCH_UNTIL` and the trial's hyperparameters in `COHORT_HPARAMS`; the controller
//! stays in the foreground (interrupting it leaves the trials running; `resume` adopts them).
//! The launchers and the comparison of `bench search` are `cohort_search`'s; this module
//! parses, calls and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use cohort_catalog::Catalog;
use cohort_proto::search::Event;
use cohort_search::compare::{CompareError, Comparison};
use cohort_search::controller::Controller;
use cohort_search::functions::Function;
use cohort_search::launch::local::LocalLauncher;
use cohort_search::launch::slurm::SlurmLauncher;
use cohort_search::launch::Launcher;
use cohort_search::simulate::{mean, simulate_repeated, SimOptions, SimResult};
use cohort_search::spec::{Sampler, SearcherKind};
use cohort_search::ExperimentSpec;

use crate::write_out;

#[derive(Debug, Subcommand)]
pub(crate) enum SearchCommand {
    /// Print what the experiment file would run (trials per bracket and rung, total budget)
    /// without running anything.
    Preview {
        /// The experiment file (TOML).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the file's searcher against a multi-fidelity benchmark function in simulated time
    /// (the file's [simulation] table chooses it, Hartmann 6-D by default; the file needs as
    /// many numeric hyperparameters as the function has coordinates).
    Simulate(SimArgs),
    /// Start a search: the controller runs its trials (on this machine with --local N).
    Start {
        /// The experiment file (TOML).
        file: PathBuf,
        /// Run the trials on this machine, at most N at once (through `cohort run`); without
        /// it each trial is a Slurm job.
        #[arg(long, value_name = "N")]
        local: Option<u64>,
        #[command(flatten)]
        catalog: crate::catalog::CatalogArg,
    },
    /// Continue a search whose controller stopped: nothing lost, nothing run twice; trials
    /// still running are adopted.
    Resume {
        /// The experiment.
        experiment: String,
        /// Run the trials on this machine, at most N at once.
        #[arg(long, value_name = "N")]
        local: Option<u64>,
        #[command(flatten)]
        catalog: crate::catalog::CatalogArg,
    },
    /// A search's trials (hyperparameters, length reached, latest and best metric, state)
    /// and the best so far; --follow shows a live progress line with an ETA.
    Status {
        /// The experiment.
        experiment: String,
        #[command(flatten)]
        catalog: crate::catalog::CatalogArg,
        /// Keep showing progress until the search ends.
        #[arg(long)]
        follow: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask a search to stop: its trials checkpoint and exit, the controller ends.
    Stop {
        /// The experiment.
        experiment: String,
        #[command(flatten)]
        catalog: crate::catalog::CatalogArg,
    },
}

#[derive(Debug, Clone, Args)]
pub(crate) struct SimArgs {
    /// The experiment file (TOML).
    file: PathBuf,
    /// Parallel workers.
    #[arg(long, default_value_t = 16)]
    workers: u64,
    /// Runs with different seeds (the results are averaged).
    #[arg(long, default_value_t = 1)]
    repeat: u64,
    /// The benchmark function, instead of the file's (hartmann6, hartmann3, branin).
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
    /// How much low fidelities shift the function, instead of the file's (default 0.5).
    #[arg(long)]
    bias: Option<f64>,
    /// Noise at the lowest fidelity, instead of the file's (default 0.1).
    #[arg(long)]
    noise: Option<f64>,
    /// The searcher's max_trials, instead of the file's.
    #[arg(long, value_name = "N")]
    max_trials: Option<u64>,
    /// The searcher's sampler, instead of the file's (random, tpe).
    #[arg(long, value_name = "NAME")]
    sampler: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn load(file: &Path) -> Result<ExperimentSpec> {
    Ok(ExperimentSpec::load(file)?)
}

/// The experiment file with the command line's changes to its searcher, and the simulation's
/// options (the file's `[simulation]` table, then the command line's), checked.
fn sim_setup(args: &SimArgs) -> Result<(ExperimentSpec, SimOptions)> {
    if args.workers == 0 || args.repeat == 0 {
        bail!("--workers and --repeat must be at least 1");
    }
    let mut spec = load(&args.file)?;
    let mut options = SimOptions::for_spec(&spec, args.workers);
    if let Some(name) = &args.function {
        options.function = Function::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Function::ALL.iter().map(|f| f.name()).collect();
            anyhow::anyhow!(
                "--function {name:?}: not a benchmark function ({})",
                known.join(", ")
            )
        })?;
    }
    for (flag, given, slot) in [
        ("--bias", args.bias, &mut options.bias),
        ("--noise", args.noise, &mut options.noise),
    ] {
        if let Some(v) = given {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{flag} must be a non-negative number, not {v}");
            }
            *slot = v;
        }
    }
    if let Some(n) = args.max_trials {
        if n == 0 {
            bail!("--max-trials must be at least 1");
        }
        spec.searcher.max_trials = n;
    }
    if let Some(name) = &args.sampler {
        spec.searcher.sampler = match name.as_str() {
            "random" => Sampler::Random,
            "tpe" => Sampler::Tpe,
            other => bail!("--sampler {other:?}: not a sampler (random, tpe)"),
        };
        if spec.searcher.sampler == Sampler::Tpe
            && !matches!(
                spec.searcher.kind,
                SearcherKind::Random | SearcherKind::Asha(_)
            )
        {
            bail!("--sampler tpe: only the random and asha searchers take a sampler");
        }
    }
    Ok((spec, options))
}

fn drive(
    mut controller: Controller,
    spec: &ExperimentSpec,
    local: Option<u64>,
    cwd: PathBuf,
) -> Result<ExitCode> {
    let (mut launcher, interval, how): (Box<dyn Launcher>, _, _) = if local.is_some() {
        let launcher = LocalLauncher::new(std::env::current_exe()?, spec, cwd);
        (
            Box::new(launcher),
            LocalLauncher::INTERVAL,
            "running its trials here",
        )
    } else {
        if !SlurmLauncher::available() {
            bail!("sbatch is not available here: run the search on a Slurm login node, or give --local N to run its trials on this machine");
        }
        let search_dir = controller.experiment().search_dir();
        let launcher = SlurmLauncher::new(spec.clone(), cwd, search_dir.path());
        (
            Box::new(launcher),
            SlurmLauncher::INTERVAL,
            "submitting its trials to Slurm",
        )
    };
    eprintln!(
        "cohort: search {} {how}; `cohort search status {}` shows it",
        spec.name, spec.name
    );
    controller.run(launcher.as_mut(), interval)?;
    eprintln!("cohort: search {} finished", spec.name);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn search(command: &SearchCommand) -> Result<ExitCode> {
    match command {
        SearchCommand::Start {
            file,
            local,
            catalog,
        } => {
            let mut spec = load(file)?;
            if let Some(n) = local {
                if *n == 0 {
                    bail!("--local must be at least 1");
                }
                spec.searcher.max_concurrent_trials = spec.searcher.max_concurrent_trials.min(*n);
            }
            let root = crate::catalog::catalog_root(catalog.path())?;
            let catalog = cohort_catalog::Catalog::open_or_create(std::path::absolute(&root)?)?;
            let mut controller = Controller::start(&catalog, &spec)?;
            crate::catalog::warn_all(&controller.take_warnings());
            let cwd = std::env::current_dir()?;
            controller.save_workdir(&cwd)?;
            drive(controller, &spec, *local, cwd)
        }
        SearchCommand::Resume {
            experiment,
            local,
            catalog,
        } => {
            let root = crate::catalog::catalog_root(catalog.path())?;
            let catalog = cohort_catalog::Catalog::open(std::path::absolute(&root)?)?;
            let mut controller = Controller::resume(&catalog, experiment)?;
            crate::catalog::warn_all(&controller.take_warnings());
            if let Some(n) = local {
                controller.limit_concurrency(*n);
            }
            let cwd = controller
                .workdir()
                .map_or_else(std::env::current_dir, Ok)?;
            let mut spec = ExperimentSpec::load(&controller.experiment().search_dir().spec())?;
            if let Some(n) = local {
                spec.searcher.max_concurrent_trials = spec.searcher.max_concurrent_trials.min(*n);
            }
            drive(controller, &spec, *local, cwd)
        }
        SearchCommand::Status {
            experiment,
            catalog,
            follow,
            json,
        } => {
            let root = crate::catalog::catalog_root(catalog.path())?;
            let catalog = cohort_catalog::Catalog::open(root)?;
            status(&catalog, experiment, *follow, *json)
        }
        SearchCommand::Stop {
            experiment,
            catalog,
        } => {
            let root = crate::catalog::catalog_root(catalog.path())?;
            let catalog = cohort_catalog::Catalog::open(root)?;
            let path = cohort_search::controller::request_stop(&catalog, experiment)?;
            write_out(&format!(
                "asked the search of {experiment} to stop ({}); its trials checkpoint and exit, then its controller ends\n",
                path.display()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        SearchCommand::Preview { file, json } => {
            let spec = load(file)?;
            let preview = cohort_search::preview::preview(&spec).map_err(anyhow::Error::msg)?;
            if *json {
                write_out(&format!("{}\n", serde_json::to_string_pretty(&preview)?))?;
            } else {
                write_out(&preview.render(&spec))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SearchCommand::Simulate(args) => {
            let (spec, options) = sim_setup(args)?;
            let results =
                simulate_repeated(&spec, &options, args.repeat).map_err(anyhow::Error::msg)?;
            if args.json {
                write_out(&format!("{}\n", serde_json::to_string_pretty(&results)?))?;
                return Ok(ExitCode::SUCCESS);
            }
            let r = &results[0];
            let mut text = format!(
                "{}: simulated on {} (bias {}, noise {}), {} worker(s), {} run(s)\n",
                spec.name,
                options.function.title(),
                options.bias,
                options.noise,
                args.workers,
                results.len()
            );
            #[allow(clippy::cast_precision_loss)]
            let avg = |f: &dyn Fn(&SimResult) -> f64| mean(results.iter().map(f));
            #[allow(clippy::cast_precision_loss)]
            {
                text.push_str(&format!(
                    "  trials {:.0}, reached full length {:.1}, budget {:.0}, simulated time {:.0}\n",
                    avg(&|r| r.trials as f64),
                    avg(&|r| r.completed as f64),
                    avg(&|r| r.budget as f64),
                    avg(&|r| r.time as f64)
                ));
            }
            text.push_str(&format!("  final regret: mean {:.4}", avg(&|r| r.regret)));
            if results.len() == 1 {
                text.push_str(&format!(
                    " (best value {:.4})\n",
                    r.regret + options.function.global_min()
                ));
                text.push_str("  regret as the budget was spent:\n");
                for p in &r.curve {
                    text.push_str(&format!(
                        "    budget {:>8}  time {:>7}  regret {:.4}\n",
                        p.budget, p.time, p.regret
                    ));
                }
            } else {
                text.push('\n');
            }
            write_out(&text)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `cohort bench search FILE`: the file's ASHA against random search with the same trial
/// length and workers, averaged over seeds: random's regret with its whole budget, ASHA's
/// with a third of that budget and with all of it.
pub(crate) fn bench(args: &SimArgs, random_trials: u64, png: Option<&Path>) -> Result<ExitCode> {
    let (spec, options) = sim_setup(args)?;
    let c = match Comparison::run(&spec, &options, args.repeat, random_trials) {
        Ok(c) => c,
        Err(CompareError::NotAsha) => bail!("{}: bench search compares an asha searcher with random search; this file's searcher is not asha", args.file.display()),
        Err(CompareError::Simulation(e)) => bail!(e),
    };
    let (random_budget, third) = (c.random_budget, c.third());
    let random_regret = c.random_regret();
    let asha_third = c.asha_regret_at_third();
    let mut text = format!(
        "{} runs, {} workers, {} (bias {}, noise {}), max_length {}\n",
        args.repeat,
        args.workers,
        options.function.title(),
        options.bias,
        options.noise,
        spec.searcher.max_length
    );
    text.push_str(&format!(
        "  random search: {random_trials} trials, budget {random_budget}, mean final regret {random_regret:.4}\n"
    ));
    text.push_str(&format!(
        "  asha:          {} trials, mean budget {:.0}, mean regret {asha_third:.4} at budget {third} (1/3), {:.4} at its end\n",
        c.asha_trials,
        c.asha_budget(),
        c.asha_regret()
    ));
    text.push_str(&format!(
        "  asha at 1/3 of random's budget reaches {} regret than random with all of it (ratio {:.2})\n",
        if c.asha_wins() { "a smaller or equal" } else { "a LARGER" },
        asha_third / random_regret
    ));
    text.push_str("  mean regret by budget (budget: random, asha):\n");
    for (budget, random, asha) in c.curve(10) {
        text.push_str(&format!("    {budget:>9}: {random:.4}  {asha:.4}\n"));
    }
    if let Some(path) = png {
        let curve = c.curve(100);
        let points = |pick: fn(&(u64, f64, f64)) -> f64| -> Vec<cohort_catalog::read::Point> {
            curve
                .iter()
                .map(|p| cohort_catalog::read::Point {
                    step: i64::try_from(p.0).unwrap_or(i64::MAX),
                    value: pick(p),
                    wall: 0.0,
                })
                .collect()
        };
        let series = vec![
            (
                format!("random search, {random_trials} trials"),
                points(|p| p.1),
            ),
            (format!("ASHA, {} trials", c.asha_trials), points(|p| p.2)),
        ];
        let title = format!(
            "Mean regret on {} by budget ({} runs, {} workers)",
            options.function.title(),
            args.repeat,
            args.workers
        );
        crate::png::write(path, &title, "regret", &series)?;
        text.push_str(&format!("  chart written to {}\n", path.display()));
    }
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `cohort bench search`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchSearchArgs {
    #[command(flatten)]
    pub(crate) sim: SimArgs,
    /// Trials of the random search it is compared with.
    #[arg(long, default_value_t = 64)]
    pub(crate) random_trials: u64,
    /// Also draw the mean regret curves of both to this PNG file.
    #[arg(long, value_name = "FILE")]
    pub(crate) png: Option<PathBuf>,
}

/// Arguments of `cohort bench sampler`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchSamplerArgs {
    /// Results the model is fitted on.
    #[arg(long, default_value_t = 1000)]
    pub(crate) results: usize,
    /// Hyperparameters (doubles).
    #[arg(long, default_value_t = 6)]
    pub(crate) dims: usize,
    /// Decisions timed.
    #[arg(long, default_value_t = 200)]
    pub(crate) decisions: usize,
}

/// `cohort bench sampler`: what one decision of the TPE sampler costs, beside a random sample.
pub(crate) fn bench_sampler(args: &BenchSamplerArgs) -> Result<ExitCode> {
    if args.results < cohort_search::tpe::MIN_RESULTS || args.dims == 0 {
        bail!(
            "--results must be at least {} and --dims at least 1",
            cohort_search::tpe::MIN_RESULTS
        );
    }
    let (model, draw, random) =
        cohort_search::tpe::time_decisions(args.results, args.dims, args.decisions);
    write_out(&format!(
        "TPE sampler, {} results, {} hyperparameters: {:.1} us per decision fitted anew, {:.1} us drawn from one fit (as a round's decisions are) (random sample: {:.2} us; {:.0}x and {:.0}x), mean of {} decisions\n",
        args.results,
        args.dims,
        model.as_secs_f64() * 1e6,
        draw.as_secs_f64() * 1e6,
        random.as_secs_f64() * 1e6,
        model.as_secs_f64() / random.as_secs_f64().max(1e-12),
        draw.as_secs_f64() / random.as_secs_f64().max(1e-12),
        args.decisions
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Counts of a search's trials, its budget spent and the best trial at full length.
struct Progress {
    created: usize,
    running: usize,
    completed: usize,
    stopped: usize,
    preempted: usize,
    failed: usize,
    trained: u64,
    total: u64,
    finished: Option<String>,
    best: Option<(u64, f64)>,
}

type SearchView = (
    ExperimentSpec,
    Vec<cohort_proto::catalog::TrialSummary>,
    Vec<Event>,
    Progress,
);

fn progress(catalog: &cohort_catalog::Catalog, name: &str) -> Result<SearchView> {
    use cohort_proto::catalog::TrialState;
    let experiment = catalog.experiment(name)?;
    let dir = experiment.search_dir();
    let spec = ExperimentSpec::load(&dir.spec())
        .map_err(|e| anyhow::anyhow!("experiment {name} has no search ({e})"))?;
    let events = cohort_search::controller::read_events(&dir)?;
    let loaded =
        cohort_catalog::load(catalog, &experiment, cohort_catalog::LoadOptions::default())?;
    let metric = &spec.searcher.metric;
    let sign = if spec.searcher.smaller_is_better {
        1.0
    } else {
        -1.0
    };
    let state = cohort_catalog::read::shown_state;
    let count = |s: TrialState| loaded.trials.iter().filter(|t| state(t) == Some(s)).count();
    let best = loaded
        .trials
        .iter()
        .filter_map(|t| t.metrics.get(metric).map(|m| (t.id, m.last, m.last_step)))
        .filter(|(_, v, step)| {
            v.is_finite() && u64::try_from(*step).unwrap_or(0) >= spec.searcher.max_length
        })
        .min_by(|a, b| (a.1 * sign).total_cmp(&(b.1 * sign)))
        .map(|(id, v, _)| (id, v));
    let total = cohort_search::preview::preview(&spec).map_or(0, |p| p.budget);
    let p = Progress {
        created: loaded.trials.len(),
        running: count(TrialState::Running),
        completed: count(TrialState::Completed),
        stopped: count(TrialState::Killed),
        preempted: count(TrialState::Preempted),
        failed: count(TrialState::Failed),
        trained: loaded
            .trials
            .iter()
            .filter_map(|t| t.metrics.get(metric))
            .map(|m| u64::try_from(m.last_step).unwrap_or(0))
            .sum(),
        total,
        finished: events.iter().rev().find_map(|e| match e {
            Event::Finished { reason } => Some(reason.clone()),
            _ => None,
        }),
        best,
    };
    Ok((spec, loaded.trials, events, p))
}

fn follow(catalog: &cohort_catalog::Catalog, name: &str) -> Result<ExitCode> {
    let start = std::time::Instant::now();
    let first = progress(catalog, name)?.3.trained;
    loop {
        let (spec, _, _, p) = progress(catalog, name)?;
        #[allow(clippy::cast_precision_loss)]
        let share = if p.total > 0 {
            (p.trained as f64 / p.total as f64).min(1.0)
        } else {
            0.0
        };
        const WIDTH: usize = 30;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let filled = ((share * WIDTH as f64).round() as usize).min(WIDTH);
        #[allow(clippy::cast_precision_loss)]
        let rate = p.trained.saturating_sub(first) as f64 / start.elapsed().as_secs_f64().max(1e-3);
        #[allow(clippy::cast_precision_loss)]
        let eta = if rate > 0.0 && p.total > p.trained {
            format!("ETA {:.0}s", (p.total - p.trained) as f64 / rate)
        } else {
            "ETA -".to_owned()
        };
        let best = p.best.map_or_else(
            || "-".to_owned(),
            |(id, v)| format!("{} (trial {id})", cohort_catalog::format_number(v)),
        );
        eprint!(
            "\r[{}{}] {:>3.0}%  {}/{} trials: {} running, {} completed, {} stopped, {} preempted, {} failed; best {} {}; {}   ",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            share * 100.0,
            p.created,
            spec.searcher.max_trials,
            p.running,
            p.completed,
            p.stopped,
            p.preempted,
            p.failed,
            spec.searcher.metric,
            best,
            eta
        );
        if let Some(reason) = p.finished {
            eprintln!("\nsearch {reason}");
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn status(
    catalog: &cohort_catalog::Catalog,
    name: &str,
    live: bool,
    json: bool,
) -> Result<ExitCode> {
    if live {
        return follow(catalog, name);
    }
    let (spec, trials, events, p) = progress(catalog, name)?;
    let mut reached: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    for event in &events {
        if let Event::Launched { trial, until, .. } = event {
            reached.insert(*trial, *until);
        }
    }
    // Rung lengths of the most aggressive bracket; other brackets' are a suffix of them.
    let rungs: Vec<u64> = cohort_search::preview::preview(&spec)
        .ok()
        .and_then(|p| {
            p.brackets
                .first()
                .map(|b| b.rungs.iter().map(|r| r.length).collect())
        })
        .unwrap_or_default();
    // The model's latest fit, from the log of assignments.
    let fit = events.iter().rev().find_map(|e| match e {
        Event::Assign {
            model: Some(model), ..
        } => Some(*model),
        _ => None,
    });
    let sampler_line = match spec.searcher.sampler {
        cohort_search::spec::Sampler::Random => None,
        cohort_search::spec::Sampler::Tpe => Some(match fit {
            Some(f) => format!(
                "sampler tpe: the latest model-chosen trial was fitted on {} trials' results (longest length {})\n",
                f.results, f.length
            ),
            None => format!(
                "sampler tpe: random until {} trials have reported\n",
                cohort_search::tpe::min_results(&spec.hparams)
            ),
        }),
    };
    let metric = &spec.searcher.metric;
    let best_of = |m: &cohort_proto::catalog::MetricSummary| {
        if spec.searcher.smaller_is_better {
            m.min
        } else {
            m.max
        }
    };
    if json {
        let list: Vec<serde_json::Value> = trials
            .iter()
            .map(|t| {
                let m = t.metrics.get(metric);
                serde_json::json!({
                    "trial": t.id,
                    "state": cohort_catalog::read::shown_state(t).map(|s| s.as_str()),
                    "hparams": t.hparams,
                    "length": reached.get(&t.id),
                    "rung": reached.get(&t.id).and_then(|l| rungs.iter().position(|r| r == l)),
                    "latest": m.map(|m| m.last),
                    "best": m.and_then(best_of),
                    "restarts": t.state.as_ref().map_or(0, |s| s.restarts.len()),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "experiment": name,
            "sampler": spec.searcher.sampler.name(),
            "model": fit,
            "finished": p.finished,
            "best": p.best.map(|(id, v)| serde_json::json!({"trial": id, "value": v})),
            "trials": list,
        });
        write_out(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut hnames: Vec<&String> = trials.iter().flat_map(|t| t.hparams.keys()).collect();
    hnames.sort();
    hnames.dedup();
    let mut text = format!(
        "search {name}: {} of {} trials created; {} running, {} completed, {} stopped by the searcher, {} preempted, {} failed; {}\n",
        p.created,
        spec.searcher.max_trials,
        p.running,
        p.completed,
        p.stopped,
        p.preempted,
        p.failed,
        p.finished
            .as_ref()
            .map_or_else(|| "in progress".to_owned(), |r| format!("finished ({r})"))
    );
    if let Some(line) = sampler_line {
        text.push_str(&line);
    }
    text.push_str(&format!(
        "{:<6} {:<10} {:>4} {:>7} {:>12} {:>12} {:>8}",
        "TRIAL", "STATE", "RUNG", "LENGTH", "LATEST", "BEST", "RESTARTS"
    ));
    for h in &hnames {
        text.push_str(&format!("  {h}"));
    }
    text.push('\n');
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), cohort_catalog::format_number);
    for t in &trials {
        let m = t.metrics.get(metric);
        text.push_str(&format!(
            "{:<6} {:<10} {:>4} {:>7} {:>12} {:>12} {:>8}",
            t.id,
            cohort_catalog::read::shown_state(t).map_or("-", |s| s.as_str()),
            reached
                .get(&t.id)
                .and_then(|l| rungs.iter().position(|r| r == l))
                .map_or_else(|| "-".to_owned(), |r| r.to_string()),
            reached
                .get(&t.id)
                .map_or_else(|| "-".to_owned(), u64::to_string),
            fmt(m.map(|m| m.last)),
            fmt(m.and_then(best_of)),
            t.state.as_ref().map_or(0, |s| s.restarts.len())
        ));
        for h in &hnames {
            let v = t.hparams.get(*h).map_or_else(
                || "-".to_owned(),
                |v| {
                    v.as_f64()
                        .map_or_else(|| v.to_string(), cohort_catalog::format_number)
                },
            );
            text.push_str(&format!("  {v}"));
        }
        text.push('\n');
    }
    if let Some((id, v)) = p.best {
        text.push_str(&format!(
            "best at full length: trial {id}, {metric} {}\n",
            cohort_catalog::format_number(v)
        ));
    }
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `cohort bench controller`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchControllerArgs {
    /// Trials in all.
    #[arg(long, default_value_t = 3000)]
    pub(crate) trials: u64,
    /// Trials running at once.
    #[arg(long, default_value_t = 1000)]
    pub(crate) concurrent: u64,
    /// Mean seconds a simulated trial runs (each between half and one and a half of it).
    #[arg(long, default_value_t = 20.0)]
    pub(crate) trial_seconds: f64,
    /// The controller's polling interval, milliseconds (a Slurm search polls every 1,000).
    #[arg(long, default_value_t = 1000)]
    pub(crate) interval_ms: u64,
    /// Directory for the temporary catalog (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

/// The experiment `cohort bench controller` searches: ASHA with the TPE sampler, six
/// hyperparameters; trials and concurrency from the arguments.
const BENCH_CONTROLLER_SPEC: &str = r#"
name = "bench-controller"
command = ["true"]
[searcher]
name = "asha"
metric = "loss"
smaller_is_better = true
max_trials = TRIALS
max_concurrent_trials = CONCURRENT
max_length = 256
divisor = 4
max_rungs = 4
mode = "aggressive"
seed = 1
sampler = "tpe"
[hyperparameters]
x1 = { type = "double", minval = 0.0, maxval = 1.0 }
x2 = { type = "double", minval = 0.0, maxval = 1.0 }
x3 = { type = "double", minval = 0.0, maxval = 1.0 }
x4 = { type = "double", minval = 0.0, maxval = 1.0 }
x5 = { type = "double", minval = 0.0, maxval = 1.0 }
x6 = { type = "double", minval = 0.0, maxval = 1.0 }
"#;

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).map_or(
        Duration::ZERO,
        |usage| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::from_secs(u64::try_from(tv.tv_sec()).unwrap_or(0))
                    + Duration::from_micros(u64::try_from(tv.tv_usec()).unwrap_or(0))
            };
            t(usage.user_time()) + t(usage.system_time())
        },
    )
}

/// `cohort bench controller`: the search controller driving many concurrent trials through a
/// simulated launcher (no processes; each trial writes its metric into the catalog when its
/// time is up): the controller thread's CPU use, and how soon a result leads to the next
/// launch.
pub(crate) fn bench_controller(args: &BenchControllerArgs) -> Result<ExitCode> {
    use cohort_search::launch::simulated::SimulatedLauncher;
    if args.concurrent == 0 || args.trials < args.concurrent {
        bail!("--concurrent must be at least 1 and --trials at least --concurrent");
    }
    if !(args.trial_seconds.is_finite() && args.trial_seconds > 0.0) {
        bail!("--trial-seconds must be positive");
    }
    let text = BENCH_CONTROLLER_SPEC
        .replace("TRIALS", &args.trials.to_string())
        .replace("CONCURRENT", &args.concurrent.to_string());
    let dir = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .context("a directory for the catalog")?;
    let file = dir.path().join("bench-controller.toml");
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    let spec = ExperimentSpec::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let catalog = Catalog::open_or_create(dir.path().join("catalog"))?;
    let mut controller = Controller::start(&catalog, &spec)?;
    let mut launcher = SimulatedLauncher::new(
        catalog.clone(),
        spec.name.clone(),
        spec.searcher.metric.clone(),
        Duration::from_secs_f64(args.trial_seconds),
        1,
    );
    let interval = Duration::from_millis(args.interval_ms);
    let started = Instant::now();
    let cpu_start = thread_cpu();
    // (when the round began, how long it took, launches in it).
    let mut rounds: Vec<(Instant, Duration, usize)> = Vec::new();
    let mut max_running = 0usize;
    loop {
        let begun = Instant::now();
        let before = launcher.started.len();
        let more = controller.step(&mut launcher)?;
        let took = begun.elapsed();
        rounds.push((begun, took, launcher.started.len() - before));
        let ended = launcher.ended().len();
        max_running = max_running.max(launcher.started.len() - ended);
        if !more {
            break;
        }
        if took < interval {
            std::thread::sleep(interval - took);
        }
    }
    let wall = started.elapsed();
    let cpu = thread_cpu() - cpu_start;
    let ended = launcher.ended();
    // Seen: from a result written to the start of the round that saw it.
    let mut seen: Vec<Duration> = ended
        .values()
        .filter_map(|&at| {
            rounds
                .iter()
                .find(|(begun, _, _)| *begun >= at)
                .map(|(begun, _, _)| *begun - at)
        })
        .collect();
    // Decided: a round that launched after the first one, whole (every decision it made
    // happened within it).
    let mut decided: Vec<Duration> = rounds
        .iter()
        .skip(1)
        .filter(|(_, _, launched)| *launched > 0)
        .map(|(_, took, _)| *took)
        .collect();
    // Each decision: from the start of the round that saw the results to its launch.
    let first_round_end = rounds.first().map(|(begun, took, _)| *begun + *took);
    let mut each: Vec<Duration> = launcher
        .started
        .values()
        .filter(|(_, at)| first_round_end.is_some_and(|end| *at > end))
        .filter_map(|(_, at)| {
            rounds
                .iter()
                .rev()
                .find(|(begun, _, _)| begun <= at)
                .map(|(begun, _, _)| *at - *begun)
        })
        .collect();
    seen.sort();
    decided.sort();
    each.sort();
    let pct = |v: &[Duration], p: f64| -> f64 {
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        v.get(((v.len().saturating_sub(1)) as f64 * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    write_out(&format!(
        "{} launches of {} trials, up to {max_running} at once, over {:.1} s; polling every {} ms\n\
         controller thread: {:.2} s of CPU = {:.2}% of one core (target < 5%)\n\
         a result seen by the controller after: median {:.0} ms, p99 {:.0} ms (at most one poll interval)\n\
         a decision launched after the round saw the results: median {:.1} ms, p99 {:.1} ms, max {:.1} ms (target < 100 ms)\n\
         a whole round that decided and launched: median {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
        launcher.started.len(),
        args.trials,
        wall.as_secs_f64(),
        args.interval_ms,
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        pct(&seen, 0.5),
        pct(&seen, 0.99),
        pct(&each, 0.5),
        pct(&each, 0.99),
        pct(&each, 1.0),
        pct(&decided, 0.5),
        pct(&decided, 0.99),
        pct(&decided, 1.0),
    ))?;
    Ok(ExitCode::SUCCESS)
}
