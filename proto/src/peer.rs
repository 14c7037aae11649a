//! Messages between daemons during a gang start, after the cluster-key handshake.
//!
//! A follower connects to the leader (the step's first node), sends its `Summary`, and waits on
//! the same connection for `Plan` or `Abort`. A daemon relaying `cohort top --nodes` sends
//! `TopRequest` and reads `Top`.

use serde::{Deserialize, Serialize};

use crate::daemon::StepPlan;
use crate::plan::RankPlan;

/// The peer protocol version; a peer speaking another is refused. Version 2 binds the node
/// name the connecting daemon asked for into both proofs of the handshake.
pub const PEER_VERSION: u32 = 2;

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
    /// `cohort top` on another node: this node's GPUs and steps, as `asker` may see them.
    TopRequest {
        /// The uid of the user asking (`None`: root), as the asking daemon's socket saw it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        asker: Option<u32>,
    },
    /// The answer to `TopRequest`.
    Top(Box<crate::daemon::TopNode>),
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

impl Summary {
    /// Checks a follower's summary before the leader acts on it; the error names the field.
    pub fn validate(&self) -> Result<(), crate::daemon::Invalid> {
        use crate::daemon::{check_node_name, Invalid, MAX_NAME, MAX_NODES, MAX_RANKS};
        let invalid = |field: &str, problem: String| Invalid {
            field: field.to_owned(),
            problem,
        };
        check_node_name("node", &self.node)?;
        if self.node_index == 0 || self.node_index as usize >= MAX_NODES {
            return Err(invalid(
                "node_index",
                format!(
                    "a follower is at position 1 to {} of the step, not {}",
                    MAX_NODES - 1,
                    self.node_index
                ),
            ));
        }
        let ranks: Vec<u32> = self.ranks.iter().map(|r| r.rank).collect();
        crate::daemon::check_ranks("ranks", &ranks, MAX_RANKS)?;
        for (i, rank) in self.ranks.iter().enumerate() {
            let long = [&rank.host, &rank.address]
                .into_iter()
                .chain(&rank.nics)
                .any(|text| text.len() > MAX_NAME);
            if long || rank.nics.len() > 64 || rank.cpus.len() > 1 << 16 {
                return Err(invalid(
                    &format!("ranks[{i}]"),
                    format!(
                        "a host, address or NIC name longer than {MAX_NAME} bytes, more than 64 \
                         NICs, or a CPU list longer than 64 KiB"
                    ),
                ));
            }
        }
        if let Some(address) = &self.topology_addr {
            if address.len() > MAX_NAME {
                return Err(invalid(
                    "topology_addr",
                    format!("{} bytes (at most {MAX_NAME})", address.len()),
                ));
            }
        }
        if self.timeout_ms == 0 || self.timeout_ms > crate::daemon::MAX_TIMEOUT_MS {
            return Err(invalid(
                "timeout_ms",
                format!(
                    "{} ms is not a deadline a join may ask for",
                    self.timeout_ms
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            job_id: 1,
            step_id: 0,
            attempt: 0,
            node: "node2".into(),
            node_index: 1,
            ranks: vec![RankPlan {
                rank: 1,
                host: "node2".into(),
                local_rank: 0,
                gpu: None,
                nics: vec![],
                address: "10.0.0.2".into(),
                cpus: String::new(),
                ..RankPlan::default()
            }],
            topology_addr: None,
            store_port: None,
            timeout_ms: 1000,
        }
    }

    #[test]
    fn a_summary_is_checked_before_the_leader_uses_it() {
        assert_eq!(summary().validate(), Ok(()));
        let mut s = summary();
        s.node_index = 0;
        assert_eq!(s.validate().unwrap_err().field, "node_index");
        let mut s = summary();
        s.ranks.clear();
        assert_eq!(s.validate().unwrap_err().field, "ranks");
        let mut s = summary();
        s.ranks.push(s.ranks[0].clone());
        assert_eq!(s.validate().unwrap_err().field, "ranks");
        let mut s = summary();
        s.ranks[0].address = "a".repeat(1000);
        assert_eq!(s.validate().unwrap_err().field, "ranks[0]");
        let mut s = summary();
        s.node = String::new();
        assert_eq!(s.validate().unwrap_err().field, "node");
    }
}
