//! `cohort top`: this node's GPUs and steps as the asker may see them, and other nodes' asked
//! over the authenticated peer protocol. A user sees every GPU's utilisation (as
//! `nvidia-smi` on the node shows it to anyone) but the steps and owners of their own steps
//! only; root sees all. A peer's answer is built for the uid the asking daemon's socket saw,
//! which peers take on trust: they hold the cluster key. The handshake binds the name asked
//! for, so a name that is no node (a user's listener) learns nothing it could pass on, and at
//! most `ASKING_AT_ONCE` nodes are asked at once.

use std::sync::Arc;
use std::time::Duration;

use cohort_proto::daemon::TopNode;
use cohort_proto::peer::PeerMsg;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::accounting::Accounts;
use crate::gang::{GangCommand, NodeContext};
use crate::peer;

/// How long one node gets to answer, waiting for a turn, connection and handshake included.
const NODE_LIMIT: Duration = Duration::from_secs(5);

/// The most other nodes this daemon asks at once, for all its callers together: however many
/// `cohort top --nodes` users run, the daemon's open files and the other nodes' peer slots,
/// which gang starts need, stay far from their limits.
const ASKING_AT_ONCE: usize = 64;

fn asking() -> &'static tokio::sync::Semaphore {
    static ASKING: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    ASKING.get_or_init(|| tokio::sync::Semaphore::new(ASKING_AT_ONCE))
}

/// This node as `uid` may see it (`None`: root).
pub(crate) async fn local(
    ctx: &NodeContext,
    accounts: &std::sync::Mutex<Accounts>,
    gang: &mpsc::Sender<GangCommand>,
    uid: Option<u32>,
) -> TopNode {
    let gpus: Vec<(u32, String, Option<String>)> = ctx
        .topology
        .borrow()
        .as_ref()
        .map(|s| {
            s.topology
                .gpus
                .iter()
                .map(|g| (g.index, g.bus_id.to_string(), g.model.clone()))
                .collect()
        })
        .unwrap_or_default();
    let steps = crate::gang::list_steps(gang, uid).await;
    let gpus = accounts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .top(&gpus, uid, crate::accounting::now());
    TopNode {
        node: ctx.node.clone(),
        error: None,
        gpus,
        steps,
    }
}

/// Asks `node`'s daemon for its part of `cohort top`, as `uid` may see it; a node that cannot
/// be asked within [`NODE_LIMIT`] comes back with the reason.
pub(crate) async fn remote(ctx: Arc<NodeContext>, node: String, uid: Option<u32>) -> TopNode {
    let asked = tokio::time::timeout(NODE_LIMIT, async {
        let _turn = asking()
            .acquire()
            .await
            .map_err(|_| "the daemon is stopping".to_owned())?;
        let address = crate::gang::resolve(&ctx, &node).await?;
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        peer::handshake(&mut stream, &ctx.key, true, &node, NODE_LIMIT).await?;
        peer::send(&mut stream, &PeerMsg::TopRequest { asker: uid }).await?;
        match peer::receive::<PeerMsg>(&mut stream).await? {
            PeerMsg::Top(top) => Ok(*top),
            other => Err(format!(
                "answered {} instead of its GPUs (an older cohortd?)",
                kind(&other)
            )),
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {} s", NODE_LIMIT.as_secs())));
    asked.unwrap_or_else(|e| TopNode {
        node: node.clone(),
        error: Some(e),
        gpus: Vec::new(),
        steps: Vec::new(),
    })
}

fn kind(message: &PeerMsg) -> &'static str {
    match message {
        PeerMsg::Summary(_) => "a summary",
        PeerMsg::Plan(_) => "a plan",
        PeerMsg::TaskFailed { .. } => "a task failure",
        PeerMsg::TopRequest { .. } => "a request",
        PeerMsg::Top(_) => "its GPUs",
        PeerMsg::Abort { .. } => "an abort",
    }
}
