//! `cohort run -n N -- PROGRAM ARGS`: the same ranks Slurm and the plugin would start, on this
//! one machine.
//!
//! It plans the ranks on the local topology, writes the plan, picks the store address and a
//! fresh job secret, starts the ranks with the `COHORT_*` and torch variables, prefixes every
//! output line with its rank, forwards SIGINT and SIGTERM, and when a rank fails stops the
//! others within seconds and exits non-zero naming the rank.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use cohort_catalog::{Catalog, NewExperiment, TrialRef};
use cohort_proto::catalog::TrialState;
use cohort_proto::env;
use cohort_topology::{LiveOptions, LocalPlanOptions, Topology};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// What to start.
#[derive(Debug, Clone)]
pub(crate) struct RunSpec {
    pub(crate) ranks: u32,
    pub(crate) gpus: Option<Vec<u32>>,
    pub(crate) program: Vec<String>,
    /// Extra environment for every rank (`COHORT_TIMEOUT`, `COHORT_TRANSPORT`, ...).
    pub(crate) env: Vec<(String, String)>,
    /// Whether to prefix output lines with `[rank] `.
    pub(crate) prefix: bool,
    /// Whether ranks get NCCL's hints where the environment sets none.
    pub(crate) nccl_hints: bool,
    /// Where to record the run as a trial (None: not recorded).
    pub(crate) track: Option<TrackSpec>,
}

/// The trial a run is recorded as.
#[derive(Debug, Clone)]
pub(crate) struct TrackSpec {
    pub(crate) catalog: PathBuf,
    pub(crate) experiment: String,
    pub(crate) hparams: BTreeMap<String, serde_json::Value>,
    /// Record into this existing trial (a search's) instead of a new one.
    pub(crate) trial: Option<u64>,
}

/// `KEY=VALUE` pairs; numbers and booleans typed, anything else a string.
pub(crate) fn parse_hparams(pairs: &[String]) -> Result<BTreeMap<String, serde_json::Value>> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--hparam {pair:?}: expected KEY=VALUE (for example lr=0.01)");
        };
        let key = key.trim();
        if key.is_empty() {
            bail!("--hparam {pair:?}: the key is empty");
        }
        let value = value.trim();
        let typed = match serde_json::from_str::<serde_json::Value>(value) {
            Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v,
            _ => serde_json::Value::String(value.to_owned()),
        };
        if out.insert(key.to_owned(), typed).is_some() {
            bail!("--hparam {key} given twice");
        }
    }
    Ok(out)
}

/// Creates the trial (state running) and returns it with the variables the ranks get.
fn start_trial(
    spec: &TrackSpec,
    command: &[String],
    host: &str,
) -> Result<(TrialRef, Vec<(String, String)>)> {
    let root = std::path::absolute(&spec.catalog).with_context(|| {
        format!(
            "{}: cannot resolve the catalog path",
            spec.catalog.display()
        )
    })?;
    let catalog = Catalog::open_or_create(&root)?;
    let (experiment, _) = catalog.create_experiment(&NewExperiment {
        name: spec.experiment.clone(),
        ..NewExperiment::default()
    })?;
    let trial = match spec.trial {
        Some(id) => catalog.trial(&experiment, id)?,
        None => catalog.create_trial(&experiment, spec.hparams.clone(), command.to_vec(), None)?,
    };
    let prior = cohort_catalog::catalog::read_state(&trial.dir)?;
    let mut state = prior
        .clone()
        .unwrap_or_else(|| cohort_catalog::catalog::new_state(TrialState::Running));
    // A failed (or crashed) earlier run is a restart; a search resuming a trial it stopped
    // is not.
    if let Some(prior) = prior.filter(|p| {
        p.started.is_some()
            && matches!(
                p.state,
                TrialState::Failed | TrialState::Running | TrialState::Preempted
            )
    }) {
        state.restarts.push(cohort_proto::catalog::Restart {
            at: cohort_catalog::now(),
            reason: prior
                .message
                .clone()
                .unwrap_or_else(|| format!("was {}", prior.state)),
        });
    }
    state.state = TrialState::Running;
    state.started = Some(cohort_catalog::now());
    state.ended = None;
    state.exit_status = None;
    state.exit_signal = None;
    state.message = None;
    state.nodes = vec![host.to_owned()];
    cohort_catalog::catalog::write_state(&trial.dir, &state)?;
    let env = vec![
        (env::CATALOG.to_owned(), root.display().to_string()),
        (env::EXPERIMENT.to_owned(), spec.experiment.clone()),
        (env::TRIAL.to_owned(), trial.id.to_string()),
        (
            env::HPARAMS.to_owned(),
            serde_json::to_string(
                &trial_hparams(&trial.dir).unwrap_or_else(|| spec.hparams.clone()),
            )
            .unwrap_or_default(),
        ),
    ];
    Ok((trial, env))
}

/// The hyperparameters recorded for a trial.
fn trial_hparams(dir: &std::path::Path) -> Option<BTreeMap<String, serde_json::Value>> {
    Some(
        cohort_catalog::catalog::read_trial_record(dir)
            .ok()?
            .hparams,
    )
}

/// Records how the run ended.
fn end_trial(
    trial: &TrialRef,
    state: TrialState,
    status: Option<ExitStatus>,
    message: Option<String>,
) {
    let result = cohort_catalog::catalog::update_state(&trial.dir, |s| {
        // The worker's tracker said where it stopped; that says more than a status.
        let said = s.state == TrialState::Preempted && state == TrialState::Preempted;
        s.state = state;
        s.ended = Some(cohort_catalog::now());
        if let Some(status) = status {
            s.exit_status = status.code();
            s.exit_signal = status.signal().map(|signal| {
                Signal::try_from(signal)
                    .map_or_else(|_| signal.to_string(), |s| s.as_str().to_owned())
            });
        }
        if !said {
            s.message = message;
        }
    });
    if let Err(e) = result {
        eprintln!(
            "cohort: warning: could not record the end of trial {}/{}: {e}",
            trial.experiment, trial.id
        );
    }
}

/// How long ranks get to exit after an interrupt, or after a rank failed, before SIGKILL.
const GRACE: Duration = Duration::from_secs(3);
/// How long ranks get to checkpoint and exit after SIGTERM or the stop signal before
/// SIGKILL: Slurm's default `KillWait`.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// Whether a rank stopped at a warning after checkpointing (the statuses of
/// `cohort_proto::catalog::exit`), rather than failing.
fn stopped_at_warning(status: ExitStatus) -> bool {
    cohort_proto::catalog::exit::stopped_at_warning(status.code())
}

/// Clears close-on-exec on the store's socket, so that the next spawned process inherits it.
fn make_inheritable(listener: &std::net::TcpListener) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(listener, FcntlArg::F_SETFD(FdFlag::empty()))
        .context("making the store's socket inheritable by rank 0")?;
    Ok(())
}

fn signal_all(children: &[(u32, Child)], signal: Signal) {
    for (_, child) in children {
        if let Ok(pid) = i32::try_from(child.id()) {
            // Each rank leads its own process group; signal the group so its children stop too.
            let _ = kill(Pid::from_raw(-pid), signal);
        }
    }
}

fn signal_running(children: &[(u32, Child)], statuses: &[Option<ExitStatus>], signal: Signal) {
    for ((_, child), status) in children.iter().zip(statuses) {
        if status.is_none() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(-pid), signal);
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => {
            let name = Signal::try_from(signal)
                .map_or_else(|_| signal.to_string(), |s| s.as_str().to_owned());
            format!("signal {name}")
        }
        _ => "unknown status".to_owned(),
    }
}

fn pump(
    stream: impl std::io::Read + Send + 'static,
    rank: Option<u32>,
    to_stderr: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let mut text = rank
                .map(|r| format!("[{r}] ").into_bytes())
                .unwrap_or_default();
            text.extend_from_slice(&line);
            text.push(b'\n');
            // A closed stdout (`| head`) must not stop the ranks; drop the output instead.
            if to_stderr {
                let _ = std::io::stderr().lock().write_all(&text);
            } else {
                let _ = std::io::stdout().lock().write_all(&text);
            }
        }
    })
}

/// Starts the ranks and waits for them; returns the exit code for `cohort run`.
pub(crate) fn run(spec: &RunSpec) -> Result<ExitCode> {
    if spec.ranks == 0 {
        bail!("-n must be at least 1");
    }
    let Some((program, args)) = spec.program.split_first() else {
        bail!("no program given (cohort run -n N -- PROGRAM ARGS)");
    };
    let topo = Topology::discover(&LiveOptions {
        nvml: true,
        ..LiveOptions::default()
    })?;
    let host = topo.hostname.clone().unwrap_or_else(|| "localhost".into());
    // The trial is recorded before any rank starts, so a failure to record stops the run
    // here rather than after hours of untracked training.
    let (trial, trial_env) = match &spec.track {
        Some(track) => {
            let (trial, env) = start_trial(track, &spec.program, &host)
                .context("recording the run in the catalog (--no-track runs without)")?;
            eprintln!(
                "cohort: recording as trial {}/{} in {}",
                trial.experiment,
                trial.id,
                track.catalog.display()
            );
            (Some(trial), env)
        }
        None => (None, Vec::new()),
    };
    let mut plan = topo
        .local_plan(&LocalPlanOptions {
            n_ranks: spec.ranks,
            gpus: spec.gpus.clone(),
            host,
            address: "127.0.0.1".into(),
        })
        .context("--gpus")?;
    let dir = tempfile::Builder::new()
        .prefix("cohort-run-")
        .tempdir()
        .context("creating a directory for the plan")?;
    // NCCL's hints: the ranks talk over loopback; a virtualised PCI tree (a cloud VM) is
    // exported so that NCCL does not read the flattened one.
    let loopback = cohort_topology::interface_of(std::net::Ipv4Addr::LOCALHOST.into());
    let nccl_topo = if topo.pci_virtualised() {
        let path = dir.path().join("nccl-topo.xml");
        std::fs::write(&path, cohort_topology::to_nccl_xml(&topo))
            .with_context(|| format!("{}: cannot write the NCCL topology", path.display()))?;
        Some(path.to_string_lossy().into_owned())
    } else {
        None
    };
    for rank in &mut plan.ranks {
        rank.ifname.clone_from(&loopback);
        rank.nccl_topo.clone_from(&nccl_topo);
    }
    let plan_path: PathBuf = dir.path().join("plan.json");
    std::fs::write(&plan_path, plan.to_json_pretty())
        .with_context(|| format!("{}: cannot write the plan", plan_path.display()))?;
    let secret = cohort_collectives::generate_secret()?;
    // The store's socket is bound here and handed to rank 0 (COHORT_STORE_FD), so the port is
    // never free between its choice and rank 0's use of it; the next port (torch's
    // MASTER_PORT) is held until the ranks end.
    let ports = cohort_collectives::ports::reserve(std::net::Ipv4Addr::LOCALHOST)
        .map_err(anyhow::Error::msg)?;
    let store = format!("127.0.0.1:{}", ports.port);
    let _master_port_hold = ports.master;
    let mut store_listener = Some(ports.store);
    let plan_text = plan_path.to_string_lossy().into_owned();
    let launch = cohort_proto::env::Launch {
        plan_path: &plan_text,
        store: &store,
        secret: &secret,
        own_gpu: true,
    };

    // Signals arrive as a counter so the wait loop can forward them.
    let interrupts = Arc::new(AtomicUsize::new(0));
    let terms = Arc::new(AtomicUsize::new(0));
    let warnings = Arc::new(AtomicUsize::new(0));
    signal_hook::flag::register_usize(signal_hook::consts::SIGINT, Arc::clone(&interrupts), 1)
        .context("installing the SIGINT handler")?;
    signal_hook::flag::register_usize(signal_hook::consts::SIGTERM, Arc::clone(&terms), 1)
        .context("installing the SIGTERM handler")?;
    // The stop signal is passed on to the ranks (`#SBATCH --signal=B:USR2@120` warns the
    // batch shell, and so this launcher, alone).
    let stop_signal = cohort_catalog::signals::stop_signal().map_err(anyhow::Error::msg)?;
    if stop_signal != signal_hook::consts::SIGTERM {
        signal_hook::flag::register_usize(stop_signal, Arc::clone(&warnings), 1)
            .context("installing the stop signal's handler")?;
    }

    let mut children: Vec<(u32, Child)> = Vec::new();
    let mut pumps = Vec::new();
    for rank_plan in &plan.ranks {
        let rank_env = cohort_proto::env::rank_env(&plan, rank_plan.rank, &launch)
            .map_err(anyhow::Error::msg)?;
        // Hints: a value this process's environment (the user's) sets wins.
        let hints = if spec.nccl_hints {
            cohort_proto::env::nccl_env(&plan, rank_plan.rank).map_err(anyhow::Error::msg)?
        } else {
            Vec::new()
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(rank_env)
            .envs(
                hints
                    .into_iter()
                    .filter(|(name, _)| std::env::var_os(name).is_none()),
            )
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .envs(trial_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // Rank 0 inherits the store's socket: it is made inheritable only for its spawn (no
        // other process is spawned meanwhile), and the launcher's copy is closed after it.
        let inherited = match (rank_plan.rank, &store_listener) {
            (0, Some(listener)) => {
                make_inheritable(listener)?;
                command.env(
                    cohort_proto::env::STORE_FD,
                    listener.as_raw_fd().to_string(),
                );
                true
            }
            _ => false,
        };
        let spawned = command.spawn();
        if inherited {
            store_listener = None;
        }
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                signal_all(&children, Signal::SIGKILL);
                for (_, child) in &mut children {
                    let _ = child.wait();
                }
                if let Some(trial) = &trial {
                    end_trial(
                        trial,
                        TrialState::Failed,
                        None,
                        Some(format!("cannot start {program}: {e}")),
                    );
                }
                bail!("cannot start {program}: {e}");
            }
        };
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(out, spec.prefix.then_some(rank_plan.rank), false));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, spec.prefix.then_some(rank_plan.rank), true));
        }
        children.push((rank_plan.rank, child));
    }

    let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut failure: Option<(u32, ExitStatus)> = None;
    let mut stopping_since: Option<Instant> = None;
    // When the ranks still running get SIGKILL.
    let mut kill_at: Option<Instant> = None;
    let deadline = |kill_at: &mut Option<Instant>, after: Duration| {
        let at = Instant::now() + after;
        *kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
    };
    let (mut seen_int, mut seen_term, mut seen_warning) = (0, 0, 0);
    loop {
        let int_now = interrupts.load(Ordering::Relaxed);
        let term_now = terms.load(Ordering::Relaxed);
        let warning_now = warnings.load(Ordering::Relaxed);
        if int_now > seen_int {
            seen_int = int_now;
            signal_running(&children, &statuses, Signal::SIGINT);
            stopping_since.get_or_insert_with(Instant::now);
            deadline(&mut kill_at, GRACE);
        }
        if term_now > seen_term {
            seen_term = term_now;
            signal_running(&children, &statuses, Signal::SIGTERM);
            stopping_since.get_or_insert_with(Instant::now);
            deadline(&mut kill_at, KILL_WAIT);
        }
        if warning_now > seen_warning {
            seen_warning = warning_now;
            if let Ok(signal) = Signal::try_from(stop_signal) {
                signal_running(&children, &statuses, signal);
            }
        }
        let mut stop_others = false;
        for (index, (rank, child)) in children.iter_mut().enumerate() {
            if statuses[index].is_some() {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                statuses[index] = Some(status);
                if stopped_at_warning(status) {
                    // The ranks agreed to stop: the others are on their way out.
                    stopping_since.get_or_insert_with(Instant::now);
                    deadline(&mut kill_at, KILL_WAIT);
                } else if !status.success() && failure.is_none() && stopping_since.is_none() {
                    failure = Some((*rank, status));
                    eprintln!(
                        "cohort: rank {rank} failed ({}); stopping the other ranks",
                        describe(status)
                    );
                    stopping_since = Some(Instant::now());
                    stop_others = true;
                    deadline(&mut kill_at, GRACE);
                }
            }
        }
        if stop_others {
            signal_running(&children, &statuses, Signal::SIGTERM);
        }
        if statuses.iter().all(Option::is_some) {
            break;
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            signal_running(&children, &statuses, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for pump in pumps {
        let _ = pump.join();
    }
    drop(dir);
    // Ranks killed while setting up can leave their shared-memory rings behind.
    cohort_collectives::remove_job_shm(secret.as_bytes(), &store);
    // Stopped at a warning, having checkpointed: SIGTERM's status over the stop signal's.
    let warned = statuses
        .iter()
        .flatten()
        .copied()
        .filter(|s| stopped_at_warning(*s))
        .max_by_key(|s| s.code());
    if let Some(trial) = &trial {
        match (&failure, statuses.iter().flatten().find(|s| !s.success())) {
            (None, Some(_)) if warned.is_some() => end_trial(
                trial,
                TrialState::Preempted,
                warned,
                Some(format!(
                    "the ranks stopped at a warning (exit status {})",
                    warned.and_then(|s| s.code()).unwrap_or_default()
                )),
            ),
            (Some((rank, status)), _) => end_trial(
                trial,
                TrialState::Failed,
                Some(*status),
                Some(format!("rank {rank} ended with {}", describe(*status))),
            ),
            (None, Some(status)) => end_trial(
                trial,
                TrialState::Killed,
                Some(*status),
                Some("interrupted".to_owned()),
            ),
            (None, None) => end_trial(
                trial,
                TrialState::Completed,
                statuses.first().copied().flatten(),
                None,
            ),
        }
    }
    if let Some((rank, status)) = failure {
        eprintln!(
            "cohort: run failed: rank {rank} ended with {}",
            describe(status)
        );
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1);
        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)));
    }
    if let Some(code) = warned.and_then(|s| s.code()) {
        eprintln!(
            "cohort: the ranks stopped at a warning and exited with {code}: run it again to go on from its checkpoint"
        );
        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
    }
    if let Some(status) = statuses.iter().flatten().find(|s| !s.success()) {
        eprintln!(
            "cohort: run interrupted; ranks ended with {}",
            describe(*status)
        );
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}
