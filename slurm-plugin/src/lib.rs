//! spank_cohort.so: the Slurm SPANK plugin. For steps run with `--cohort`, it joins the step's
//! gang start through the node's cohortd (one join per node, in slurmstepd, as root), then gives every
//! task its rank, GPU, closest NIC, CPUs and the step's secret and rendezvous address.
//!
//! It owns only the SPANK glue: options, `plugstack.conf` arguments, the join request, the task
//! environment. It must never panic across FFI (every hook catches panics and returns an
//! error), never start threads or a runtime, never block Slurm longer than its timeout, and only
//! talk to the local daemon. Steps without `--cohort` are left untouched.

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod args;
mod client;
pub mod env;
mod ffi;
pub mod record;
mod requeue;

use cohort_proto::env as vars;
use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use cohort_proto::daemon::{JoinRequest, StepPlan};

use crate::args::{Bind, PluginConfig};
use crate::ffi::{item, Spank, SpankOption};

/// `plugin_name`, as `SPANK_PLUGIN(cohort, 1)` would define it.
#[allow(unsafe_code)] // an exported SPANK symbol
#[unsafe(no_mangle)]
#[used]
pub static plugin_name: [u8; 7] = *b"cohort\0";
/// `plugin_type`.
#[allow(unsafe_code)] // an exported SPANK symbol
#[unsafe(no_mangle)]
#[used]
pub static plugin_type: [u8; 6] = *b"spank\0";
/// `plugin_version`: the Slurm version built against (Slurm checks major.minor).
#[allow(unsafe_code)] // an exported SPANK symbol
#[unsafe(no_mangle)]
#[used]
pub static plugin_version: u32 = slurm_version();
/// `spank_plugin_version`.
#[allow(unsafe_code)] // an exported SPANK symbol
#[unsafe(no_mangle)]
#[used]
pub static spank_plugin_version: u32 = 1;

const fn slurm_version() -> u32 {
    let text = env!("COHORT_SLURM_VERSION_NUMBER").as_bytes();
    let mut value = 0u32;
    let mut i = 0;
    while i < text.len() {
        value = value * 10 + (text[i] - b'0') as u32;
        i += 1;
    }
    value
}

static OPT_COHORT: SpankOption = SpankOption {
    name: args::OPTION_COHORT.as_ptr(),
    arginfo: std::ptr::null(),
    usage: c"Start this step through Cohort: gang start, rank, GPU, NIC and CPU placement".as_ptr(),
    has_arg: 0,
    val: 1,
    cb: Some(on_cohort),
};
static OPT_EXP: SpankOption = SpankOption {
    name: args::OPTION_EXP.as_ptr(),
    arginfo: c"NAME".as_ptr(),
    usage: c"Record this step in the Cohort catalog under experiment NAME".as_ptr(),
    has_arg: 1,
    val: 2,
    cb: None,
};
static OPT_TRIAL: SpankOption = SpankOption {
    name: args::OPTION_TRIAL.as_ptr(),
    arginfo: c"ID".as_ptr(),
    usage: c"Record this step as trial ID of its experiment".as_ptr(),
    has_arg: 1,
    val: 3,
    cb: None,
};
static OPT_REQUEUE: SpankOption = SpankOption {
    name: args::OPTION_REQUEUE.as_ptr(),
    arginfo: c"N".as_ptr(),
    usage: c"Requeue the job, up to N times (default 10), when its ranks stop at the time-limit warning".as_ptr(),
    has_arg: 2,
    val: 5,
    cb: Some(check_requeue),
};
static OPT_BIND: SpankOption = SpankOption {
    name: args::OPTION_BIND.as_ptr(),
    arginfo: c"all|gpu|none".as_ptr(),
    usage: c"What Cohort binds each task to (default all: its GPU and the CPUs near it)".as_ptr(),
    has_arg: 1,
    val: 4,
    cb: Some(check_bind),
};

/// Whether the step asked for Cohort (`--cohort`). Set by the option's callback, which Slurm
/// runs as it processes the step's options in slurmstepd, before `init_post_opt`; options
/// cannot be read with `spank_option_getopt` in `init_post_opt`.
static COHORT_ASKED: AtomicBool = AtomicBool::new(false);

/// Records `--cohort` (in srun while it parses options, and in slurmstepd for the step).
extern "C" fn on_cohort(_val: c_int, _optarg: *const c_char, _remote: c_int) -> c_int {
    COHORT_ASKED.store(true, Ordering::Relaxed);
    0
}

/// Checks `--cohort-bind` while srun or sbatch parses options, so a bad value stops it there.
extern "C" fn check_bind(_val: c_int, optarg: *const c_char, _remote: c_int) -> c_int {
    guarded("--cohort-bind", || {
        if optarg.is_null() {
            return Err("--cohort-bind needs a value: all, gpu or none".into());
        }
        let text = ffi::c_string(optarg).unwrap_or_default();
        Bind::parse(&text).map(drop)
    })
}

/// Checks `--cohort-requeue[=N]` while srun or sbatch parses options.
extern "C" fn check_requeue(_val: c_int, optarg: *const c_char, _remote: c_int) -> c_int {
    guarded("--cohort-requeue", || {
        let text = (!optarg.is_null()).then(|| ffi::c_string(optarg).unwrap_or_default());
        args::parse_requeue(text.as_deref())
            .map(drop)
            .map_err(|e| format!("--cohort-requeue: {e}"))
    })
}

/// Whether a task on this node stopped at the time-limit warning (exit status 75).
static STOPPED_AT_WARNING: AtomicBool = AtomicBool::new(false);

/// What the step's join produced, kept in slurmstepd and inherited by each forked task.
#[derive(Debug)]
struct StepData {
    plan: StepPlan,
    plan_path: String,
    bind: Bind,
    /// The step's device variables, narrowed for each task to its own GPU.
    devices: Vec<(String, Vec<String>)>,
    socket: std::path::PathBuf,
    key: (u32, u32, u32),
    uid: u32,
    gid: u32,
    node: String,
    recording: Option<record::Recording>,
    /// `--cohort-requeue`'s limit, when the job asked (or plugstack's `requeue=`).
    requeue: Option<u32>,
    /// How long a call to slurmctld may take.
    timeout: std::time::Duration,
    /// Whether tasks get NCCL's hints (plugstack `nccl=`).
    nccl_hints: bool,
}

static STEP: OnceLock<StepData> = OnceLock::new();

/// Why the gang start failed on this node. Slurm 22.05's srun exits 0 when a remote hook before
/// the tasks fails (it reports a launch failure only), so the failure is kept here and every
/// task fails in `task_init`, which srun does turn into a non-zero exit.
static FAILED: OnceLock<String> = OnceLock::new();

/// Step ids from here up are Slurm's special steps (`SLURM_PENDING_STEP` 0xfffffffd,
/// `SLURM_BATCH_SCRIPT` 0xfffffffb, `SLURM_EXTERN_CONT` 0xfffffffc, interactive 0xfffffffa).
const SPECIAL_STEPS: u32 = 0xffff_fff0;

/// Runs a hook body, turning errors and panics into `cohort: ...` on srun's stderr and -1.
fn guarded(hook: &str, body: impl FnOnce() -> Result<(), String>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(message)) => {
            ffi::error(&message);
            -1
        }
        Err(_) => {
            ffi::error(&format!(
                "internal error in {hook} (a bug; please report it)"
            ));
            -1
        }
    }
}

fn plugstack_args(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    ffi::strings(argc, argv)
}

/// `slurm_spank_init`: registers the options in every context, checks plugstack arguments.
#[allow(unsafe_code)] // an exported SPANK symbol
#[unsafe(no_mangle)]
pub extern "C" fn slurm_spank_init(spank: Spank, argc: c_int, argv: *const *const c_char) -> c_int {
    let args = plugstack_args(argc, argv);
    guarded("init", || {
        PluginConfig::parse(args.iter().map(String::as_str))?;
        for option in [&OPT_COHORT, &OPT_EXP, &OPT_TRIAL, &OPT_BIND, &OPT_REQUEUE] {
            ffi::register(spank, option)?;
        }
        Ok(())
    })
}

/// `slurm_spank_init_post_opt`: in slurmstepd (remote context, as root), joins the step's gang
/// start through the node's cohortd. (Option values are checked by their callbacks, where
/// srun parses them.)
///
/// The join runs here because this hook runs as root: cohortd accepts joins and task reports
/// from root only, so a user on the node cannot start, take over or stall anyone's step by
/// talking to the daemon. What must be done as the job's user (the plan file, the catalog
/// record) waits for `user_init`.
#[allow(unsafe_code)] // an exported SPANK symbol
#[unsafe(no_mangle)]
pub extern "C" fn slurm_spank_init_post_opt(
    spank: Spank,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let args = plugstack_args(argc, argv);
    guarded("init_post_opt", || {
        if ffi::context() != ffi::S_CTX_REMOTE || !COHORT_ASKED.load(Ordering::Relaxed) {
            return Ok(());
        }
        // The batch script, the extern step and interactive steps are not steps of ranks.
        if ffi::get_u32(spank, item::S_JOB_STEPID)? >= SPECIAL_STEPS {
            return Ok(());
        }
        let mut config = PluginConfig::parse(args.iter().map(String::as_str))?;
        let (mut request, devices) = join_request(spank, &config)?;
        if request.ranks.contains(&0) {
            request.store_port = Some(bind_store()?);
        }
        // `%n` in the socket path is this node's name (as Slurm names it in the step's node
        // list), so nodes sharing one file system reach their own daemon. The environment's
        // SLURMD_NODENAME is not used: under sbatch it is the batch node's on every node.
        let node = request.nodes[request.node_index as usize].clone();
        config.socket = config.socket.to_string_lossy().replace("%n", &node).into();
        match client::join(&config, &request) {
            Ok(plan) => {
                let _ = JOINED.set(Joined {
                    plan,
                    request,
                    config,
                    node,
                    devices,
                });
            }
            Err(message) => {
                // In slurmd's log now; on srun's stderr from user_init.
                ffi::error(&message);
                let _ = FAILED.set(message);
            }
        }
        Ok(())
    })
}

/// What the join in `init_post_opt` produced, for `user_init` to finish as the job's user.
#[derive(Debug)]
struct Joined {
    plan: StepPlan,
    request: JoinRequest,
    config: PluginConfig,
    node: String,
    /// The step's device variables and their entries, as the step (not a task) has them.
    devices: Vec<(String, Vec<String>)>,
}

static JOINED: OnceLock<Joined> = OnceLock::new();

/// `slurm_spank_user_init` (slurmstepd, once per step per node, as the job's user): the plan
/// file and the catalog record of a step joined in `init_post_opt`.
#[allow(unsafe_code)] // an exported SPANK symbol
#[unsafe(no_mangle)]
pub extern "C" fn slurm_spank_user_init(
    spank: Spank,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    guarded("user_init", || {
        if let Some(reason) = FAILED.get() {
            // Said here, once per node: slurmstepd forwards this hook's errors to srun, not
            // those of init_post_opt, where the join failed.
            ffi::error(reason);
            return Ok(());
        }
        let Some(joined) = JOINED.get() else {
            return Ok(());
        };
        let Joined {
            plan,
            request,
            config,
            node,
            devices,
        } = joined;
        let bind = match ffi::getopt(spank, &OPT_BIND) {
            Some(text) => Bind::parse(&text)?,
            None => Bind::All,
        };
        let plan_path = write_plan(plan, request.job_id, request.step_id, node)?;
        let experiment =
            ffi::getopt(spank, &OPT_EXP).or_else(|| ffi::getenv(spank, vars::EXPERIMENT));
        let recording = match experiment {
            Some(experiment) => {
                let trial = match ffi::getopt(spank, &OPT_TRIAL)
                    .or_else(|| ffi::getenv(spank, vars::TRIAL))
                {
                    Some(text) => Some(
                        text.trim()
                            .parse::<u64>()
                            .map_err(|_| format!("--cohort-trial {text:?}: not a trial number"))?,
                    ),
                    None => None,
                };
                let started = record::start(&record::Request {
                    catalog: ffi::getenv(spank, vars::CATALOG)
                        .map(std::path::PathBuf::from)
                        .or_else(|| config.catalog.clone()),
                    experiment,
                    trial,
                    hparams: ffi::getenv(spank, vars::HPARAMS),
                    job: request.job_id,
                    step: request.step_id,
                    launch: request.attempt,
                    array: ffi::getenv(spank, "SLURM_ARRAY_JOB_ID")
                        .zip(ffi::getenv(spank, "SLURM_ARRAY_TASK_ID"))
                        .map(|(job, task)| format!("{job}_{task}")),
                    nodes: request.nodes.clone(),
                    rank0_here: plan.plan.rank(0).is_some_and(|r| r.host == *node),
                });
                match started {
                    Ok(recording) => Some(recording),
                    Err(message) => {
                        // The user asked for a record; a step that cannot be recorded does
                        // not start (as with `cohort run`).
                        ffi::error(&message);
                        let _ = FAILED.set(message);
                        return Ok(());
                    }
                }
            }
            None => None,
        };
        let _ = STEP.set(StepData {
            plan: plan.clone(),
            plan_path,
            bind,
            devices: devices.clone(),
            socket: config.socket.clone(),
            key: (request.job_id, request.step_id, request.attempt),
            uid: request.uid,
            gid: ffi::get_u32(spank, item::S_JOB_GID)?,
            node: node.clone(),
            recording,
            requeue: match ffi::getopt(spank, &OPT_REQUEUE) {
                Some(text) => Some(
                    args::parse_requeue(Some(&text))
                        .map_err(|e| format!("--cohort-requeue: {e}"))?,
                ),
                None => config.requeue,
            },
            timeout: config.timeout,
            nccl_hints: config.nccl_hints,
        });
        Ok(())
    })
}

/// How many times Slurm has requeued the job: the daemons key a step's launch on it, since a
/// requeued job runs its steps again under the same ids. slurmstepd's item can read 0 for a
/// requeued job's step; the job's environment (`SLURM_RESTART_COUNT`) is the fallback.
fn launch_count(spank: Spank) -> u32 {
    let item = ffi::get_u32(spank, item::S_SLURM_RESTART_COUNT).unwrap_or(0);
    let env = ffi::getenv(spank, "SLURM_RESTART_COUNT")
        .and_then(|text| text.trim().parse::<u32>().ok())
        .unwrap_or(0);
    item.max(env)
}

/// A step's device variables (`CUDA_VISIBLE_DEVICES` and its like) with their entries.
type DeviceLists = Vec<(String, Vec<String>)>;

/// The join request for this node's part of the step, and the step's device variables.
fn join_request(spank: Spank, config: &PluginConfig) -> Result<(JoinRequest, DeviceLists), String> {
    let job_id = ffi::get_u32(spank, item::S_JOB_ID)?;
    let step_id = ffi::get_u32(spank, item::S_JOB_STEPID)?;
    let node_index = ffi::get_u32(spank, item::S_JOB_NODEID)?;
    let n_nodes = ffi::get_u32(spank, item::S_JOB_NNODES)?;
    let local_tasks = ffi::get_u32(spank, item::S_JOB_LOCAL_TASK_COUNT)?;
    let world_size = ffi::get_u32(spank, item::S_JOB_TOTAL_TASK_COUNT)?;
    let uid = ffi::get_u32(spank, item::S_JOB_UID)?;
    let attempt = launch_count(spank);
    let node_list = ffi::getenv(spank, "SLURM_STEP_NODELIST")
        .or_else(|| ffi::getenv(spank, "SLURM_JOB_NODELIST"))
        .ok_or("the step's node list (SLURM_STEP_NODELIST) is not set")?;
    let nodes = cohort_proto::hostlist::expand(&node_list)?;
    if nodes.len() != n_nodes as usize || node_index >= n_nodes {
        return Err(format!(
            "node list {node_list:?} has {} nodes, Slurm says {n_nodes}",
            nodes.len()
        ));
    }
    let ranks = (0..local_tasks)
        .map(|local| ffi::local_to_global(spank, local))
        .collect::<Result<Vec<u32>, String>>()?;
    let granted = env::granted(|name| ffi::getenv(spank, name));
    let request = JoinRequest {
        job_id,
        step_id,
        attempt,
        nodes,
        node_index,
        ranks,
        world_size,
        gpus: granted.gpus,
        gpu_ids: granted.ids,
        topology_addr: ffi::getenv(spank, "SLURM_TOPOLOGY_ADDR"),
        timeout_ms: u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX),
        store_port: None,
        uid,
    };
    Ok((request, granted.lists))
}

/// The rendezvous store's socket, bound on the node of rank 0 before the join and handed to
/// rank 0's task (`COHORT_STORE_FD`), so that its port is never free for another process to
/// take. slurmstepd's copy is closed once rank 0's task is forked.
static STORE_SOCKET: Mutex<Option<std::net::TcpListener>> = Mutex::new(None);

/// torch's `MASTER_PORT` (the store's port + 1), held by slurmstepd for the whole step so that
/// no other job's connection or ephemeral bind takes it before rank 0's TCPStore binds it
/// (see `cohort_collectives::ports`).
static MASTER_PORT_HOLD: Mutex<Option<cohort_collectives::ports::PortHold>> = Mutex::new(None);

/// Binds the store's socket (all addresses: the plan chooses which one ranks use), holds the
/// next port for torch, and returns the store's port.
fn bind_store() -> Result<u16, String> {
    let ports = cohort_collectives::ports::reserve(std::net::Ipv4Addr::UNSPECIFIED)?;
    let port = ports.port;
    *STORE_SOCKET.lock().unwrap_or_else(PoisonError::into_inner) = Some(ports.store);
    *MASTER_PORT_HOLD
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(ports.master);
    Ok(port)
}

/// Writes the plan where the job's tasks can read it (this hook runs as the job's user), and
/// only they: mode 0600.
fn write_plan(plan: &StepPlan, job: u32, step: u32, node: &str) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
    // Named by node too: each node's plan is its own share, and TMPDIR may be shared.
    let path = format!("{dir}/cohort-plan-{job}.{step}-{node}.json");
    let tmp = format!("{path}.{}", std::process::id());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{tmp}: {e}"))?;
    file.write_all(plan.plan.to_json_pretty().as_bytes())
        .map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{path}: {e}"))?;
    Ok(path)
}

/// `slurm_spank_task_init` (each task, before exec): its environment and binding.
#[allow(unsafe_code)] // an exported SPANK symbol
#[unsafe(no_mangle)]
pub extern "C" fn slurm_spank_task_init(
    spank: Spank,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    guarded("task_init", || {
        if FAILED.get().is_some() {
            // The reason was reported once for the node by user_init.
            return Err("task not started: the step's gang start failed on this node".into());
        }
        let Some(step) = STEP.get() else {
            return Ok(());
        };
        let rank = ffi::get_u32(spank, item::S_TASK_GLOBAL_ID)?;
        for (name, value) in
            env::task_env(&step.plan, &step.plan_path, rank, step.bind, &step.devices)?
        {
            ffi::setenv(spank, &name, &value)?;
        }
        if step.nccl_hints {
            // Hints: a value the user's environment sets wins.
            for (name, value) in env::nccl_hints(&step.plan, rank)? {
                if ffi::getenv(spank, name).is_none() {
                    ffi::setenv(spank, name, &value)?;
                }
            }
        }
        if rank == 0 {
            let socket = STORE_SOCKET.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(listener) = socket.as_ref() {
                ffi::inherit(listener)?;
                ffi::setenv(
                    spank,
                    vars::STORE_FD,
                    &std::os::fd::AsRawFd::as_raw_fd(listener).to_string(),
                )?;
            }
        }
        if let Some(recording) = &step.recording {
            ffi::setenv(spank, vars::CATALOG, &recording.catalog.to_string_lossy())?;
            ffi::setenv(spank, vars::EXPERIMENT, &recording.experiment)?;
            if let Some(trial) = recording.trial {
                ffi::setenv(spank, vars::TRIAL, &trial.to_string())?;
            }
        }
        if step.bind == Bind::All {
            let me = step
                .plan
                .plan
                .rank(rank)
                .ok_or_else(|| format!("rank {rank} is not in this node's plan"))?;
            let cpus = parse_cpus(&me.cpus);
            if !cpus.is_empty() && ffi::bind_cpus(&cpus)?.is_empty() {
                // The plan's CPUs are not this task's to use (a cgroup, or a topology file
                // that is not this machine's): leave the binding Slurm made.
                ffi::info(&format!(
                    "rank {rank}: CPUs {} are not available to this task; not binding",
                    me.cpus
                ));
            }
        }
        Ok(())
    })
}

fn parse_cpus(list: &str) -> Vec<usize> {
    list.split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            match (low.parse::<usize>(), high.parse::<usize>()) {
                (Ok(low), Ok(high)) if low <= high => (low..=high).collect(),
                _ => Vec::new(),
            }
        })
        .collect()
}

/// `slurm_spank_task_post_fork` (slurmstepd, after each task is forked): once rank 0 has its
/// copy of the store's socket, slurmstepd closes its own, so the port is freed when rank 0
/// ends.
#[allow(unsafe_code)] // an exported SPANK symbol
#[unsafe(no_mangle)]
pub extern "C" fn slurm_spank_task_post_fork(
    spank: Spank,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    guarded("task_post_fork", || {
        if STEP.get().is_some() && ffi::get_u32(spank, item::S_TASK_GLOBAL_ID)? == 0 {
            STORE_SOCKET
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        Ok(())
    })
}

/// `slurm_spank_task_exit` (slurmstepd, as each task ends): tells cohortd, which tells the
/// step's other nodes when the task failed.
#[allow(unsafe_code)] // an exported SPANK symbol
#[unsafe(no_mangle)]
pub extern "C" fn slurm_spank_task_exit(
    spank: Spank,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    guarded("task_exit", || {
        let Some(step) = STEP.get() else {
            return Ok(());
        };
        let exit = cohort_proto::daemon::TaskExit {
            job_id: step.key.0,
            step_id: step.key.1,
            attempt: step.key.2,
            rank: ffi::get_u32(spank, item::S_TASK_GLOBAL_ID)?,
            status: ffi::get_i32(spank, item::S_TASK_EXIT_STATUS)?,
            uid: step.uid,
        };
        // A daemon that cannot be told is worth a log line, not a failed step.
        if let Err(e) = client::report_exit(&step.socket, &exit) {
            ffi::info(&format!(
                "rank {}: could not report its exit: {e}",
                exit.rank
            ));
        }
        let end = record::TaskEnd::of(exit.status);
        if end == record::TaskEnd::AtWarning {
            STOPPED_AT_WARNING.store(true, Ordering::Relaxed);
        }
        if let (Some(recording), false) = (&step.recording, end == record::TaskEnd::Succeeded) {
            let result = record::task_ended(
                recording,
                step.key.0,
                step.key.1,
                step.key.2,
                (step.uid, step.gid),
                exit.rank,
                &step.node,
                exit.status,
                step.timeout,
            );
            if let Err(e) = result {
                ffi::info(&format!("could not record the failure in the catalog: {e}"));
            }
        }
        Ok(())
    })
}

/// Whether this node hosts rank 0.
fn rank0_here(step: &StepData) -> bool {
    step.plan.plan.rank(0).is_some_and(|r| r.host == step.node)
}

/// After rank 0 stopped at the time-limit warning: requeues the job when it asked
/// (`--cohort-requeue`) and may be requeued once more, and records what was done.
fn requeue_after_warning(step: &StepData) {
    let Some(limit) = step.requeue else {
        return;
    };
    let (job, _, launch) = step.key;
    let outcome = requeue::allowed(launch, limit)
        .and_then(|n| requeue::requeue(job, step.timeout).map(|()| n));
    match &outcome {
        Ok(n) => ffi::info(&format!(
            "job {job} stopped at the time-limit warning: requeued ({n} of at most {limit})"
        )),
        Err(why) => ffi::error(&format!("job {job} not requeued: {why}")),
    }
    if let Some(recording) = &step.recording {
        if let Err(e) =
            record::requeue_noted(recording, job, step.key.1, (step.uid, step.gid), &outcome)
        {
            ffi::info(&format!("could not record the requeue in the catalog: {e}"));
        }
    }
}

/// The node's GPU series of the step into its trial (best effort: a line in slurmd's log when
/// they cannot be taken or written).
fn record_system_metrics(step: &StepData, recording: &record::Recording) {
    let result = client::step_gpus(&step.socket, step.key).and_then(|series| {
        record::system_metrics(
            recording,
            step.key.0,
            step.key.1,
            step.key.2,
            (step.uid, step.gid),
            &step.node,
            &series,
            step.timeout,
        )
    });
    if let Err(e) = result {
        ffi::info(&format!(
            "could not record the step's GPU metrics in the catalog: {e}"
        ));
    }
}

/// `slurm_spank_exit`: the node's GPU series into the step's trial, its end recorded on rank
/// 0's node, the requeue after a warning; says so when the step ran through Cohort.
#[allow(unsafe_code)] // an exported SPANK symbol
#[unsafe(no_mangle)]
pub extern "C" fn slurm_spank_exit(
    _spank: Spank,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    guarded("exit", || {
        if let Some(step) = STEP.get() {
            if let Some(recording) = &step.recording {
                record_system_metrics(step, recording);
            }
            if let Some(recording) = step.recording.as_ref().filter(|r| r.rank0_here) {
                let result =
                    record::step_ended(recording, step.key.0, step.key.1, (step.uid, step.gid));
                if let Err(e) = result {
                    ffi::info(&format!(
                        "could not record the step's end in the catalog: {e}"
                    ));
                }
            }
            if rank0_here(step) && STOPPED_AT_WARNING.load(Ordering::Relaxed) {
                requeue_after_warning(step);
            }
            let _ = std::fs::remove_file(&step.plan_path);
            MASTER_PORT_HOLD
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            ffi::info("step done");
        }
        Ok(())
    })
}
