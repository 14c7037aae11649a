//! `cohort search start|resume|status|stop|preview|simulate` and `cohort bench search`.
//!
//! `start --local N` runs each trial through `cohort run` on this machine, N at a time, with
//! `COHORT_SEARCH_UNTIL` and the trial's hyperparameters in `COHORT_HPARAMS`; the controller
//! stays in the foreground (interrupting it leaves the trials running; `resume` adopts them).

use cohort_proto::env as vars;
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
    /// Start a search: the controller runs its trials (on this machine with --local N).
    Start {
        /// The experiment file (TOML).
        file: PathBuf,
        /// Run the trials on this machine, at most N at once (through `cohort run`); without
        /// it each trial is a Slurm job.
        #[arg(long, value_name = "N")]
        local: Option<u64>,
        #[command(flatten)]
        catalog: crate::catalog_cmd::CatalogArg,
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
        catalog: crate::catalog_cmd::CatalogArg,
    },
    /// A search's trials (hyperparameters, length reached, latest and best metric, state)
    /// and the best so far; --follow shows a live progress line with an ETA.
    Status {
        /// The experiment.
        experiment: String,
        #[command(flatten)]
        catalog: crate::catalog_cmd::CatalogArg,
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
        catalog: crate::catalog_cmd::CatalogArg,
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

/// Starts trials on this machine through `cohort run`.
#[derive(Debug)]
struct LocalLauncher {
    exe: PathBuf,
    command: Vec<String>,
    cwd: PathBuf,
}

#[derive(Debug)]
struct LocalRun {
    child: std::process::Child,
}

impl cohort_search::controller::Running for LocalRun {
    fn poll(&mut self) -> Option<Result<(), String>> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) if status.success() => Some(Ok(())),
            Ok(Some(status)) => Some(Err(format!("cohort run ended with {status}"))),
            Err(e) => Some(Err(format!("cannot wait for cohort run: {e}"))),
        }
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl cohort_search::controller::Launcher for LocalLauncher {
    fn launch(
        &mut self,
        job: &cohort_search::controller::Job,
    ) -> Result<Box<dyn cohort_search::controller::Running>, String> {
        use std::os::unix::process::CommandExt;
        let log_path = job.dir.join("output.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = std::process::Command::new(&self.exe)
            .arg("run")
            .args(["-n", "1", "--catalog"])
            .arg(&job.catalog)
            .args([
                "--experiment",
                &job.experiment,
                "--trial",
                &job.trial.to_string(),
                "--",
            ])
            .args(&self.command)
            .env(vars::SEARCH_UNTIL, job.until.to_string())
            .current_dir(&self.cwd)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own process group: interrupting the controller leaves the trials running.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start cohort run for trial {}: {e}", job.trial))?;
        Ok(Box::new(LocalRun { child }))
    }
}

/// Submits each trial as a Slurm job (`sbatch --cohort --cohort-exp --cohort-trial`).
#[derive(Debug)]
struct SlurmLauncher {
    spec: ExperimentSpec,
    cwd: PathBuf,
}

/// A trial's Slurm job, watched with squeue; its end is read from the trial's state, which
/// the plugin records.
#[derive(Debug)]
struct SlurmJob {
    id: u32,
    dir: PathBuf,
    /// When squeue first stopped listing it (the plugin may still be recording its end).
    gone_since: Option<std::time::Instant>,
    /// When squeue first failed in a row (slurmctld busy or unreachable).
    failing_since: Option<std::time::Instant>,
}

impl SlurmJob {
    fn new(id: u32, dir: &Path) -> SlurmJob {
        SlurmJob {
            id,
            dir: dir.to_path_buf(),
            gone_since: None,
            failing_since: None,
        }
    }
}

/// How long a Slurm command may take before it counts as failed.
const SLURM_COMMAND_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long squeue may keep failing before the trial's job counts as lost.
const SQUEUE_FAILING_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);
/// How long the plugin has to record a trial's end after its job left the queue.
const END_RECORD_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `command` to its end, killing it after `limit`: a Slurm command waiting on a hung
/// slurmctld must not hang the search.
fn output_within(
    mut command: std::process::Command,
    limit: std::time::Duration,
) -> Result<std::process::Output, String> {
    use std::io::Read;
    use std::process::Stdio;
    let name = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < limit => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{name} did not answer within {} s (is slurmctld up?)",
                    limit.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for {name}: {e}")),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// The job name of a trial's run: one name per trial, length and attempt, so that a
/// controller can find a job its predecessor submitted without recording it.
fn slurm_job_name(job: &cohort_search::controller::Job) -> String {
    format!(
        "cohort-{}-{}-u{}-a{}",
        job.experiment, job.trial, job.until, job.attempt
    )
}

fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

impl cohort_search::controller::Running for SlurmJob {
    fn poll(&mut self) -> Option<Result<(), String>> {
        let mut squeue = std::process::Command::new("squeue");
        squeue.args(["-h", "-o", "%T", "-j", &self.id.to_string()]);
        match output_within(squeue, SLURM_COMMAND_LIMIT) {
            Ok(out) if out.status.success() => {
                self.failing_since = None;
                if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                    return None;
                }
            }
            // A job slurmctld has forgotten.
            Ok(out) if String::from_utf8_lossy(&out.stderr).contains("Invalid job id") => {
                self.failing_since = None;
            }
            failed => {
                let since = *self
                    .failing_since
                    .get_or_insert_with(std::time::Instant::now);
                if since.elapsed() < SQUEUE_FAILING_LIMIT {
                    return None;
                }
                let why = match failed {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => e,
                };
                return Some(Err(format!(
                    "job {}: squeue has failed for {} s: {why}",
                    self.id,
                    SQUEUE_FAILING_LIMIT.as_secs()
                )));
            }
        }
        use cohort_proto::catalog::TrialState;
        match cohort_catalog::catalog::read_state(&self.dir) {
            // Only this job's record counts: an earlier run's end is not this one's.
            Ok(Some(state))
                if state.state.is_final()
                    && state.slurm_job.as_deref() == Some(&self.id.to_string()) =>
            {
                Some(if state.state == TrialState::Completed {
                    Ok(())
                } else {
                    Err(state
                        .message
                        .unwrap_or_else(|| format!("job {} ended {}", self.id, state.state)))
                })
            }
            _ => {
                // The plugin records the end as the step finishes; give it a moment.
                let since = *self.gone_since.get_or_insert_with(std::time::Instant::now);
                (since.elapsed() > END_RECORD_GRACE).then(|| {
                    Err(format!(
                        "job {} ended without recording the trial's end (see {}/slurm-{}.out)",
                        self.id,
                        self.dir.display(),
                        self.id
                    ))
                })
            }
        }
    }
    fn pid(&self) -> u32 {
        self.id
    }
    fn host(&self) -> String {
        "slurm".to_owned()
    }
}

impl cohort_search::controller::Launcher for SlurmLauncher {
    fn launch(
        &mut self,
        job: &cohort_search::controller::Job,
    ) -> Result<Box<dyn cohort_search::controller::Running>, String> {
        let mut command = std::process::Command::new("sbatch");
        command
            .arg("--parsable")
            .arg(format!("--job-name={}", slurm_job_name(job)))
            .arg(format!("--nodes={}", self.spec.nodes))
            .arg(format!(
                "--ntasks-per-node={}",
                self.spec.gpus_per_node.max(1)
            ))
            .arg(format!("--chdir={}", self.cwd.display()))
            .arg(format!("--output={}/slurm-%j.out", job.dir.display()))
            .arg("--cohort")
            .arg(format!("--cohort-exp={}", job.experiment))
            .arg(format!("--cohort-trial={}", job.trial));
        if self.spec.gpus_per_node > 0 {
            command.arg(format!("--gpus-per-node={}", self.spec.gpus_per_node));
        }
        match &self.spec.launch {
            cohort_search::spec::Launch::Sbatch(path) => {
                command.arg(path);
            }
            cohort_search::spec::Launch::Command(words) => {
                let line: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
                command.arg(format!("--wrap=srun {}", line.join(" ")));
            }
        }
        // sbatch passes its environment on (the values hold commas, which --export cannot).
        command
            .env(vars::CATALOG, &job.catalog)
            .env(vars::SEARCH_UNTIL, job.until.to_string())
            .env(
                vars::HPARAMS,
                serde_json::to_string(&job.hparams).unwrap_or_default(),
            );
        let out = output_within(command, SLURM_COMMAND_LIMIT)
            .map_err(|e| format!("trial {}: {e}", job.trial))?;
        if !out.status.success() {
            return Err(format!(
                "sbatch refused trial {}: {}",
                job.trial,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let id: u32 = text
            .trim()
            .split(';')
            .next()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| format!("sbatch printed {text:?}, not a job id"))?;
        Ok(Box::new(SlurmJob::new(id, &job.dir)))
    }

    fn find(
        &mut self,
        job: &cohort_search::controller::Job,
    ) -> Option<Box<dyn cohort_search::controller::Running>> {
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)?;
        let mut squeue = std::process::Command::new("squeue");
        squeue
            .args(["-h", "-o", "%i", "-u", &user, "-n"])
            .arg(slurm_job_name(job));
        let out = output_within(squeue, SLURM_COMMAND_LIMIT).ok()?;
        let listed = String::from_utf8_lossy(&out.stdout);
        let id: u32 = listed.split_whitespace().next()?.parse().ok()?;
        Some(Box::new(SlurmJob::new(id, &job.dir)))
    }

    fn adopt(
        &mut self,
        host: &str,
        pid: u32,
        job: &cohort_search::controller::Job,
    ) -> Option<Box<dyn cohort_search::controller::Running>> {
        (host == "slurm").then(|| {
            Box::new(SlurmJob::new(pid, &job.dir)) as Box<dyn cohort_search::controller::Running>
        })
    }
}

fn drive(
    mut controller: cohort_search::controller::Controller,
    spec: &ExperimentSpec,
    local: Option<u64>,
    cwd: PathBuf,
) -> Result<ExitCode> {
    let (mut launcher, interval, how): (Box<dyn cohort_search::controller::Launcher>, _, _) =
        if local.is_some() {
            let command = match &spec.launch {
                cohort_search::spec::Launch::Command(command) => command.clone(),
                cohort_search::spec::Launch::Sbatch(path) => {
                    vec!["sh".into(), path.display().to_string()]
                }
            };
            let launcher = LocalLauncher {
                exe: std::env::current_exe()?,
                command,
                cwd,
            };
            (Box::new(launcher), 200, "running its trials here")
        } else {
            let found = std::process::Command::new("sbatch")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                bail!("sbatch is not available here: run the search on a Slurm login node, or give --local N to run its trials on this machine");
            }
            let launcher = SlurmLauncher {
                spec: spec.clone(),
                cwd,
            };
            (Box::new(launcher), 1000, "submitting its trials to Slurm")
        };
    eprintln!(
        "cohort: search {} {how}; `cohort search status {}` shows it",
        spec.name, spec.name
    );
    controller.run(
        launcher.as_mut(),
        std::time::Duration::from_millis(interval),
    )?;
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
            let root = crate::catalog_cmd::catalog_root(catalog.path())?;
            let catalog = cohort_catalog::Catalog::open_or_create(std::path::absolute(&root)?)?;
            let mut controller = cohort_search::controller::Controller::start(&catalog, &spec)?;
            crate::catalog_cmd::warn_all(&controller.take_warnings());
            let cwd = std::env::current_dir()?;
            controller.save_workdir(&cwd)?;
            drive(controller, &spec, *local, cwd)
        }
        SearchCommand::Resume {
            experiment,
            local,
            catalog,
        } => {
            let root = crate::catalog_cmd::catalog_root(catalog.path())?;
            let catalog = cohort_catalog::Catalog::open(std::path::absolute(&root)?)?;
            let mut controller =
                cohort_search::controller::Controller::resume(&catalog, experiment)?;
            crate::catalog_cmd::warn_all(&controller.take_warnings());
            if let Some(n) = local {
                controller.limit_concurrency(*n);
            }
            let dir = cohort_search::controller::search_dir(controller.experiment());
            let cwd = controller
                .workdir()
                .map_or_else(std::env::current_dir, Ok)?;
            let mut spec = ExperimentSpec::load(&dir.join("spec.toml"))?;
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
            let root = crate::catalog_cmd::catalog_root(catalog.path())?;
            let catalog = cohort_catalog::Catalog::open(root)?;
            status(&catalog, experiment, *follow, *json)
        }
        SearchCommand::Stop {
            experiment,
            catalog,
        } => {
            let root = crate::catalog_cmd::catalog_root(catalog.path())?;
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
pub(crate) fn bench(args: &SimArgs, random_trials: u64, png: Option<&Path>) -> Result<ExitCode> {
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
    if let Some(path) = png {
        let curve = |runs: &[SimResult]| -> Vec<cohort_catalog::read::Point> {
            (1..=100u64)
                .map(|i| {
                    let budget = random_budget * i / 100;
                    cohort_catalog::read::Point {
                        step: i64::try_from(budget).unwrap_or(i64::MAX),
                        value: mean(runs.iter().map(|r| r.regret_at(budget))),
                        wall: 0.0,
                    }
                })
                .collect()
        };
        let series = vec![
            (
                format!("random search, {random_trials} trials"),
                curve(&random_runs),
            ),
            (
                format!("ASHA, {} trials", spec.searcher.max_trials),
                curve(&asha_runs),
            ),
        ];
        let title = format!(
            "Mean regret on Hartmann 6-D by budget ({} runs, {} workers)",
            args.repeat, args.workers
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

/// Counts of a search's trials, its budget spent and the best trial at full length.
struct Progress {
    created: usize,
    running: usize,
    completed: usize,
    stopped: usize,
    failed: usize,
    trained: u64,
    total: u64,
    finished: Option<String>,
    best: Option<(u64, f64)>,
}

type SearchView = (
    ExperimentSpec,
    Vec<cohort_proto::catalog::TrialSummary>,
    Vec<cohort_search::controller::Event>,
    Progress,
);

fn progress(catalog: &cohort_catalog::Catalog, name: &str) -> Result<SearchView> {
    use cohort_proto::catalog::TrialState;
    let experiment = catalog.experiment(name)?;
    let dir = cohort_search::controller::search_dir(&experiment);
    let spec = ExperimentSpec::load(&dir.join("spec.toml"))
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
        failed: count(TrialState::Failed),
        trained: loaded
            .trials
            .iter()
            .filter_map(|t| t.metrics.get(metric))
            .map(|m| u64::try_from(m.last_step).unwrap_or(0))
            .sum(),
        total,
        finished: events.iter().rev().find_map(|e| match e {
            cohort_search::controller::Event::Finished { reason } => Some(reason.clone()),
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
            "\r[{}{}] {:>3.0}%  {}/{} trials: {} running, {} completed, {} stopped, {} failed; best {} {}; {}   ",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            share * 100.0,
            p.created,
            spec.searcher.max_trials,
            p.running,
            p.completed,
            p.stopped,
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
        if let cohort_search::controller::Event::Launched { trial, until, .. } = event {
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
        "search {name}: {} of {} trials created; {} running, {} completed, {} stopped by the searcher, {} failed; {}\n",
        p.created,
        spec.searcher.max_trials,
        p.running,
        p.completed,
        p.stopped,
        p.failed,
        p.finished
            .as_ref()
            .map_or_else(|| "in progress".to_owned(), |r| format!("finished ({r})"))
    );
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
