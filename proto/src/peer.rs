//! Messages between daemons during a gang start, after the cluster-key handshake.
//!
//! A follower connects to the leader (the step's first node), sends its `Summary`, and waits on
//! the same connection for `Plan` or `Abort`.

use serde::{Deserialize, Serialize};

use crate::daemon::StepPlan;
use crate::plan::RankPlan;

/// The peer protocol version; a peer speaking another is refused.
pub const PEER_VERSION: u32 = 1;

/// One message between daemons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PeerMsg {
    /// A follower's part of the step: its ranks already placed on its own hardware.
    Summary(Summary),
    /// The leader's plan for the step.
    Plan(Box<StepPlan>),
    /// A task of a running step failed on the sender's node; sent to the step's other nodes.
    TaskFailed {
        /// Slurm job id.
        job_id: u32,
        /// Slurm step id.
        step_id: u32,
        /// The launch attempt.
        attempt: u32,
        /// The failed task's rank.
        rank: u32,
        /// Its node.
        node: String,
        /// Its wait status.
        status: i32,
    },
    /// The gang failed; every node fails the step with this reason.
    Abort {
        /// Slurm job id.
        job_id: u32,
        /// Slurm step id.
        step_id: u32,
        /// Why, naming the nodes concerned.
        reason: String,
    },
}

/// A node's contribution to a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Slurm job id.
    pub job_id: u32,
    /// Slurm step id.
    pub step_id: u32,
    /// The launch attempt (see `JoinRequest::attempt`).
    #[serde(default)]
    pub attempt: u32,
    /// This node's name.
    pub node: String,
    /// Its position in the step's node list.
    pub node_index: u32,
    /// Its ranks, placed: GPU, NICs, CPUs, address.
    pub ranks: Vec<RankPlan>,
    /// Slurm's topology address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_addr: Option<String>,
    /// A free port for the rendezvous store, from the node that hosts rank 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_port: Option<u16>,
    /// How long the follower waits, in milliseconds.
    pub timeout_ms: u64,
}
