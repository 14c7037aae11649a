//! The `cohort` command: parses arguments, calls the library crates, prints.
//!
//! It owns no logic of its own beyond presentation and exit codes: 0 success, 1 a check found
//! problems (`cohort topo doctor`), 2 an error (bad option, unreadable or malformed file).
//! Errors are one line on stderr, `cohort: ...`; a closed pipe (`cohort topo | head`) is not
//! an error.

#![forbid(unsafe_code)]

// Catalog queries decode thousands of small records on several threads; glibc's per-thread
// arenas spend much of that time growing their heaps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod bench_catalog;
mod catalog;
mod daemon_client;
mod plot;
mod png;
mod run;
mod search_cmd;
mod top;
mod ui_cmd;

use cohort_proto::env as vars;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cohort_topology::{LiveOptions, SysfsRoot, Topology};

/// Cohort: a deep-learning layer for Slurm GPU clusters.
#[derive(Debug, Parser)]
#[command(name = "cohort", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show this node's GPU / NIC / PCIe / NUMA topology and the GPU -> NIC assignment.
    Topo(TopoArgs),
    /// Start N ranks of a program on this machine, as Slurm would across nodes.
    Run(RunArgs),
    /// This node's cohortd: version, uptime, topology summary.
    Status {
        /// cohortd's socket.
        #[arg(long, value_name = "PATH", default_value = cohort_proto::daemon::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The node's GPUs, the steps and users holding them and their utilisation, refreshing;
    /// `--nodes` shows other nodes' too.
    Top(top::TopArgs),
    /// Measure Cohort's own operations.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The catalog's experiments.
    #[command(subcommand)]
    Exp(catalog::ExpCommand),
    /// An experiment's trials: filter with --where, sort with --sort, best first.
    Trials(catalog::TrialsArgs),
    /// One trial.
    #[command(subcommand)]
    Trial(TrialCommand),
    /// A trial's metric history.
    Metrics(catalog::MetricsArgs),
    /// Trials side by side: state, hyperparameters, metric summaries.
    Compare {
        /// Trials as EXPERIMENT/NUMBER.
        #[arg(required = true, num_args = 1.., value_name = "TRIAL")]
        trials: Vec<String>,
        #[command(flatten)]
        catalog: catalog::CatalogArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A metric's curve in the terminal.
    Plot(catalog::PlotArgs),
    /// A read-only web view of the catalog: experiments, trials, curves, searches.
    Ui(ui_cmd::UiArgs),
    /// Export an experiment's metrics as CSV, JSON or Parquet.
    Export {
        /// The experiment.
        experiment: String,
        #[command(flatten)]
        catalog: catalog::CatalogArg,
        /// Output format.
        #[arg(long, value_enum, default_value = "csv")]
        format: catalog::ExportFormat,
        /// Write to FILE (written beside it and renamed when complete) instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Checkpoints: list them, collect the ones a retention policy does not keep.
    #[command(subcommand)]
    Ckpt(catalog::CkptCommand),
    /// Named model versions from trials' checkpoints: register, alias, list, show, export.
    #[command(subcommand)]
    Model(catalog::ModelCommand),
    /// Rebuild the index of one experiment (or all) from the trials' files.
    Index {
        /// The experiment (default: every experiment).
        experiment: Option<String>,
        #[command(flatten)]
        catalog: catalog::CatalogArg,
    },
    /// Record into the current trial from any program or shell script.
    #[command(subcommand)]
    Log(catalog::LogCommand),
    /// Hyperparameter search: preview or simulate an experiment file.
    #[command(subcommand)]
    Search(search_cmd::SearchCommand),
    /// Shell completions and man pages, generated from the same definitions as --help.
    #[command(subcommand)]
    Generate(GenerateCommand),
}

#[derive(Debug, Subcommand)]
enum GenerateCommand {
    /// Print the completion script for a shell (bash: `source <(cohort generate completions
    /// bash)`; zsh: write it as `_cohort` in a directory of $fpath).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (cohort.1 and one per subcommand, cohort-trials.1, ...) into DIR.
    Man {
        /// Where to write them.
        dir: PathBuf,
    },
}

fn generate(command: &GenerateCommand) -> Result<ExitCode> {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    match command {
        GenerateCommand::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut cli, "cohort", &mut out);
            std::io::stdout().lock().write_all(&out)?;
        }
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
            clap_mangen::generate_to(cli, dir)
                .with_context(|| format!("{}: cannot write the man pages", dir.display()))?;
            write_out(&format!("man pages written to {}\n", dir.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
enum TrialCommand {
    /// A trial's record, state, hyperparameters and metric summaries.
    Show {
        /// The trial: EXPERIMENT/NUMBER.
        trial: String,
        #[command(flatten)]
        catalog: catalog::CatalogArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Number of ranks.
    #[arg(short = 'n', long = "ranks", value_name = "N")]
    ranks: u32,
    /// GPUs to give the ranks (rank i gets the i-th, in ring order): `0,2,3` or `0-3`.
    #[arg(long, value_name = "LIST", value_parser = parse_gpu_list)]
    gpus: Option<GpuList>,
    /// Deadline of every blocking collective, in seconds (COHORT_TIMEOUT; default 300).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Carry data between ranks of this machine over TCP instead of shared memory.
    #[arg(long)]
    tcp: bool,
    /// Do not prefix output lines with the rank.
    #[arg(long)]
    no_prefix: bool,
    /// Give the ranks no NCCL hints (NCCL_IB_HCA, NCCL_SOCKET_IFNAME, NCCL_TOPO_FILE); by
    /// default each is set from the plan unless the environment already sets it.
    #[arg(long)]
    no_nccl_hints: bool,
    /// Record the run as a trial of this experiment (default: the program's name).
    #[arg(long, value_name = "NAME")]
    experiment: Option<String>,
    /// A hyperparameter of the trial, recorded in the catalog and given to the ranks in
    /// COHORT_HPARAMS (JSON); repeatable. Numbers and true/false are typed.
    #[arg(long = "hparam", value_name = "KEY=VALUE")]
    hparams: Vec<String>,
    /// Do not record the run in the catalog.
    #[arg(long, conflicts_with_all = ["experiment", "hparams", "trial"])]
    no_track: bool,
    /// Record into this existing trial of the experiment (its restarts are kept) instead of
    /// a new one: how a search runs its trials.
    #[arg(long, value_name = "NUMBER", conflicts_with = "hparams")]
    trial: Option<u64>,
    #[command(flatten)]
    catalog: catalog::CatalogArg,
    /// The program and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM"
    )]
    program: Vec<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct TopoArgs {
    #[command(subcommand)]
    command: Option<TopoCommand>,
    #[command(flatten)]
    source: SourceArgs,
    /// Print the versioned JSON document instead of the matrix.
    #[arg(long)]
    json: bool,
    /// Write the topology in NCCL's format (for NCCL_TOPO_FILE) to FILE.
    #[arg(long, value_name = "FILE")]
    export_nccl: Option<PathBuf>,
    /// Plan for these GPUs only (for example the GPUs a job was granted): `0,2,3` or `0-3`.
    #[arg(long, value_name = "LIST", value_parser = parse_gpu_list)]
    gpus: Option<GpuList>,
    /// Show the topology the local cohortd discovered (as JSON with --json).
    #[arg(long, conflicts_with_all = ["from", "export_nccl", "gpus"])]
    daemon: bool,
    /// cohortd's socket, with --daemon.
    #[arg(long, value_name = "PATH", default_value = cohort_proto::daemon::DEFAULT_SOCKET, requires = "daemon")]
    socket: PathBuf,
}

/// GPU indices given on the command line.
#[derive(Debug, Clone)]
struct GpuList(Vec<u32>);

#[derive(Debug, Subcommand)]
enum TopoCommand {
    /// Check the topology for what costs bandwidth; exits 1 when it finds anything.
    Doctor(SourceArgs),
}

#[derive(Debug, Clone, Args)]
struct SourceArgs {
    /// Read the topology from an hwloc XML or NCCL XML file instead of this machine.
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    /// Directory standing for / when reading sysfs (replays a captured tree; with --from, its
    /// RDMA port details are added to the file's topology).
    #[arg(long, value_name = "DIR", hide = true)]
    sysfs_root: Option<PathBuf>,
    /// Do not load NVML even if the NVIDIA driver is installed.
    #[arg(long)]
    no_nvml: bool,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time topology discovery (or loading a file) in-process over several runs.
    Topo {
        #[command(flatten)]
        source: SourceArgs,
        /// Number of timed runs (after one warm-up run).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        runs: u32,
    },
    /// Allreduce bandwidth and latency, nccl-tests style (ranks from `cohort run`, or --ranks).
    Allreduce(bench::CollArgs),
    /// Broadcast from rank 0.
    Broadcast(bench::CollArgs),
    /// Allgather (sizes are the gathered totals).
    Allgather(bench::CollArgs),
    /// Reduce-scatter (sizes are what each rank sends).
    #[command(name = "reduce_scatter", alias = "reduce-scatter")]
    ReduceScatter(bench::CollArgs),
    /// The experiment catalog: synthetic data, ingest, queries.
    #[command(subcommand)]
    Catalog(bench_catalog::CatalogBench),
    /// A file's ASHA against random search on a simulated benchmark function (the file's [simulation] table).
    Search(search_cmd::BenchSearchArgs),
    /// The cost of one TPE decision against one random sample, at a number of results.
    Sampler(search_cmd::BenchSamplerArgs),
    /// The search controller with many concurrent trials (a simulated launcher): its CPU use
    /// and how soon a result leads to the next launch.
    Controller(search_cmd::BenchControllerArgs),
}

pub(crate) fn parse_gpu_list(text: &str) -> Result<GpuList, String> {
    let mut gpus = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let bad = || format!("{part:?} is not a GPU index or range (use 0,2,3 or 0-3)");
        match part.split_once('-') {
            Some((start, end)) => {
                let start: u32 = start.trim().parse().map_err(|_| bad())?;
                let end: u32 = end.trim().parse().map_err(|_| bad())?;
                if start > end || end - start > 4096 {
                    return Err(bad());
                }
                gpus.extend(start..=end);
            }
            None => gpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(GpuList(gpus))
}

fn load(source: &SourceArgs) -> Result<Topology> {
    match &source.from {
        Some(path) => {
            let mut topo = Topology::from_file(path)?;
            if let Some(root) = &source.sysfs_root {
                topo.apply_sysfs(&SysfsRoot(root.clone()));
            }
            Ok(topo)
        }
        None => Ok(Topology::discover(&LiveOptions {
            sysfs_root: source
                .sysfs_root
                .clone()
                .map_or_else(SysfsRoot::default, SysfsRoot),
            nvml: !source.no_nvml,
        })?),
    }
}

pub(crate) fn write_out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

fn topo(args: &TopoArgs) -> Result<ExitCode> {
    if let Some(TopoCommand::Doctor(source)) = &args.command {
        return doctor(source);
    }
    if args.daemon {
        return daemon_topology(&args.socket, args.json);
    }
    let topo = load(&args.source)?;
    let assignment = topo
        .assign_nics(args.gpus.as_ref().map(|list| list.0.as_slice()))
        .context("--gpus")?;
    if let Some(path) = &args.export_nccl {
        write_file(path, &cohort_topology::to_nccl_xml(&topo))?;
    }
    if args.json {
        let mut text = topo.to_doc(&assignment).to_json_pretty();
        text.push('\n');
        write_out(&text)?;
    } else {
        let mut text = summary(&topo);
        text.push('\n');
        text.push_str(&topo.render_matrix());
        text.push('\n');
        text.push_str(&topo.render_assignment(&assignment));
        if let Some(path) = &args.export_nccl {
            text.push_str(&format!(
                "\nNCCL topology written to {} (use it as NCCL_TOPO_FILE)\n",
                path.display()
            ));
        }
        write_out(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn daemon_topology(socket: &Path, json: bool) -> Result<ExitCode> {
    use cohort_proto::daemon::{Request, Response};
    let Response::Topology(doc) = daemon_client::ask(socket, &Request::GetTopology)? else {
        anyhow::bail!("cohortd answered with something other than a topology");
    };
    if json {
        let mut text = doc.to_json_pretty();
        text.push('\n');
        return write_out(&text).map(|()| ExitCode::SUCCESS);
    }
    let mut text = format!(
        "Topology from cohortd ({}): {} NUMA node(s), {} GPU(s), {} RDMA NIC(s)\n",
        doc.hostname.as_deref().unwrap_or("unknown host"),
        doc.numa_nodes.len(),
        doc.gpus.len(),
        doc.nics.len()
    );
    for source in &doc.sources {
        text.push_str(&format!(
            "  {:<10} {:<12} {}\n",
            source.kind, source.status, source.detail
        ));
    }
    text.push('\n');
    let width = doc.paths.labels.iter().map(String::len).max().unwrap_or(4) + 2;
    text.push_str(&format!("{:<width$}", ""));
    for label in &doc.paths.labels {
        text.push_str(&format!("{label:<width$}"));
    }
    text.push('\n');
    for (label, row) in doc.paths.labels.iter().zip(&doc.paths.classes) {
        text.push_str(&format!("{label:<width$}"));
        for cell in row {
            text.push_str(&format!("{cell:<width$}"));
        }
        text.push('\n');
    }
    text.push_str("\nGPU -> NIC assignment:\n");
    for item in &doc.assignment {
        text.push_str(&format!(
            "  GPU{:<3} {:<20} {}\n",
            item.gpu,
            item.nics.join(","),
            item.path
        ));
    }
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn status(socket: &Path) -> Result<ExitCode> {
    use cohort_proto::daemon::{Request, Response};
    let Response::Status(status) = daemon_client::ask(socket, &Request::GetStatus)? else {
        anyhow::bail!("cohortd answered with something other than a status");
    };
    write_out(&format!(
        "cohortd {} on {}, up {} s\ntopology: {} (from {})\nsteps: {}\n",
        status.daemon_version,
        status.hostname,
        status.uptime_seconds,
        status.topology_summary,
        status.topology_source,
        if status.steps.is_empty() {
            "none".to_owned()
        } else {
            status.steps.join(", ")
        }
    ))?;
    if !status.gpus.is_empty() {
        let mut text = String::from("GPUs of running steps:\n");
        for line in &status.gpus {
            text.push_str(&format!("  {line}\n"));
        }
        write_out(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(topo: &Topology) -> String {
    let mut text = String::new();
    let host = topo.hostname.as_deref().unwrap_or("(unknown host)");
    text.push_str(&format!(
        "Node {host}: {} NUMA node(s), {} GPU(s), {} RDMA NIC(s)\n",
        topo.numa_nodes.len(),
        topo.gpus.len(),
        topo.nics.len()
    ));
    text.push_str(&topo.render_sources());
    for note in &topo.notes {
        text.push_str(&format!("Note: {note}\n"));
    }
    text
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    // Written beside the target and renamed, so a reader never sees half a file.
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cohort-topo".into())
    ));
    std::fs::write(&tmp, text).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

fn doctor(source: &SourceArgs) -> Result<ExitCode> {
    let topo = load(source)?;
    let findings = topo.doctor();
    let mut text = summary(&topo);
    text.push('\n');
    if topo.gpus.is_empty() && topo.nics.is_empty() {
        text.push_str("No GPU and no RDMA NIC found: nothing to check.\n");
    } else if findings.is_empty() {
        text.push_str("No problem found.\n");
    } else {
        text.push_str(&format!("{} problem(s) found:\n", findings.len()));
        for finding in &findings {
            text.push_str(&format!(
                "\n  {}: {}\n    {}\n",
                finding.subject, finding.problem, finding.explanation
            ));
        }
    }
    write_out(&text)?;
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn bench_topo(source: &SourceArgs, runs: u32) -> Result<ExitCode> {
    load(source)?;
    let mut times: Vec<Duration> = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let start = Instant::now();
        let topo = load(source)?;
        let _ = topo.assign_nics(None)?;
        times.push(start.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let what = match &source.from {
        Some(path) => format!("load {}", path.display()),
        None => "discover this machine".to_owned(),
    };
    write_out(&format!(
        "{what}: {runs} runs, median {:.2} ms, min {:.2} ms, max {:.2} ms\n",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Topo(args) => topo(args),
        Command::Status { socket } => status(socket),
        Command::Top(args) => top::run(args),
        Command::Bench(BenchCommand::Topo { source, runs }) => bench_topo(source, *runs),
        Command::Bench(BenchCommand::Allreduce(args)) => {
            bench::collective(cohort_collectives::bench::BenchOp::Allreduce, args)
        }
        Command::Bench(BenchCommand::Broadcast(args)) => {
            bench::collective(cohort_collectives::bench::BenchOp::Broadcast, args)
        }
        Command::Bench(BenchCommand::Allgather(args)) => {
            bench::collective(cohort_collectives::bench::BenchOp::Allgather, args)
        }
        Command::Bench(BenchCommand::ReduceScatter(args)) => {
            bench::collective(cohort_collectives::bench::BenchOp::ReduceScatter, args)
        }
        Command::Bench(BenchCommand::Catalog(command)) => bench_catalog::run(command),
        Command::Exp(command) => catalog::exp(command),
        Command::Trials(args) => catalog::trials(args),
        Command::Trial(TrialCommand::Show {
            trial,
            catalog,
            json,
        }) => catalog::trial_show(trial, catalog, *json),
        Command::Metrics(args) => catalog::metrics(args),
        Command::Compare {
            trials,
            catalog,
            json,
        } => catalog::compare(trials, catalog, *json),
        Command::Plot(args) => catalog::plot(args),
        Command::Ui(args) => ui_cmd::ui(args),
        Command::Export {
            experiment,
            catalog,
            format,
            output,
        } => catalog::export(experiment, catalog, *format, output.as_deref()),
        Command::Ckpt(command) => catalog::ckpt(command),
        Command::Model(command) => catalog::model_command(command),
        Command::Index {
            experiment,
            catalog,
        } => catalog::index(experiment.as_deref(), catalog),
        Command::Log(command) => catalog::log(command),
        Command::Search(command) => search_cmd::search(command),
        Command::Generate(command) => generate(command),
        Command::Bench(BenchCommand::Search(args)) => {
            search_cmd::bench(&args.sim, args.random_trials, args.png.as_deref())
        }
        Command::Bench(BenchCommand::Sampler(args)) => search_cmd::bench_sampler(args),
        Command::Bench(BenchCommand::Controller(args)) => search_cmd::bench_controller(args),
        Command::Run(args) => {
            let mut env = Vec::new();
            if let Some(seconds) = args.timeout {
                if seconds.is_nan() || seconds <= 0.0 {
                    anyhow::bail!("--timeout must be a positive number of seconds");
                }
                env.push((vars::TIMEOUT.to_owned(), seconds.to_string()));
            }
            if args.tcp {
                env.push((vars::TRANSPORT.to_owned(), "tcp".to_owned()));
            }
            let track = if args.no_track {
                None
            } else {
                let experiment = match &args.experiment {
                    Some(name) => name.clone(),
                    None => args
                        .program
                        .first()
                        .and_then(|p| Path::new(p).file_name())
                        .map_or_else(
                            || "default".to_owned(),
                            |n| n.to_string_lossy().into_owned(),
                        ),
                };
                Some(run::TrackSpec {
                    catalog: catalog::catalog_root(args.catalog.path())?,
                    experiment,
                    hparams: run::parse_hparams(&args.hparams)?,
                    trial: args.trial,
                })
            };
            run::run(&run::RunSpec {
                ranks: args.ranks,
                gpus: args.gpus.as_ref().map(|list| list.0.clone()),
                program: args.program.clone(),
                env,
                prefix: !args.no_prefix,
                nccl_hints: !args.no_nccl_hints,
                track,
            })
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            let broken_pipe = err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("cohort: {err:#}");
            ExitCode::from(2)
        }
    }
}
