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
    /// GPUs Slurm granted on this node (indices), empty when none.
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// Slurm's topology address of this node (`SLURM_TOPOLOGY_ADDR`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_addr: Option<String>,
    /// How long to wait for the other nodes, in milliseconds.
    pub timeout_ms: u64,
    /// The job owner's uid (only root and the owner may join a step).
    pub uid: u32,
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
    /// The caller may not do this (job operations are for root and the job's owner).
    PermissionDenied,
    /// The daemon is still discovering the topology.
    NotReady,
    /// The gang start failed: nodes missing at the deadline, the leader unreachable, or the
    /// step aborted; the message names the nodes.
    GangFailed,
    /// Something failed inside the daemon.
    Internal,
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
}
