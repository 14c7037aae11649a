//! The local API on the Unix socket: one task per connection, framed `proto` messages, a
//! version handshake first. Each request is answered from immutable snapshots; nothing here
//! holds state of its own.

use std::sync::Arc;
use std::time::Instant;

use cohort_proto::daemon::{ErrorCode, Request, Response, StatusDoc, API_VERSION};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::gang::{GangCommand, NodeContext};
use tracing::{debug, info, warn};

use crate::topo::Snapshot;

/// What every connection may read, and where gang work goes.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) started: Instant,
    pub(crate) topology: watch::Receiver<Option<Arc<Snapshot>>>,
    pub(crate) gang: mpsc::Sender<GangCommand>,
    pub(crate) node: NodeContext,
}

async fn read_request(stream: &mut UnixStream) -> Result<Option<Request>, String> {
    crate::frame::read(stream).await
}

async fn write_response(stream: &mut UnixStream, response: &Response) -> Result<(), String> {
    crate::frame::write(stream, response).await
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

/// Serves one connection until the client closes it or breaks the protocol.
pub(crate) async fn serve(mut stream: UnixStream, shared: Arc<Shared>) {
    let caller_uid = stream.peer_cred().ok().map(|cred| cred.uid());
    match read_request(&mut stream).await {
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
        let response = match read_request(&mut stream).await {
            Ok(None) => return,
            Ok(Some(request)) => answer(&shared, request, caller_uid).await,
            Err(e) => {
                warn!("{e}");
                let _ = write_response(&mut stream, &error(ErrorCode::BadRequest, e)).await;
                return;
            }
        };
        if write_response(&mut stream, &response).await.is_err() {
            return;
        }
    }
}

async fn answer(shared: &Shared, request: Request, caller_uid: Option<u32>) -> Response {
    let snapshot = shared.topology.borrow().clone();
    match request {
        Request::Join(join) => {
            // Job operations are for root and the job's owner.
            if caller_uid != Some(0) && caller_uid != Some(join.uid) {
                return error(
                    ErrorCode::PermissionDenied,
                    format!(
                        "uid {} may not join job {} (owned by uid {})",
                        caller_uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string()),
                        join.job_id,
                        join.uid
                    ),
                );
            }
            if join.node_index as usize >= join.nodes.len() {
                return error(
                    ErrorCode::BadRequest,
                    format!(
                        "node index {} is not in the step's {} nodes",
                        join.node_index,
                        join.nodes.len()
                    ),
                );
            }
            let key = (join.job_id, join.step_id, join.attempt);
            let nodes = join.nodes.clone();
            let ranks = join.world_size as usize;
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
                answer
                    .await
                    .unwrap_or_else(|_| Err("the gang actor dropped the step".into()))
            } else {
                crate::gang::follow(shared.node.clone(), join).await
            };
            if result.is_ok() && !leader {
                let _ = shared
                    .gang
                    .send(GangCommand::Started { key, nodes, ranks })
                    .await;
            }
            match result {
                Ok(plan) => Response::Joined(Box::new(plan)),
                Err(message) => error(ErrorCode::GangFailed, message),
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
            if caller_uid != Some(0) && caller_uid != Some(exit.uid) {
                return error(
                    ErrorCode::PermissionDenied,
                    "only root and the job's owner report its tasks",
                );
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
        Request::GetStatus => {
            let (respond, answer) = oneshot::channel();
            let steps = if shared
                .gang
                .send(GangCommand::ListSteps { respond })
                .await
                .is_ok()
            {
                answer.await.unwrap_or_default()
            } else {
                Vec::new()
            };
            status(shared, snapshot.as_deref(), steps)
        }
    }
}

fn status(shared: &Shared, snapshot: Option<&Snapshot>, steps: Vec<String>) -> Response {
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
    })
}
