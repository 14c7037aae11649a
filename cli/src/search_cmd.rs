//! `cohort search preview|simulate` and `cohort bench search`: the searchers without a
//! cluster. Running searches on Slurm or locally is the controller's (`cohort search start`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use cohort_search::simulate::{simulate, SimOptions, SimResult};
use cohort_search::spec::SearcherKind;
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
    /// Run the file's searcher against the multi-fidelity Hartmann 6-D function in simulated
    /// time (the file needs six numeric hyperparameters).
    Simulate(SimArgs),
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
    /// How much low fidelities flatten the function.
    #[arg(long, default_value_t = 0.5)]
    bias: f64,
    /// Noise at the lowest fidelity.
    #[arg(long, default_value_t = 0.1)]
    noise: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn load(file: &Path) -> Result<ExperimentSpec> {
    Ok(ExperimentSpec::load(file)?)
}

fn run_many(spec: &ExperimentSpec, args: &SimArgs) -> Result<Vec<SimResult>> {
    if args.workers == 0 || args.repeat == 0 {
        bail!("--workers and --repeat must be at least 1");
    }
    if !(args.bias.is_finite() && args.noise.is_finite() && args.bias >= 0.0 && args.noise >= 0.0) {
        bail!("--bias and --noise must be non-negative numbers");
    }
    (0..args.repeat)
        .map(|i| {
            let mut spec = spec.clone();
            spec.searcher.seed = spec.searcher.seed.wrapping_add(i);
            simulate(
                &spec,
                &SimOptions {
                    workers: args.workers,
                    bias: args.bias,
                    noise: args.noise,
                    seed: 1 + i,
                },
            )
            .map_err(anyhow::Error::msg)
        })
        .collect()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0.0), |(s, n), v| (s + v, n + 1.0));
    if n > 0.0 {
        sum / n
    } else {
        f64::NAN
    }
}

pub(crate) fn search(command: &SearchCommand) -> Result<ExitCode> {
    match command {
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
            let spec = load(&args.file)?;
            let results = run_many(&spec, args)?;
            if args.json {
                write_out(&format!("{}\n", serde_json::to_string_pretty(&results)?))?;
                return Ok(ExitCode::SUCCESS);
            }
            let r = &results[0];
            let mut text = format!(
                "{}: simulated on Hartmann 6-D (bias {}, noise {}), {} worker(s), {} run(s)\n",
                spec.name,
                args.bias,
                args.noise,
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
                    r.regret + cohort_search::hartmann::GLOBAL_MIN
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
pub(crate) fn bench(args: &SimArgs, random_trials: u64) -> Result<ExitCode> {
    let spec = load(&args.file)?;
    if !matches!(spec.searcher.kind, SearcherKind::Asha(_)) {
        bail!("{}: bench search compares an asha searcher with random search; this file's searcher is not asha", args.file.display());
    }
    let mut random = spec.clone();
    random.searcher.kind = SearcherKind::Random;
    random.searcher.max_trials = random_trials;
    let random_runs = run_many(&random, args)?;
    let asha_runs = run_many(&spec, args)?;
    let random_budget = random_trials * spec.searcher.max_length;
    let third = random_budget / 3;
    let random_regret = mean(random_runs.iter().map(|r| r.regret));
    let asha_third = mean(asha_runs.iter().map(|r| r.regret_at(third)));
    let asha_final = mean(asha_runs.iter().map(|r| r.regret));
    #[allow(clippy::cast_precision_loss)]
    let asha_budget = mean(asha_runs.iter().map(|r| r.budget as f64));
    let mut text = format!(
        "{} runs, {} workers, Hartmann 6-D (bias {}, noise {}), max_length {}\n",
        args.repeat, args.workers, args.bias, args.noise, spec.searcher.max_length
    );
    text.push_str(&format!(
        "  random search: {random_trials} trials, budget {random_budget}, mean final regret {random_regret:.4}\n"
    ));
    text.push_str(&format!(
        "  asha:          {} trials, mean budget {asha_budget:.0}, mean regret {asha_third:.4} at budget {third} (1/3), {asha_final:.4} at its end\n",
        spec.searcher.max_trials
    ));
    text.push_str(&format!(
        "  asha at 1/3 of random's budget reaches {} regret than random with all of it (ratio {:.2})\n",
        if asha_third <= random_regret { "a smaller or equal" } else { "a LARGER" },
        asha_third / random_regret
    ));
    text.push_str("  mean regret by budget (budget: random, asha):\n");
    for step in 1..=10u64 {
        let budget = random_budget * step / 10;
        text.push_str(&format!(
            "    {:>9}: {:.4}  {:.4}\n",
            budget,
            mean(random_runs.iter().map(|r| r.regret_at(budget))),
            mean(asha_runs.iter().map(|r| r.regret_at(budget)))
        ));
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
}
