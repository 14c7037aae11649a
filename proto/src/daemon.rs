//! The local API of `cohortd` on its Unix socket: requests, responses and error codes.
//!
//! Every message is one frame (see [`crate::frame`]) holding JSON. A connection starts with
//! `Hello` both ways; a client whose `api_version` the daemon does not speak gets
//! `Error { code: VersionMismatch }` and the connection closes.

use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::topology::TopologyDoc;

/// Where `cohortd` listens by default (the `socket` key of `cohortd.toml` changes it).
pub const DEFAULT_SOCKET: &str = "/run/cohort/cohortd.sock";

/// The API version this crate speaks. Within a version, messages only gain optional fields.
pub const API_VERSION: u32 = 1;

/// A request from a client (the CLI, the SPANK plugin) to the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// The first message of every connection.
    Hello {
        /// The client's API version.
        api_version: u32,
        /// Who is asking (`cohort 0.1.0`, `spank_cohort 0.1.0`), for the daemon's log.
        client: String,
    },
    /// This node's topology as the daemon discovered it.
    GetTopology,
    /// The daemon's version, uptime and what it knows.
    GetStatus,
    /// Join a job step's gang start; answered with the plan once every node has joined, or an
    /// error naming the missing nodes at the deadline.
    Join(JoinRequest),
    /// A task of a step ended (sent by the plugin from slurmstepd).
    TaskExit(TaskExit),
    /// The GPU series of one step on this node, for its trial's system metrics (root, or the
    /// step's owner); answered with `StepGpus`, empty when the node holds none.
    GetStepGpus {
        /// Slurm job id.
        job_id: u32,
        /// Slurm step id.
        step_id: u32,
        /// The launch attempt.
        #[serde(default)]
        attempt: u32,
    },
    /// `cohort top`: this node's GPUs and steps, then those of `nodes`, which this daemon asks
    /// over the authenticated peer protocol; answered with `Top`.
    GetTop {
        /// Other nodes to ask (at most [`MAX_TOP_NODES`]).
        #[serde(default)]
        nodes: Vec<String>,
    },
}

/// The most nodes one `GetTop` may ask about.
pub const MAX_TOP_NODES: usize = 1024;

/// One GPU of a step on one node, sampled over the step's life: what becomes the trial's
/// `sys/gpuN/...` metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSeries {
    /// The GPU's number within the step: GPUs numbered in the order of the lowest rank using
    /// each, so `0` is rank 0's GPU on every node count.
    pub ordinal: u32,
    /// The GPU's index on its node.
    pub gpu: u32,
    /// Its PCI bus id.
    pub bus_id: String,
    /// The series, oldest first; each point covers the samples of one window.
    pub points: Vec<GpuPoint>,
}

/// A window of samples of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuPoint {
    /// When the window started (seconds since the Unix epoch).
    pub t: u64,
    /// Mean utilisation, percent.
    pub util: f64,
    /// Most memory in use, bytes.
    pub memory_used: u64,
    /// Mean power, watts, where reported.
    #[serde(default)]
    pub power_w: Option<f64>,
    /// Highest temperature, degrees Celsius, where reported.
    #[serde(default)]
    pub temperature_c: Option<u32>,
}

/// One node as `cohort top` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopNode {
    /// The node's name.
    pub node: String,
    /// Why the node could not be asked (its other fields are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every GPU of the node, with its latest sample.
    #[serde(default)]
    pub gpus: Vec<TopGpu>,
    /// The steps the asker may see, one line each, as `cohort status` shows them.
    #[serde(default)]
    pub steps: Vec<String>,
}

/// One GPU of a node, as `cohort top` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopGpu {
    /// Its index on the node.
    pub index: u32,
    /// Its PCI bus id.
    pub bus_id: String,
    /// Its model, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The latest sample, once the accounting took one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<GpuSample>,
    /// Why the latest sample failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether a running step holds it.
    #[serde(default)]
    pub in_use: bool,
    /// The step holding it (`12.0`), when the asker may see it (root, or its owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The step's owner, when the asker may see the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Seconds it has been idle while the step held it, past the daemon's `idle_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_seconds: Option<u64>,
}

/// The end of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskExit {
    /// Slurm job id.
    pub job_id: u32,
    /// Slurm step id.
    pub step_id: u32,
    /// The launch attempt.
    #[serde(default)]
    pub attempt: u32,
    /// The task's global rank.
    pub rank: u32,
    /// Its wait status as Slurm reports it (0: success).
    pub status: i32,
    /// The job owner's uid.
    pub uid: u32,
}

/// What a node contributes to a step's gang start (sent by the SPANK plugin in slurmstepd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Slurm job id.
    pub job_id: u32,
    /// Slurm step id.
    pub step_id: u32,
    /// Which launch of the step this is (`SLURM_RESTART_COUNT`: a requeued job runs its steps
    /// again under the same ids); messages of another attempt are stale.
    #[serde(default)]
    pub attempt: u32,
    /// The step's nodes, in Slurm's order; the first one's daemon leads.
    pub nodes: Vec<String>,
    /// This node's position in `nodes`.
    pub node_index: u32,
    /// Global ranks of the tasks on this node.
    pub ranks: Vec<u32>,
    /// Number of tasks in the step.
    pub world_size: u32,
    /// GPUs Slurm granted on this node (indices), in the order of the step's device list,
    /// empty when none or when only `gpu_ids` names them.
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// The step's device list as Slurm (or the user) gave it, when its entries are not GPU
    /// indices (`GPU-<uuid>`, `MIG-GPU-<uuid>/1/0`): the daemon finds each one's GPU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_ids: Vec<String>,
    /// Slurm's topology address of this node (`SLURM_TOPOLOGY_ADDR`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_addr: Option<String>,
    /// How long to wait for the other nodes, in milliseconds.
    pub timeout_ms: u64,
    /// On the node of rank 0: the port of the rendezvous store's socket, which the plugin has
    /// bound and hands to rank 0. Absent: the daemon picks a free port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_port: Option<u16>,
    /// The job owner's uid. Only root may join a step (the plugin joins from slurmstepd, as
    /// root), so this is the owner Slurm gave the plugin, never the caller's claim.
    pub uid: u32,
}

/// The most nodes a step may have.
pub const MAX_NODES: usize = 1 << 16;
/// The most ranks a step may have.
pub const MAX_RANKS: u32 = 1 << 20;
/// The most GPUs one node may list.
pub const MAX_GPUS: usize = 1024;
/// The longest node name or topology address, in bytes.
pub const MAX_NAME: usize = 255;
/// The longest gang-start deadline a join may ask for, in milliseconds (one hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// A request that is well-formed JSON but cannot be acted on: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    /// The field at fault (`world_size`, `ranks`, `nodes[3]`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Checks a node name (as Slurm names nodes: letters, digits, `-`, `_`, `.`).
pub fn check_node_name(field: &str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(invalid(
            field,
            format!("a node name has 1 to {MAX_NAME} bytes, not {}", name.len()),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(invalid(
            field,
            format!("{bad:?} is not allowed in a node name"),
        ));
    }
    Ok(())
}

/// Checks a list of ranks: at least one, each below `world_size`, none twice.
pub fn check_ranks(field: &str, ranks: &[u32], world_size: u32) -> Result<(), Invalid> {
    if ranks.is_empty() {
        return Err(invalid(field, "a node of a step runs at least one rank"));
    }
    if ranks.len() > world_size as usize {
        return Err(invalid(
            field,
            format!(
                "{} ranks on one node, {world_size} in the step",
                ranks.len()
            ),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for &rank in ranks {
        if rank >= world_size {
            return Err(invalid(
                field,
                format!("rank {rank} is not below the world size {world_size}"),
            ));
        }
        if !seen.insert(rank) {
            return Err(invalid(field, format!("rank {rank} is listed twice")));
        }
    }
    Ok(())
}

impl JoinRequest {
    /// Checks everything the daemon relies on before acting: counts against each other,
    /// sizes against the limits above, no duplicates; the error names the field.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.nodes.is_empty() || self.nodes.len() > MAX_NODES {
            return Err(invalid(
                "nodes",
                format!(
                    "a step has 1 to {MAX_NODES} nodes, not {}",
                    self.nodes.len()
                ),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            check_node_name(&format!("nodes[{i}]"), node)?;
            if !names.insert(node.as_str()) {
                return Err(invalid(
                    format!("nodes[{i}]"),
                    format!("node {node} is listed twice"),
                ));
            }
        }
        if self.node_index as usize >= self.nodes.len() {
            return Err(invalid(
                "node_index",
                format!(
                    "{} is not a position in the step's {} nodes",
                    self.node_index,
                    self.nodes.len()
                ),
            ));
        }
        if self.world_size == 0 || self.world_size > MAX_RANKS {
            return Err(invalid(
                "world_size",
                format!("a step has 1 to {MAX_RANKS} ranks, not {}", self.world_size),
            ));
        }
        if (self.world_size as usize) < self.nodes.len() {
            return Err(invalid(
                "world_size",
                format!(
                    "{} ranks cannot cover {} nodes (each runs at least one)",
                    self.world_size,
                    self.nodes.len()
                ),
            ));
        }
        check_ranks("ranks", &self.ranks, self.world_size)?;
        if self.gpus.len() > MAX_GPUS {
            return Err(invalid(
                "gpus",
                format!("{} GPUs on one node (at most {MAX_GPUS})", self.gpus.len()),
            ));
        }
        let mut gpus = std::collections::BTreeSet::new();
        if let Some(gpu) = self.gpus.iter().find(|&&g| !gpus.insert(g)) {
            return Err(invalid("gpus", format!("GPU {gpu} is listed twice")));
        }
        if let Some(address) = &self.topology_addr {
            if address.len() > MAX_NAME {
                return Err(invalid(
                    "topology_addr",
                    format!("{} bytes (at most {MAX_NAME})", address.len()),
                ));
            }
        }
        if self.store_port == Some(0) {
            return Err(invalid("store_port", "0 is not a port"));
        }
        if self.store_port.is_some() && !self.ranks.contains(&0) {
            return Err(invalid(
                "store_port",
                "only the node of rank 0 hands over the store's socket",
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(invalid(
                "timeout_ms",
                format!(
                    "the deadline is 1 to {MAX_TIMEOUT_MS} ms, not {}",
                    self.timeout_ms
                ),
            ));
        }
        Ok(())
    }
}

impl TaskExit {
    /// Checks the report before the daemon acts on it.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.rank >= MAX_RANKS {
            return Err(invalid(
                "rank",
                format!("{} is above the largest rank {}", self.rank, MAX_RANKS - 1),
            ));
        }
        Ok(())
    }
}

/// What every node of a step receives: the same plan, secret and rendezvous address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepPlan {
    /// The attempt this plan is for (see [`JoinRequest::attempt`]).
    pub generation: u64,
    /// Every rank's host, GPU, NICs, address and CPUs, and the ring order.
    pub plan: Plan,
    /// The step's secret (fresh per step), for `COHORT_SECRET`.
    pub secret: String,
    /// Rendezvous store address (`host:port`), served by rank 0, for `COHORT_STORE`.
    pub store: String,
}

/// The daemon's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `Hello`.
    Hello {
        /// The daemon's API version.
        api_version: u32,
        /// The daemon's release (`0.1.0`).
        daemon_version: String,
    },
    /// Answer to `GetTopology`.
    Topology(Box<TopologyDoc>),
    /// Answer to `GetStatus`.
    Status(StatusDoc),
    /// Answer to `Join`: the step's plan.
    Joined(Box<StepPlan>),
    /// Answer to `TaskExit`.
    Recorded,
    /// Answer to `GetStepGpus`.
    StepGpus {
        /// The step's GPUs on this node.
        series: Vec<GpuSeries>,
    },
    /// Answer to `GetTop`.
    Top {
        /// This node first, then the nodes asked, in their order.
        nodes: Vec<TopNode>,
    },
    /// The request failed.
    Error {
        /// What kind of failure, stable across releases.
        code: ErrorCode,
        /// A sentence for the user.
        message: String,
    },
}

/// Stable error codes of the local API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The client's API version is not spoken by this daemon.
    VersionMismatch,
    /// The first message was not `Hello`, or a message could not be parsed.
    BadRequest,
    /// The caller may not do this (joining a step and reporting its tasks are for root).
    PermissionDenied,
    /// The daemon is still discovering the topology.
    NotReady,
    /// The gang start failed: nodes missing at the deadline, the leader unreachable, or the
    /// step aborted; the message names the nodes.
    GangFailed,
    /// Something failed inside the daemon.
    Internal,
    /// The daemon is at one of its limits (connections, steps starting); try again later.
    Busy,
    /// A code this build does not know (sent by a newer daemon).
    #[serde(other)]
    Unknown,
}

/// What `cohort status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// The daemon's release.
    pub daemon_version: String,
    /// The node's host name.
    pub hostname: String,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// Where the topology came from (`live`, or a file path).
    pub topology_source: String,
    /// One line: NUMA nodes, GPUs, NICs.
    pub topology_summary: String,
    /// When the topology was last discovered (seconds since the Unix epoch).
    pub discovered_at: u64,
    /// Job steps the daemon knows about, one line each (`12.0 attempt 0: 16 ranks on 4 nodes,
    /// running`), newest last.
    #[serde(default)]
    pub steps: Vec<String>,
    /// The running steps' GPUs, one line each (`12.0 attempt 0 GPU 0 (0000:17:00.0); util 97%
    /// now, 88% mean of 40 sample(s); ...`), with `IDLE for N s`, `ECC ERRORS +N` and `XID N`
    /// where a GPU is flagged; a user sees their own steps'.
    #[serde(default)]
    pub gpus: Vec<String>,
}

/// One GPU at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    /// Percent of the last sample period a kernel ran (NVML's utilisation).
    pub util: u32,
    /// Memory in use, bytes.
    pub memory_used: u64,
    /// Memory in all, bytes.
    pub memory_total: u64,
    /// Power draw, milliwatts, where the GPU reports it.
    #[serde(default)]
    pub power_mw: Option<u32>,
    /// Temperature, degrees Celsius, where reported.
    #[serde(default)]
    pub temperature_c: Option<u32>,
    /// Why the clocks are held down now, other than idleness (`sw_power_cap`,
    /// `hw_thermal_slowdown`, ...).
    #[serde(default)]
    pub throttle: Vec<String>,
    /// Uncorrected ECC errors since the driver loaded, where ECC is on.
    #[serde(default)]
    pub ecc_uncorrected: Option<u64>,
    /// Xid errors since the previous sample.
    #[serde(default)]
    pub xids: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join() -> JoinRequest {
        JoinRequest {
            job_id: 7,
            step_id: 0,
            attempt: 0,
            nodes: vec!["node1".into(), "node2".into()],
            node_index: 1,
            ranks: vec![2, 3],
            world_size: 4,
            gpus: vec![0, 1],
            gpu_ids: Vec::new(),
            topology_addr: None,
            timeout_ms: 30_000,
            store_port: None,
            uid: 1000,
        }
    }

    /// Each broken field is refused by name.
    #[test]
    fn every_inconsistent_join_is_refused_naming_its_field() {
        assert_eq!(join().validate(), Ok(()));
        type Break = Box<dyn Fn(&mut JoinRequest)>;
        let cases: Vec<(&str, Break)> = vec![
            ("world_size", Box::new(|j| j.world_size = 0)),
            ("world_size", Box::new(|j| j.world_size = 1)),
            ("world_size", Box::new(|j| j.world_size = MAX_RANKS + 1)),
            ("ranks", Box::new(|j| j.ranks.clear())),
            ("ranks", Box::new(|j| j.ranks = vec![2, 2])),
            ("ranks", Box::new(|j| j.ranks = vec![4])),
            ("nodes", Box::new(|j| j.nodes.clear())),
            ("nodes[1]", Box::new(|j| j.nodes[1] = "node1".into())),
            ("nodes[0]", Box::new(|j| j.nodes[0] = "a b".into())),
            (
                "nodes[0]",
                Box::new(|j| j.nodes[0] = "x".repeat(MAX_NAME + 1)),
            ),
            ("node_index", Box::new(|j| j.node_index = 2)),
            ("gpus", Box::new(|j| j.gpus = vec![1, 1])),
            ("timeout_ms", Box::new(|j| j.timeout_ms = 0)),
            ("store_port", Box::new(|j| j.store_port = Some(0))),
            ("store_port", Box::new(|j| j.store_port = Some(5000))),
            (
                "timeout_ms",
                Box::new(|j| j.timeout_ms = MAX_TIMEOUT_MS + 1),
            ),
            (
                "topology_addr",
                Box::new(|j| j.topology_addr = Some("s".repeat(300))),
            ),
        ];
        for (field, break_it) in cases {
            let mut request = join();
            break_it(&mut request);
            let err = request.validate().unwrap_err();
            assert_eq!(err.field, field, "{request:?}: {err}");
        }
    }

    #[test]
    fn unknown_error_codes_from_a_newer_daemon_still_parse() {
        let text = r#"{"type":"error","code":"some_new_code","message":"m"}"#;
        let response: Response = serde_json::from_str(text).unwrap();
        assert!(matches!(
            response,
            Response::Error {
                code: ErrorCode::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn gpu_answers_go_through_json_and_back() {
        // Internally tagged variants cannot hold a bare sequence: each answer is checked whole.
        let answers = [
            Response::StepGpus {
                series: vec![GpuSeries {
                    ordinal: 1,
                    gpu: 3,
                    bus_id: "0000:17:00.0".into(),
                    points: vec![GpuPoint {
                        t: 5,
                        util: 97.5,
                        memory_used: 1 << 30,
                        power_w: Some(250.0),
                        temperature_c: None,
                    }],
                }],
            },
            Response::Top {
                nodes: vec![TopNode {
                    node: "node1".into(),
                    error: None,
                    gpus: vec![TopGpu {
                        index: 0,
                        bus_id: "0000:17:00.0".into(),
                        model: Some("A100".into()),
                        sample: Some(GpuSample::default()),
                        error: None,
                        in_use: true,
                        step: Some("12.0".into()),
                        uid: Some(1000),
                        idle_seconds: Some(600),
                    }],
                    steps: vec!["12.0 attempt 0".into()],
                }],
            },
        ];
        for answer in answers {
            let text = serde_json::to_string(&answer).unwrap();
            assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), answer);
        }
        let request = Request::GetTop {
            nodes: vec!["node2".into()],
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
        let message = crate::peer::PeerMsg::TopRequest { asker: Some(1000) };
        let text = serde_json::to_string(&message).unwrap();
        assert_eq!(
            serde_json::from_str::<crate::peer::PeerMsg>(&text).unwrap(),
            message
        );
    }
}
