//! Entry points for the fuzz targets in `fuzz/` (and for the regression tests of what they
//! found): arbitrary bytes through the real local API handler and the real frame reader. Any
//! panic here is a bug in the daemon.
//!
//! `local_api` runs `api::serve` on one end of a Unix socket pair whose other end carries the
//! bytes, with a `Shared` built as `app::run` builds it (the project's two-GPU topology
//! fixture, a gang actor of its own per input, a short idle timeout). The caller is this
//! process, so `SO_PEERCRED` gives its uid: the fuzzer runs as root, joins and task exits pass
//! the root check and reach validation and the gang actor. Each input gets 200 ms (on the
//! runtime's clock) to be served, then is cut off.
//!
//! Built with the crate's `fuzzing` feature (as `fuzz/` builds it) the runtime's clock is
//! paused and jumps to the next timer whenever every task waits, so a leader waiting for its
//! followers or a follower retrying its leader costs no real time; without it (the unit
//! tests) the clock is real and an input may take those 200 ms.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cohort_proto::daemon::Request;
use cohort_proto::peer::PeerMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use crate::api::{self, Shared};
use crate::config::TopologySource;
use crate::gang::{self, NodeContext};
use crate::topo::{self, Snapshot};

/// How long one input may be served (runtime clock).
const SERVE_LIMIT: Duration = Duration::from_millis(200);

/// Where followers look for their leader, and where task failures are told: a port nothing
/// listens on, so connections are refused at once.
const NOBODY: ([u8; 4], u16) = ([127, 0, 0, 1], 1);

/// The process's runtime: one thread, so that an input's tasks run only while it is served.
fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.enable_all();
            #[cfg(feature = "fuzzing")]
            builder.start_paused(true);
            builder.build().ok()
        })
        .as_ref()
}

/// The topology every input's daemon serves: the project's two-GPU, two-NIC fixture.
fn snapshot() -> Option<Arc<Snapshot>> {
    static SNAPSHOT: OnceLock<Option<Arc<Snapshot>>> = OnceLock::new();
    SNAPSHOT
        .get_or_init(|| {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../topology/test_data/1s-2gpu-rails-roce.hwloc.xml"
            );
            topo::discover(&TopologySource::File(path.into()), None)
                .ok()
                .map(Arc::new)
        })
        .clone()
}

/// The node names the input's joins mention, each mapped to a closed local port.
///
/// A follower resolves its leader, and a failed task is told to the step's other nodes,
/// through `peer_nodes` first and DNS after; names taken from the input would otherwise cost
/// a DNS lookup each (on a blocking thread, seconds where the resolver does not answer), and
/// the fuzzer would crawl. Frames are parsed here only to find the names: the daemon still
/// reads every byte itself.
fn peer_nodes(data: &[u8]) -> BTreeMap<String, SocketAddr> {
    let mut nodes = BTreeMap::new();
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let Some((body, tail)) = tail.split_at_checked(len) else {
            break;
        };
        if let Ok(Request::Join(join)) = serde_json::from_slice::<Request>(body) {
            for node in join.nodes {
                nodes.insert(node, SocketAddr::from(NOBODY));
            }
        }
        rest = tail;
    }
    nodes
}

/// Serves `data` as one client connection's bytes, then the end of its input; returns the
/// bytes the daemon answered.
pub fn local_api(data: &[u8]) -> Vec<u8> {
    let Some(runtime) = runtime() else {
        return Vec::new();
    };
    runtime.block_on(async {
        let mut answers = Vec::new();
        let Ok((mut client, server)) = UnixStream::pair() else {
            return answers;
        };
        let (_keep, topology) = watch::channel(snapshot());
        let node = NodeContext {
            node: "fuzz0".to_owned(),
            topology: topology.clone(),
            key: Arc::new(vec![7; 32]),
            peer_nodes: peer_nodes(data),
            peer_port: NOBODY.1,
        };
        let (gang_tx, gang_rx) = mpsc::channel(1024);
        let actor = tokio::spawn(gang::run(node.clone(), gang_rx));
        let shared = Arc::new(Shared {
            started: Instant::now(),
            topology,
            gang: gang_tx,
            node,
            idle: Duration::from_millis(50),
            accounts: Arc::new(std::sync::Mutex::new(crate::accounting::Accounts::new(
                crate::config::Config::default().accounting,
            ))),
        });
        let (mut reader, mut writer) = client.split();
        // Writes while the server reads (a large input does not fit the socket buffer), then
        // reads the answers until the server closes its end.
        let write = async {
            let _ = writer.write_all(data).await;
            let _ = writer.shutdown().await;
        };
        let read = async {
            let mut buffer = vec![0u8; 64 << 10];
            while let Ok(n @ 1..) = reader.read(&mut buffer).await {
                answers.extend_from_slice(&buffer[..n]);
            }
        };
        let _ = tokio::time::timeout(SERVE_LIMIT, async {
            tokio::join!(api::serve(server, shared), write, read)
        })
        .await;
        // The input's Shared is gone with `serve`: the actor ends once it has seen every
        // command already sent.
        let _ = tokio::time::timeout(SERVE_LIMIT, actor).await;
        answers
    })
}

/// Reads `data` as a peer connection's frames until it ends or a frame is refused; each
/// follower summary is validated as the leader validates it.
pub fn peer_frames(data: &[u8]) {
    let Some(runtime) = runtime() else { return };
    runtime.block_on(async {
        let mut stream = data;
        while let Ok(Some(message)) =
            crate::frame::read::<PeerMsg>(&mut stream, cohort_proto::frame::MAX_FRAME).await
        {
            if let PeerMsg::Summary(summary) = message {
                let _ = summary.validate();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_proto::daemon::{JoinRequest, Response, TaskExit, API_VERSION};

    fn frame(request: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        cohort_proto::frame::write_frame(&mut out, request).unwrap();
        out
    }

    fn responses(mut bytes: &[u8]) -> Vec<Response> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            out.push(cohort_proto::frame::read_frame(&mut bytes).unwrap());
        }
        out
    }

    fn join(nodes: &[&str], node_index: u32) -> Request {
        Request::Join(JoinRequest {
            job_id: 1,
            step_id: 0,
            attempt: 0,
            nodes: nodes.iter().map(|&n| n.to_owned()).collect(),
            node_index,
            ranks: vec![node_index],
            world_size: 2,
            gpus: vec![0],
            gpu_ids: Vec::new(),
            topology_addr: None,
            timeout_ms: 100,
            store_port: None,
            uid: 1000,
        })
    }

    #[test]
    fn a_session_reaches_the_gang_actor_as_root() {
        let mut data = frame(&Request::Hello {
            api_version: API_VERSION,
            client: "test".into(),
        });
        data.extend(frame(&Request::GetTopology));
        let mut one = join(&["a"], 0);
        if let Request::Join(join) = &mut one {
            join.ranks = vec![0, 1];
        }
        data.extend(frame(&one));
        data.extend(frame(&Request::TaskExit(TaskExit {
            job_id: 1,
            step_id: 0,
            attempt: 0,
            rank: 1,
            status: 9,
            uid: 1000,
        })));
        data.extend(frame(&Request::GetStatus));
        let answers = responses(&local_api(&data));
        assert_eq!(answers.len(), 5, "{answers:?}");
        assert!(matches!(answers[1], Response::Topology(_)), "{answers:?}");
        // Joins and task reports are root's (the fuzzer runs as root).
        if nix::unistd::geteuid().is_root() {
            assert!(matches!(answers[2], Response::Joined(_)), "{answers:?}");
            let Response::Status(status) = &answers[4] else {
                panic!("{answers:?}");
            };
            assert_eq!(status.steps.len(), 1, "{status:?}");
        }
    }

    #[test]
    fn followers_and_garbage_end_within_the_limit() {
        let mut data = frame(&Request::Hello {
            api_version: API_VERSION,
            client: "test".into(),
        });
        data.extend(frame(&join(&["leader", "me"], 1)));
        assert_eq!(peer_nodes(&data).len(), 2);
        let started = std::time::Instant::now();
        local_api(&data);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(local_api(b"\xff\xff\xff\xff").len() > 4, "a refusal");
        assert!(local_api(&[]).is_empty());
        peer_frames(&data);
        peer_frames(b"\x02\x00\x00\x00{}");
    }
}
