//! The gang start: every node of a step joins; the leader (the step's first node) waits for all
//! followers' summaries until its deadline, computes one plan, and sends it to all, or fails the
//! step on every node with one message naming the missing nodes.
//!
//! All gang state has one owner: the actor task in `run`, driven by the closed `GangCommand`
//! enum. Followers talk to the leader from their own tasks (they hold no shared state), and
//! peer connections forward what they receive to the actor and wait for its answer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort_proto::daemon::{ErrorCode, JoinRequest, StepPlan, TaskExit};
use cohort_proto::peer::{PeerMsg, Summary};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::peer;
use crate::planning::{assemble, NodePart};
pub(crate) use crate::planning::{granted_gpus, place_ranks};
use crate::topo::Snapshot;

/// Why a node's part in a gang start failed; each kind has its own code on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JoinError {
    /// The gang failed (nodes missing, the leader unreachable, an abort); the text names the
    /// nodes concerned.
    #[error("{0}")]
    Failed(String),
    /// This launch of the step was already decided; a second join of it is stale.
    #[error("step {}.{} attempt {} was already started", .0.0, .0.1, .0.2)]
    AlreadyStarted(StepKey),
    /// A newer join of the same step on this node replaced this one.
    #[error("superseded by a newer join of the same step")]
    Superseded,
    /// Too many steps are starting on this node at once.
    #[error("{0} steps are already starting on this node, the most it holds at once; try again")]
    Busy(usize),
    /// A bug while handling this step; the daemon goes on serving the others.
    #[error("internal error in cohortd while starting the step (a bug; see cohortd's log): {0}")]
    Internal(String),
}

impl JoinError {
    /// The stable code of the local API for this error.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            JoinError::Failed(_) | JoinError::AlreadyStarted(_) | JoinError::Superseded => {
                ErrorCode::GangFailed
            }
            JoinError::Busy(_) => ErrorCode::Busy,
            JoinError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<String> for JoinError {
    fn from(message: String) -> JoinError {
        JoinError::Failed(message)
    }
}

impl From<&str> for JoinError {
    fn from(message: &str) -> JoinError {
        JoinError::Failed(message.to_owned())
    }
}

/// What the leader's own join is answered with.
pub(crate) type JoinAnswer = Result<StepPlan, JoinError>;

/// What the actor is asked to do.
#[derive(Debug)]
pub(crate) enum GangCommand {
    /// The leader node's own join (from its plugin).
    LeaderJoin {
        request: JoinRequest,
        respond: oneshot::Sender<JoinAnswer>,
    },
    /// A follower's summary, with the addresses of the connection it came on.
    Summary {
        summary: Summary,
        peer_ip: IpAddr,
        local_ip: IpAddr,
        respond: oneshot::Sender<PeerMsg>,
    },
    /// A follower's step started (for the records).
    Started {
        key: StepKey,
        nodes: Vec<String>,
        ranks: usize,
        uid: u32,
        /// This node's ranks' GPUs: index on the node, number within the step.
        gpus: Vec<(u32, u32)>,
        /// This node's ranks.
        local: usize,
    },
    /// The process that joined a started step here (slurmstepd), to watch: if it goes away
    /// before every local task's end was reported, the step counts as ended.
    Watch { key: StepKey, pid: i32 },
    /// A local task ended.
    TaskExit { exit: TaskExit },
    /// Another node says one of its tasks failed.
    PeerTaskFailed {
        key: StepKey,
        rank: u32,
        node: String,
        status: i32,
    },
    /// One line per known step, for `cohort status`: every step for root, a user's own steps
    /// for a user.
    ListSteps {
        uid: Option<u32>,
        respond: oneshot::Sender<Vec<String>>,
    },
    /// The steps running on this node with their owner and this node's GPUs, for the GPU
    /// accounting.
    RunningGpus {
        respond: oneshot::Sender<Vec<RunningStep>>,
    },
    /// Check deadlines.
    Tick,
    /// Makes the actor panic while handling a step (tests of the supervision only).
    #[cfg(test)]
    Panic { key: StepKey },
}

impl GangCommand {
    /// The step a command concerns, if it concerns one.
    fn step(&self) -> Option<StepKey> {
        match self {
            GangCommand::LeaderJoin { request, .. } => {
                Some((request.job_id, request.step_id, request.attempt))
            }
            GangCommand::Summary { summary, .. } => {
                Some((summary.job_id, summary.step_id, summary.attempt))
            }
            GangCommand::Started { key, .. }
            | GangCommand::PeerTaskFailed { key, .. }
            | GangCommand::Watch { key, .. } => Some(*key),
            GangCommand::TaskExit { exit } => Some((exit.job_id, exit.step_id, exit.attempt)),
            #[cfg(test)]
            GangCommand::Panic { key } => Some(*key),
            GangCommand::ListSteps { .. } | GangCommand::RunningGpus { .. } | GangCommand::Tick => {
                None
            }
        }
    }
}

/// What a node remembers of a started step.
#[derive(Debug)]
struct StepRecord {
    uid: u32,
    nodes: Vec<String>,
    ranks: usize,
    /// This node's ranks' GPUs: index on the node, number within the step.
    gpus: Vec<(u32, u32)>,
    /// This node's ranks.
    local: usize,
    ended: usize,
    failed: Vec<(u32, String, i32)>,
    /// The process that joined (slurmstepd) and its start time, while watched.
    stepd: Option<(i32, u64)>,
    /// Whether that process went away before every local task's end was reported.
    lost: bool,
}

/// How often the processes that joined running steps are looked for.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// A process's start time (clock ticks after boot, `/proc/PID/stat` field 22), which tells it
/// from a later process given the same pid; `None` when there is no such process.
fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// A running step, for the GPU accounting: its key, its owner, and this node's GPUs (index on
/// the node, number within the step).
pub(crate) type RunningStep = (StepKey, u32, Vec<(u32, u32)>);

/// The lines of the steps `uid` may see (`None`: every step), from the gang actor; none when
/// it is gone.
pub(crate) async fn list_steps(gang: &mpsc::Sender<GangCommand>, uid: Option<u32>) -> Vec<String> {
    let (respond, answer) = oneshot::channel();
    if gang
        .send(GangCommand::ListSteps { uid, respond })
        .await
        .is_err()
    {
        return Vec::new();
    }
    answer.await.unwrap_or_default()
}

/// Steps remembered for `cohort status`.
const RECORDS: usize = 256;

/// What every gang task needs to know about this node.
#[derive(Debug, Clone)]
pub(crate) struct NodeContext {
    pub(crate) node: String,
    pub(crate) topology: watch::Receiver<Option<Arc<Snapshot>>>,
    pub(crate) key: Arc<Vec<u8>>,
    pub(crate) peer_nodes: BTreeMap<String, SocketAddr>,
    pub(crate) peer_port: u16,
}

/// How long an authenticated peer may take to send its message after the handshake.
const PEER_MESSAGE_LIMIT: Duration = Duration::from_secs(30);
/// Summaries that arrive before the leader's own join wait at most this long.
const ORPHAN_LIMIT: Duration = Duration::from_secs(120);
/// Completed steps remembered, so late or duplicate messages are recognised as stale.
const FINISHED_MEMORY: usize = 4096;
/// Steps starting at once on one node (as leader); more are refused as busy.
pub(crate) const MAX_STARTING: usize = 1024;

/// A step launch: job, step, attempt.
pub(crate) type StepKey = (u32, u32, u32);

/// The leader's own join: the request, its deadline, where the answer goes.
type LeaderJoin = (JoinRequest, Instant, oneshot::Sender<JoinAnswer>);
/// A follower's summary, its address, where the answer goes.
type FollowerJoin = (Summary, IpAddr, oneshot::Sender<PeerMsg>);

#[derive(Debug)]
struct Gang {
    generation: u64,
    created: Instant,
    leader: Option<LeaderJoin>,
    followers: BTreeMap<u32, FollowerJoin>,
    local_ip: Option<IpAddr>,
}

impl Gang {
    fn new(key: StepKey) -> Gang {
        Gang {
            generation: u64::from(key.2),
            created: Instant::now(),
            leader: None,
            followers: BTreeMap::new(),
            local_ip: None,
        }
    }
}

fn free_port(ip: IpAddr) -> Option<u16> {
    std::net::TcpListener::bind((ip, 0))
        .or_else(|_| std::net::TcpListener::bind(("0.0.0.0", 0)))
        .ok()?
        .local_addr()
        .ok()
        .map(|a| a.port())
}

fn secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for the step secret: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn topology_of(ctx: &NodeContext) -> Option<Arc<Snapshot>> {
    ctx.topology.borrow().clone()
}

/// This node's part of a join: its ranks placed on the current topology snapshot's hardware,
/// the GPUs granted resolved there, reached at `ip` (and the interface holding it), with the
/// snapshot's exported NCCL topology file.
fn place_own_ranks(
    ctx: &NodeContext,
    request: &JoinRequest,
    ip: IpAddr,
) -> Result<Vec<cohort_proto::plan::RankPlan>, String> {
    let snapshot = topology_of(ctx);
    let topology = snapshot.as_ref().map(|s| s.topology.as_ref());
    let nccl_topo = snapshot
        .as_ref()
        .and_then(|s| s.nccl_topo.as_ref())
        .map(|path| path.display().to_string());
    place_ranks(
        topology,
        &ctx.node,
        &request.ranks,
        &granted_gpus(topology, &request.gpus, &request.gpu_ids)?,
        (ip, cohort_topology::interface_of(ip).as_deref()),
        nccl_topo.as_deref(),
    )
}

/// Runs the actor until every sender is gone.
///
/// Each command, and each step's decision, is handled under `catch_unwind`: a bug while
/// handling one step fails that step (its nodes get an internal error) and the actor goes on
/// serving every other step.
pub(crate) async fn run(ctx: NodeContext, mut commands: mpsc::Receiver<GangCommand>) {
    let mut actor = Actor {
        ctx,
        gangs: BTreeMap::new(),
        finished: BTreeSet::new(),
        records: BTreeMap::new(),
        watched: Instant::now(),
    };
    while let Some(command) = commands.recv().await {
        let step = command.step();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| actor.handle(command))) {
            actor.abandon(step, &panic_text(panic.as_ref()));
        }
        // Complete or fail whatever can be decided now.
        let now = Instant::now();
        let keys: Vec<StepKey> = actor.gangs.keys().copied().collect();
        for key in keys {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| actor.decide(key, now))) {
                actor.abandon(Some(key), &panic_text(panic.as_ref()));
            }
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// The actor's state: steps starting, steps decided, records of started steps.
struct Actor {
    ctx: NodeContext,
    gangs: BTreeMap<StepKey, Gang>,
    finished: BTreeSet<StepKey>,
    records: BTreeMap<StepKey, StepRecord>,
    /// When the watched processes were last looked for.
    watched: Instant,
}

impl Actor {
    /// After a panic while handling `step`: the step fails on every node waiting for it, with
    /// an internal error, and is remembered as decided so its late messages are stale.
    fn abandon(&mut self, step: Option<StepKey>, panic: &str) {
        tracing::error!(?step, "bug while handling a step: {panic}");
        let Some(key) = step else { return };
        if let Some(gang) = self.gangs.remove(&key) {
            finish(gang, Outcome::Fail(JoinError::Internal(panic.to_owned())));
        }
        self.mark_finished(key);
    }

    fn mark_finished(&mut self, key: StepKey) {
        self.finished.insert(key);
        while self.finished.len() > FINISHED_MEMORY {
            self.finished.pop_first();
        }
    }

    /// A new step's gang, unless this node holds as many starting steps as it may.
    fn gang(&mut self, key: StepKey) -> Result<&mut Gang, JoinError> {
        if !self.gangs.contains_key(&key) && self.gangs.len() >= MAX_STARTING {
            return Err(JoinError::Busy(self.gangs.len()));
        }
        Ok(self.gangs.entry(key).or_insert_with(|| Gang::new(key)))
    }

    fn handle(&mut self, command: GangCommand) {
        match command {
            GangCommand::Started {
                key,
                nodes,
                ranks,
                uid,
                gpus,
                local,
            } => remember(
                &mut self.records,
                key,
                StepRecord::new(uid, nodes, ranks, gpus, local),
            ),
            GangCommand::RunningGpus { respond } => {
                let running = self
                    .records
                    .iter()
                    // A step with a failed rank elsewhere may still hold this node's GPUs.
                    .filter(|(_, r)| r.ended < r.local && !r.gpus.is_empty())
                    .map(|(key, r)| (*key, r.uid, r.gpus.clone()))
                    .collect();
                let _ = respond.send(running);
            }
            GangCommand::TaskExit { exit } => self.task_exit(&exit),
            GangCommand::PeerTaskFailed {
                key,
                rank,
                node,
                status,
            } => {
                if let Some(record) = self.records.get_mut(&key) {
                    info!(job = key.0, step = key.1, rank, node = %node, status, "a task of this step failed on another node");
                    record.failed.push((rank, node, status));
                }
            }
            GangCommand::ListSteps { uid, respond } => {
                let lines = self
                    .records
                    .iter()
                    .filter(|(_, record)| uid.is_none_or(|uid| uid == record.uid))
                    .map(|(key, record)| describe(*key, record))
                    .collect();
                let _ = respond.send(lines);
            }
            GangCommand::LeaderJoin { request, respond } => {
                let key = (request.job_id, request.step_id, request.attempt);
                if self.finished.contains(&key) {
                    let _ = respond.send(Err(JoinError::AlreadyStarted(key)));
                    return;
                }
                let gang = match self.gang(key) {
                    Ok(gang) => gang,
                    Err(e) => {
                        let _ = respond.send(Err(e));
                        return;
                    }
                };
                if let Some((_, _, old)) = gang.leader.take() {
                    let _ = old.send(Err(JoinError::Superseded));
                }
                let deadline = Instant::now() + Duration::from_millis(request.timeout_ms);
                info!(
                    job = key.0,
                    step = key.1,
                    attempt = key.2,
                    nodes = request.nodes.len(),
                    "leading a gang start"
                );
                gang.leader = Some((request, deadline, respond));
            }
            GangCommand::Summary {
                summary,
                peer_ip,
                local_ip,
                respond,
            } => {
                let key = (summary.job_id, summary.step_id, summary.attempt);
                let abort = |reason: String| PeerMsg::Abort {
                    job_id: key.0,
                    step_id: key.1,
                    reason,
                };
                if self.finished.contains(&key) {
                    let _ = respond.send(abort(format!(
                        "step {}.{} attempt {} already started; this message came too late",
                        key.0, key.1, key.2
                    )));
                    return;
                }
                let gang = match self.gang(key) {
                    Ok(gang) => gang,
                    Err(e) => {
                        let _ = respond.send(abort(format!("the leader: {e}")));
                        return;
                    }
                };
                gang.local_ip.get_or_insert(local_ip);
                if let Some((_, _, old)) = gang.followers.remove(&summary.node_index) {
                    let _ = old.send(abort(
                        "superseded by a newer message from the same node".into(),
                    ));
                }
                gang.followers
                    .insert(summary.node_index, (summary, peer_ip, respond));
            }
            GangCommand::Watch { key, pid } => {
                if let (Some(record), Some(start)) =
                    (self.records.get_mut(&key), process_start(pid))
                {
                    record.stepd = Some((pid, start));
                }
            }
            GangCommand::Tick => {
                if self.watched.elapsed() >= WATCH_EVERY {
                    self.watched = Instant::now();
                    self.look_for_lost_steps();
                }
            }
            #[cfg(test)]
            GangCommand::Panic { key } => panic!("a test's panic while handling step {key:?}"),
        }
    }

    /// Running steps whose slurmstepd went away without reporting every local task's end
    /// (killed, or its node's slurmd restarted uncleanly) count as ended, so their GPUs are no
    /// longer shown held nor flagged idle.
    fn look_for_lost_steps(&mut self) {
        for ((job, step, attempt), record) in &mut self.records {
            let Some((pid, start)) = record.stepd else {
                continue;
            };
            if record.ended >= record.local || process_start(pid) == Some(start) {
                continue;
            }
            warn!(
                "step {job}.{step} attempt {attempt}: slurmstepd (pid {pid}) is gone, {} of {} local task end(s) unreported; the step counts as ended",
                record.local - record.ended,
                record.local
            );
            record.lost = true;
            record.ended = record.local;
        }
    }

    fn task_exit(&mut self, exit: &TaskExit) {
        let key = (exit.job_id, exit.step_id, exit.attempt);
        let Some(record) = self.records.get_mut(&key) else {
            return;
        };
        record.ended += 1;
        if exit.status == 0 {
            return;
        }
        record
            .failed
            .push((exit.rank, self.ctx.node.clone(), exit.status));
        warn!(
            job = key.0,
            step = key.1,
            rank = exit.rank,
            status = exit.status,
            "task failed; telling the step's other nodes"
        );
        for node in record.nodes.iter().filter(|n| **n != self.ctx.node) {
            tokio::spawn(tell_task_failed(
                self.ctx.clone(),
                node.clone(),
                key,
                exit.rank,
                exit.status,
            ));
        }
    }

    /// Completes or fails one step if it can be decided now.
    fn decide(&mut self, key: StepKey, now: Instant) {
        let Some(gang) = self.gangs.get_mut(&key) else {
            return;
        };
        let Some(outcome) = decide(&self.ctx, gang, now) else {
            return;
        };
        if let (Outcome::Plan(plan), Some((request, _, _))) = (&outcome, &gang.leader) {
            let (gpus, local) = local_gpus(&plan.plan, &self.ctx.node);
            remember(
                &mut self.records,
                key,
                StepRecord::new(
                    request.uid,
                    request.nodes.clone(),
                    plan.plan.world_size() as usize,
                    gpus,
                    local,
                ),
            );
        }
        if let Some(gang) = self.gangs.remove(&key) {
            finish(gang, outcome);
        }
        self.mark_finished(key);
    }
}

/// One line of `cohort status` for a step.
fn describe((job, step, attempt): StepKey, record: &StepRecord) -> String {
    let state = if let (true, Some((pid, _))) = (record.lost, record.stepd) {
        format!("ended: its slurmstepd (pid {pid}) went away without reporting its tasks' ends")
    } else if record.failed.is_empty() {
        if record.ended > 0 {
            format!("{} local task(s) ended", record.ended)
        } else {
            "running".to_owned()
        }
    } else {
        let failures: Vec<String> = record
            .failed
            .iter()
            .map(|(rank, node, status)| format!("rank {rank} on {node} (status {status})"))
            .collect();
        format!("failed: {}", failures.join(", "))
    };
    format!(
        "{job}.{step} attempt {attempt}: {} ranks on {} nodes, {state}",
        record.ranks,
        record.nodes.len()
    )
}

impl StepRecord {
    fn new(
        uid: u32,
        nodes: Vec<String>,
        ranks: usize,
        gpus: Vec<(u32, u32)>,
        local: usize,
    ) -> Self {
        StepRecord {
            uid,
            nodes,
            ranks,
            gpus,
            local,
            ended: 0,
            failed: Vec::new(),
            stepd: None,
            lost: false,
        }
    }
}

/// The GPUs of `node`'s ranks in `plan` (each once, with its number within the step) and how
/// many ranks it runs.
pub(crate) fn local_gpus(plan: &cohort_proto::plan::Plan, node: &str) -> (Vec<(u32, u32)>, usize) {
    let mine: Vec<&cohort_proto::plan::RankPlan> =
        plan.ranks.iter().filter(|r| r.host == node).collect();
    let mut gpus: BTreeMap<u32, u32> = BTreeMap::new();
    for r in &mine {
        if let Some(gpu) = r.gpu {
            // A leader of an earlier release numbers none: the index stands in.
            gpus.entry(gpu).or_insert(r.gpu_number.unwrap_or(gpu));
        }
    }
    (gpus.into_iter().collect(), mine.len())
}

fn remember(records: &mut BTreeMap<StepKey, StepRecord>, key: StepKey, record: StepRecord) {
    records.insert(key, record);
    while records.len() > RECORDS {
        records.pop_first();
    }
}

/// Tells another node's daemon that a task of a shared step failed here (best effort: the
/// collectives detect a dead rank by themselves; this is for the records and `cohort status`).
async fn tell_task_failed(ctx: NodeContext, node: String, key: StepKey, rank: u32, status: i32) {
    let result = async {
        let address = resolve(&ctx, &node).await?;
        let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        peer::handshake(&mut stream, &ctx.key, true, &node, Duration::from_secs(5)).await?;
        peer::send(
            &mut stream,
            &PeerMsg::TaskFailed {
                job_id: key.0,
                step_id: key.1,
                attempt: key.2,
                rank,
                node: ctx.node.clone(),
                status,
            },
        )
        .await
    }
    .await;
    if let Err(e) = result {
        warn!("could not tell {node} that rank {rank} failed: {e}");
    }
}

/// How long the last gang start this process led took to gather its nodes' joins (from the
/// leader's own join) and to build the plan: in the debug log, and printed by `--bench-gang`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phases {
    pub(crate) nodes: usize,
    pub(crate) joins: Duration,
    pub(crate) planning: Duration,
}

/// The phases of the last gang start decided with a plan.
pub(crate) static LAST_PHASES: std::sync::Mutex<Option<Phases>> = std::sync::Mutex::new(None);

/// The end of a gang: a plan for everyone, or a reason for everyone.
enum Outcome {
    Plan(Box<StepPlan>),
    Fail(JoinError),
}

fn decide(ctx: &NodeContext, gang: &mut Gang, now: Instant) -> Option<Outcome> {
    let Some((request, deadline, _)) = &gang.leader else {
        return (now.duration_since(gang.created) > ORPHAN_LIMIT)
            .then(|| Outcome::Fail("the leader node never joined the step".into()));
    };
    let nodes = u32::try_from(request.nodes.len()).unwrap_or(u32::MAX);
    // Counted before compared: the comparison is linear in the nodes, and runs as each
    // summary arrives only once as many are there as expected.
    let complete = gang.followers.len() + 1 >= request.nodes.len()
        && (1..nodes).all(|i| gang.followers.contains_key(&i));
    if complete {
        let joined = Instant::now();
        let built = build_plan(ctx, gang);
        let phases = Phases {
            nodes: request.nodes.len(),
            joins: joined.saturating_duration_since(
                deadline
                    .checked_sub(Duration::from_millis(request.timeout_ms))
                    .unwrap_or(gang.created),
            ),
            planning: joined.elapsed(),
        };
        debug!(
            nodes = phases.nodes,
            joins_ms = phases.joins.as_millis(),
            planning_ms = phases.planning.as_millis(),
            "every node joined; plan built"
        );
        *LAST_PHASES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(phases);
        return Some(match built {
            Ok(plan) => Outcome::Plan(Box::new(plan)),
            Err(e) => Outcome::Fail(e.into()),
        });
    }
    if now >= *deadline {
        let missing: Vec<&str> = (1..nodes)
            .filter(|i| !gang.followers.contains_key(i))
            .filter_map(|i| request.nodes.get(i as usize).map(String::as_str))
            .collect();
        return Some(Outcome::Fail(JoinError::Failed(format!(
            "nodes missing at the deadline ({:.1} s): {}",
            Duration::from_millis(request.timeout_ms).as_secs_f64(),
            missing.join(", ")
        ))));
    }
    None
}

fn build_plan(ctx: &NodeContext, gang: &Gang) -> Result<StepPlan, String> {
    let Some((request, _, _)) = &gang.leader else {
        return Err("no leader join".into());
    };
    let own_ip = gang.local_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let mut parts = vec![NodePart {
        node: ctx.node.clone(),
        topology_addr: request.topology_addr.clone(),
        ranks: place_own_ranks(ctx, request, own_ip)?,
    }];
    for (summary, peer_ip, _) in gang.followers.values() {
        let mut ranks = summary.ranks.clone();
        for rank in &mut ranks {
            if rank.address.is_empty() {
                rank.address = peer_ip.to_string();
            }
        }
        parts.push(NodePart {
            node: summary.node.clone(),
            topology_addr: summary.topology_addr.clone(),
            ranks,
        });
    }
    let plan = assemble(parts, request.world_size)?;
    let rank0 = plan.ranks.first().ok_or("the step has no ranks")?;
    let store_port = if request.ranks.contains(&0) {
        request
            .store_port
            .or_else(|| free_port(own_ip))
            .ok_or("no free port for the rendezvous store")?
    } else {
        gang.followers
            .values()
            .find_map(|(s, _, _)| s.store_port)
            .ok_or("the node of rank 0 sent no store port")?
    };
    Ok(StepPlan {
        generation: gang.generation,
        store: format!("{}:{store_port}", rank0.address),
        secret: secret()?,
        plan,
    })
}

fn finish(gang: Gang, outcome: Outcome) {
    let (job_id, step_id) = gang
        .leader
        .as_ref()
        .map_or((0, 0), |(r, _, _)| (r.job_id, r.step_id));
    match outcome {
        Outcome::Plan(plan) => {
            info!(
                job = job_id,
                step = step_id,
                generation = plan.generation,
                "plan sent to every node"
            );
            // Every node, the leader's own included, gets its share of the plan, all made in
            // one pass: what a node receives does not grow with the nodes. The node of rank 0
            // also gets the ring order, which rank 0 publishes in the rendezvous store for the
            // others.
            let rank0_host = plan.plan.rank(0).map(|r| r.host.clone());
            let mut shares = plan.plan.shares();
            let mut part_of = |node: &str| {
                let mut share = shares.remove(node).unwrap_or_else(|| plan.plan.share(node));
                if rank0_host.as_deref() == Some(node) {
                    share.rings.clone_from(&plan.plan.rings);
                }
                StepPlan {
                    generation: plan.generation,
                    store: plan.store.clone(),
                    secret: plan.secret.clone(),
                    plan: share,
                }
            };
            for (summary, _, respond) in gang.followers.into_values() {
                let _ = respond.send(PeerMsg::Plan(Box::new(part_of(&summary.node))));
            }
            if let Some((request, _, respond)) = gang.leader {
                let own = part_of(request.nodes.first().map_or("", String::as_str));
                let _ = respond.send(Ok(own));
            }
        }
        Outcome::Fail(reason) => {
            warn!(job = job_id, step = step_id, "gang start failed: {reason}");
            for (summary, _, respond) in gang.followers.into_values() {
                let _ = respond.send(PeerMsg::Abort {
                    job_id: summary.job_id,
                    step_id: summary.step_id,
                    reason: reason.to_string(),
                });
            }
            if let Some((_, _, respond)) = gang.leader {
                let _ = respond.send(Err(reason));
            }
        }
    }
}

/// Binds the peer listener with a deep accept queue: at a step's start every follower of a
/// large job connects to the leader at once, and a full queue costs a follower a one-second SYN
/// retransmission.
pub(crate) fn peer_listener(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}

/// Resolves a node's daemon: the configured map first, then the node name on the peer port.
pub(crate) async fn resolve(ctx: &NodeContext, node: &str) -> Result<SocketAddr, String> {
    if let Some(address) = ctx.peer_nodes.get(node) {
        return Ok(*address);
    }
    tokio::net::lookup_host((node, ctx.peer_port))
        .await
        .map_err(|e| format!("cannot resolve node {node}: {e}"))?
        .next()
        .ok_or_else(|| format!("node {node} resolves to no address"))
}

/// A follower's side: send the summary to the leader, wait for the plan or the abort.
pub(crate) async fn follow(ctx: NodeContext, request: JoinRequest) -> Result<StepPlan, String> {
    let leader = request
        .nodes
        .first()
        .cloned()
        .ok_or("the step has no nodes")?;
    let limit = Duration::from_millis(request.timeout_ms);
    let deadline = tokio::time::Instant::now() + limit;
    let address = resolve(&ctx, &leader).await?;
    let mut last_error = String::from("no attempt");
    let mut stream = loop {
        match tokio::time::timeout_at(deadline, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => break stream,
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => {
                return Err(format!(
                    "cannot reach the leader {leader} ({address}) before the deadline: {last_error}"
                ))
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    peer::handshake(&mut stream, &ctx.key, true, &leader, limit)
        .await
        .map_err(|e| format!("leader {leader} ({address}): {e}"))?;
    let local_ip = stream
        .local_addr()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let ranks = place_own_ranks(&ctx, &request, local_ip)?;
    let summary = Summary {
        job_id: request.job_id,
        step_id: request.step_id,
        attempt: request.attempt,
        node: ctx.node.clone(),
        node_index: request.node_index,
        ranks,
        topology_addr: request.topology_addr.clone(),
        store_port: if request.ranks.contains(&0) {
            request.store_port.or_else(|| free_port(local_ip))
        } else {
            None
        },
        timeout_ms: request.timeout_ms,
    };
    peer::send(&mut stream, &PeerMsg::Summary(summary))
        .await
        .map_err(|e| format!("leader {leader}: {e}"))?;
    // The leader decides at its own deadline; allow it a moment to say so.
    let answer = tokio::time::timeout_at(
        deadline + Duration::from_secs(2),
        peer::receive::<PeerMsg>(&mut stream),
    )
    .await
    .map_err(|_| format!("the leader {leader} did not answer before the deadline"))?
    .map_err(|e| format!("leader {leader}: {e}"))?;
    match answer {
        PeerMsg::Plan(plan) => Ok(*plan),
        PeerMsg::Abort { reason, .. } => Err(reason),
        PeerMsg::Summary(_)
        | PeerMsg::TaskFailed { .. }
        | PeerMsg::TopRequest { .. }
        | PeerMsg::Top(_) => Err(format!("the leader {leader} answered out of turn")),
    }
}

/// Serves one incoming peer connection: authenticate, take a summary, wait for the actor.
/// A `cohort top` request is not the gang's: the authenticated stream and the asker's uid
/// are handed back for `top.rs` to answer.
pub(crate) async fn serve_peer(
    mut stream: TcpStream,
    key: Arc<Vec<u8>>,
    node: Arc<str>,
    commands: mpsc::Sender<GangCommand>,
) -> Option<(TcpStream, Option<u32>)> {
    let peer_address = stream.peer_addr().ok();
    let who = peer_address.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    if let Err(e) = peer::handshake(&mut stream, &key, false, &node, Duration::from_secs(10)).await
    {
        warn!("refused peer {who}: {e}");
        return None;
    }
    // An authenticated peer sends its message at once; one that does not is not waited for.
    let message = tokio::time::timeout(PEER_MESSAGE_LIMIT, peer::receive::<PeerMsg>(&mut stream))
        .await
        .unwrap_or_else(|_| Err("sent nothing after the handshake".to_owned()));
    let summary = match message {
        Ok(PeerMsg::Summary(summary)) => {
            if let Err(e) = summary.validate() {
                warn!("peer {who} sent an invalid summary: {e}");
                let _ = peer::send(
                    &mut stream,
                    &PeerMsg::Abort {
                        job_id: summary.job_id,
                        step_id: summary.step_id,
                        reason: format!("the leader refused this node's summary: {e}"),
                    },
                )
                .await;
                return None;
            }
            summary
        }
        Ok(PeerMsg::TaskFailed {
            job_id,
            step_id,
            attempt,
            rank,
            node,
            status,
        }) => {
            let _ = commands
                .send(GangCommand::PeerTaskFailed {
                    key: (job_id, step_id, attempt),
                    rank,
                    node,
                    status,
                })
                .await;
            return None;
        }
        Ok(PeerMsg::TopRequest { asker }) => return Some((stream, asker)),
        Ok(other) => {
            warn!("peer {who} sent {other:?} instead of a summary");
            return None;
        }
        Err(e) => {
            warn!("peer {who}: {e}");
            return None;
        }
    };
    let limit = Duration::from_millis(summary.timeout_ms) + ORPHAN_LIMIT;
    let (respond, answer) = oneshot::channel();
    let command = GangCommand::Summary {
        summary,
        peer_ip: peer_address.map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip()),
        local_ip: stream
            .local_addr()
            .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip()),
        respond,
    };
    if commands.send(command).await.is_err() {
        return None;
    }
    if let Ok(Ok(answer)) = tokio::time::timeout(limit, answer).await {
        if let Err(e) = peer::send(&mut stream, &answer).await {
            warn!("peer {who}: {e}");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> NodeContext {
        NodeContext {
            node: "n0".into(),
            topology: watch::channel(None).1,
            key: Arc::new(vec![7; 32]),
            peer_nodes: BTreeMap::new(),
            peer_port: 1,
        }
    }

    fn join(job: u32, nodes: usize) -> JoinRequest {
        JoinRequest {
            job_id: job,
            step_id: 0,
            attempt: 0,
            nodes: (0..nodes).map(|n| format!("n{n}")).collect(),
            node_index: 0,
            ranks: vec![0],
            world_size: u32::try_from(nodes).unwrap(),
            gpus: vec![],
            gpu_ids: Vec::new(),
            topology_addr: None,
            timeout_ms: 60_000,
            store_port: None,
            uid: 1000,
        }
    }

    async fn lead(
        commands: &mpsc::Sender<GangCommand>,
        request: JoinRequest,
    ) -> oneshot::Receiver<JoinAnswer> {
        let (respond, answer) = oneshot::channel();
        commands
            .send(GangCommand::LeaderJoin { request, respond })
            .await
            .unwrap();
        answer
    }

    #[tokio::test]
    async fn a_panic_fails_only_its_own_step_and_the_actor_goes_on() {
        let (commands, receiver) = mpsc::channel(16);
        tokio::spawn(run(context(), receiver));
        // Step 1 waits for a second node; a bug while handling it fails it, with an internal
        // error, on the node waiting for it.
        let waiting = lead(&commands, join(1, 2)).await;
        commands
            .send(GangCommand::Panic { key: (1, 0, 0) })
            .await
            .unwrap();
        let answer = waiting.await.unwrap().unwrap_err();
        assert!(matches!(answer, JoinError::Internal(_)), "{answer:?}");
        assert_eq!(answer.code(), ErrorCode::Internal);
        // The next step starts, and a late join of the failed one is stale.
        let plan = lead(&commands, join(2, 1)).await.await.unwrap().unwrap();
        assert_eq!(plan.plan.ranks.len(), 1);
        let late = lead(&commands, join(1, 2))
            .await
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(late, JoinError::AlreadyStarted((1, 0, 0)));
    }

    #[tokio::test]
    async fn a_node_holds_a_bounded_number_of_starting_steps() {
        let (commands, receiver) = mpsc::channel(16);
        tokio::spawn(run(context(), receiver));
        let mut waiting = Vec::new();
        for job in 0..u32::try_from(MAX_STARTING).unwrap() {
            waiting.push(lead(&commands, join(job + 10, 2)).await);
        }
        let refused = lead(&commands, join(1, 2))
            .await
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(refused, JoinError::Busy(MAX_STARTING));
        assert_eq!(refused.code(), ErrorCode::Busy);
        // A second join of a step already starting replaces the first; no new slot needed.
        let again = lead(&commands, join(10, 2)).await;
        assert_eq!(
            waiting.remove(0).await.unwrap().unwrap_err(),
            JoinError::Superseded
        );
        drop(again);
    }

    #[tokio::test]
    async fn a_user_sees_only_their_own_steps_and_root_sees_all() {
        let (commands, receiver) = mpsc::channel(16);
        tokio::spawn(run(context(), receiver));
        for (job, uid) in [(1, 1000), (2, 1001)] {
            commands
                .send(GangCommand::Started {
                    key: (job, 0, 0),
                    nodes: vec!["n0".into(), "n1".into()],
                    ranks: 2,
                    uid,
                    gpus: vec![(0, 0)],
                    local: 1,
                })
                .await
                .unwrap();
        }
        let list = |uid| {
            let commands = commands.clone();
            async move {
                let (respond, answer) = oneshot::channel();
                commands
                    .send(GangCommand::ListSteps { uid, respond })
                    .await
                    .unwrap();
                answer.await.unwrap()
            }
        };
        assert_eq!(
            list(Some(1000)).await,
            vec!["1.0 attempt 0: 2 ranks on 2 nodes, running"]
        );
        assert_eq!(list(None).await.len(), 2);
        assert!(list(Some(4242)).await.is_empty());
    }
}
