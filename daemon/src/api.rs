//! The local API on the Unix socket: one task per connection, framed `proto` messages, a
//! version handshake first. Each request is answered from immutable snapshots; nothing here
//! holds state of its own.
//!
//! Who may do what (see docs/security.md): anyone on the node may read the topology and the
//! daemon's status (a user sees only their own steps in it); only root may join a step or
//! report its tasks, because the SPANK plugin does both from slurmstepd as root and anything a
//! user could send would be a claim about someone else's job. The caller is known from the
//! socket (SO_PEERCRED), never from the request. Every request is validated before it reaches
//! the gang actor, and a connection that stays silent longer than the configured idle timeout is closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort_proto::daemon::{
    check_node_name, ErrorCode, Request, Response, StatusDoc, TopNode, API_VERSION, MAX_TOP_NODES,
};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::gang::{GangCommand, JoinError, NodeContext};
use tracing::{debug, info, warn};

use crate::topo::Snapshot;

/// The largest request frame: a join of the largest step is far smaller.
pub(crate) const MAX_REQUEST: u32 = 4 << 20;
/// How long a client gets to read an answer.
const WRITE_LIMIT: Duration = Duration::from_secs(60);

/// What every connection may read, and where gang work goes.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) started: Instant,
    pub(crate) topology: watch::Receiver<Option<Arc<Snapshot>>>,
    pub(crate) gang: mpsc::Sender<GangCommand>,
    pub(crate) node: NodeContext,
    /// How long a connection may stay silent (between requests, or within one).
    pub(crate) idle: Duration,
    /// The GPU accounting of the running steps.
    pub(crate) accounts: Arc<std::sync::Mutex<crate::accounting::Accounts>>,
}

/// The next request: `Ok(None)` when the client closed the connection or stayed silent too
/// long.
async fn read_request(stream: &mut UnixStream, idle: Duration) -> Result<Option<Request>, String> {
    match tokio::time::timeout(idle, crate::frame::read(stream, MAX_REQUEST)).await {
        Ok(result) => result,
        Err(_) => {
            debug!("closing an idle connection");
            Ok(None)
        }
    }
}

async fn write_response(stream: &mut UnixStream, response: &Response) -> Result<(), String> {
    // A client that does not read its answers is not waited for.
    tokio::time::timeout(WRITE_LIMIT, crate::frame::write(stream, response))
        .await
        .map_err(|_| "the client does not read its answers".to_owned())?
}

pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

/// Serves one connection until the client closes it, breaks the protocol or goes idle.
pub(crate) async fn serve(mut stream: UnixStream, shared: Arc<Shared>) {
    let idle = shared.idle;
    let cred = stream.peer_cred().ok();
    let caller_uid = cred.map(|cred| cred.uid());
    let caller_pid = cred.and_then(|cred| cred.pid()).filter(|pid| *pid > 0);
    match read_request(&mut stream, idle).await {
        Ok(Some(Request::Hello {
            api_version,
            client,
        })) => {
            if api_version != API_VERSION {
                info!(client, api_version, "refused: API version mismatch");
                let _ = write_response(
                    &mut stream,
                    &error(
                        ErrorCode::VersionMismatch,
                        format!(
                            "this cohortd speaks API version {API_VERSION}, the client {api_version}; install matching versions"
                        ),
                    ),
                )
                .await;
                return;
            }
            debug!(client, "hello");
            let hello = Response::Hello {
                api_version: API_VERSION,
                daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            if write_response(&mut stream, &hello).await.is_err() {
                return;
            }
        }
        Ok(None) => return,
        Ok(Some(_)) => {
            let _ = write_response(
                &mut stream,
                &error(ErrorCode::BadRequest, "the first message must be hello"),
            )
            .await;
            return;
        }
        Err(e) => {
            warn!("{e}");
            let _ = write_response(&mut stream, &error(ErrorCode::BadRequest, e)).await;
            return;
        }
    }
    loop {
        let response = match read_request(&mut stream, idle).await {
            Ok(None) => return,
            Ok(Some(request)) => answer(&shared, request, caller_uid, caller_pid).await,
            Err(e) => {
                warn!("{e}");
                let _ = write_response(&mut stream, &error(ErrorCode::BadRequest, e)).await;
                return;
            }
        };
        if let Err(e) = write_response(&mut stream, &response).await {
            debug!("answer not written: {e}");
            return;
        }
    }
}

/// Whose steps a caller sees: root every step (`None`), anyone else their own, an unknown
/// caller none.
fn seen_as(caller_uid: Option<u32>) -> Option<u32> {
    match caller_uid {
        Some(0) => None,
        Some(uid) => Some(uid),
        None => Some(u32::MAX),
    }
}

fn uid_text(uid: Option<u32>) -> String {
    uid.map_or_else(|| "an unknown uid".to_owned(), |u| format!("uid {u}"))
}

/// Answers one request; job operations are refused to anyone but root. `caller_pid` is the
/// caller's process (a joining slurmstepd), watched so that a step whose slurmstepd dies without
/// reporting its tasks does not stay running.
pub(crate) async fn answer(
    shared: &Shared,
    request: Request,
    caller_uid: Option<u32>,
    caller_pid: Option<i32>,
) -> Response {
    let snapshot = shared.topology.borrow().clone();
    match request {
        Request::Join(join) => {
            if caller_uid != Some(0) {
                return error(
                    ErrorCode::PermissionDenied,
                    format!(
                        "{} may not join job {}: only root joins steps (spank_cohort does, from slurmstepd)",
                        uid_text(caller_uid),
                        join.job_id
                    ),
                );
            }
            if let Err(e) = join.validate() {
                return error(ErrorCode::BadRequest, format!("join: {e}"));
            }
            let key = (join.job_id, join.step_id, join.attempt);
            let nodes = join.nodes.clone();
            let ranks = join.world_size as usize;
            let uid = join.uid;
            let leader = join.node_index == 0;
            let result = if leader {
                let (respond, answer) = oneshot::channel();
                if shared
                    .gang
                    .send(GangCommand::LeaderJoin {
                        request: join,
                        respond,
                    })
                    .await
                    .is_err()
                {
                    return error(ErrorCode::Internal, "the gang actor is gone");
                }
                answer.await.unwrap_or_else(|_| {
                    Err(JoinError::Internal(
                        "the gang actor dropped the step".into(),
                    ))
                })
            } else {
                crate::gang::follow(shared.node.clone(), join)
                    .await
                    .map_err(JoinError::Failed)
            };
            if let (Ok(plan), false) = (&result, leader) {
                let (gpus, local) = crate::gang::local_gpus(&plan.plan, &shared.node.node);
                let _ = shared
                    .gang
                    .send(GangCommand::Started {
                        key,
                        nodes,
                        ranks,
                        uid,
                        gpus,
                        local,
                    })
                    .await;
            }
            if let (Ok(_), Some(pid)) = (&result, caller_pid) {
                let _ = shared.gang.send(GangCommand::Watch { key, pid }).await;
            }
            match result {
                Ok(plan) => Response::Joined(Box::new(plan)),
                Err(e) => error(e.code(), e.to_string()),
            }
        }
        Request::Hello { .. } => error(ErrorCode::BadRequest, "hello was already exchanged"),
        Request::GetTopology => match snapshot {
            Some(snapshot) => Response::Topology(Box::new(snapshot.doc.clone())),
            None => error(
                ErrorCode::NotReady,
                "this node's topology could not be discovered; see cohortd's log",
            ),
        },
        Request::TaskExit(exit) => {
            if caller_uid != Some(0) {
                return error(
                    ErrorCode::PermissionDenied,
                    format!(
                        "{} may not report tasks of job {}: only root does (spank_cohort, from slurmstepd)",
                        uid_text(caller_uid),
                        exit.job_id
                    ),
                );
            }
            if let Err(e) = exit.validate() {
                return error(ErrorCode::BadRequest, format!("task exit: {e}"));
            }
            if shared
                .gang
                .send(GangCommand::TaskExit { exit })
                .await
                .is_err()
            {
                return error(ErrorCode::Internal, "the gang actor is gone");
            }
            Response::Recorded
        }
        Request::GetStepGpus {
            job_id,
            step_id,
            attempt,
        } => {
            // Root (the plugin) or the step's owner; anyone else gets nothing, as for a step
            // that ran no GPUs here.
            let uid = seen_as(caller_uid);
            Response::StepGpus {
                series: shared
                    .accounts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .series((job_id, step_id, attempt), uid),
            }
        }
        Request::GetTop { nodes } => {
            if nodes.len() > MAX_TOP_NODES {
                return error(
                    ErrorCode::BadRequest,
                    format!(
                        "top: at most {MAX_TOP_NODES} nodes at once, not {}",
                        nodes.len()
                    ),
                );
            }
            for (i, node) in nodes.iter().enumerate() {
                if let Err(e) = check_node_name(&format!("nodes[{i}]"), node) {
                    return error(ErrorCode::BadRequest, format!("top: {e}"));
                }
            }
            let uid = seen_as(caller_uid);
            let mut answers =
                vec![crate::top::local(&shared.node, &shared.accounts, &shared.gang, uid).await];
            let ctx = Arc::new(shared.node.clone());
            let mut asked = tokio::task::JoinSet::new();
            for (i, node) in nodes.into_iter().enumerate() {
                if node == shared.node.node {
                    continue;
                }
                let ctx = Arc::clone(&ctx);
                asked.spawn(async move { (i, crate::top::remote(ctx, node, uid).await) });
            }
            let mut others: Vec<(usize, TopNode)> = asked.join_all().await;
            others.sort_by_key(|(i, _)| *i);
            answers.extend(others.into_iter().map(|(_, top)| top));
            Response::Top { nodes: answers }
        }
        Request::GetStatus => {
            let uid = seen_as(caller_uid);
            let steps = crate::gang::list_steps(&shared.gang, uid).await;
            let gpus = shared
                .accounts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .lines(uid, crate::accounting::now());
            status(shared, snapshot.as_deref(), steps, gpus)
        }
    }
}

fn status(
    shared: &Shared,
    snapshot: Option<&Snapshot>,
    steps: Vec<String>,
    gpus: Vec<String>,
) -> Response {
    Response::Status(StatusDoc {
        daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
        hostname: snapshot
            .as_ref()
            .and_then(|s| s.doc.hostname.clone())
            .unwrap_or_default(),
        uptime_seconds: shared.started.elapsed().as_secs(),
        topology_source: snapshot
            .as_ref()
            .map_or_else(String::new, |s| s.source.clone()),
        topology_summary: snapshot
            .as_ref()
            .map_or_else(|| "not discovered".to_owned(), |s| s.summary.clone()),
        discovered_at: snapshot.as_ref().map_or(0, |s| s.discovered_at),
        steps,
        gpus,
    })
}
