//! The plan of a job step: every rank's host, GPU, NICs and address, and the ring order(s).
//!
//! `cohort run` (and later the daemons at gang start) write it as JSON and give its path to
//! every rank in `COHORT_PLAN`; the collectives read it to connect ranks and order rings.

use serde::{Deserialize, Serialize};

/// The value of [`Plan::format`].
pub const PLAN_FORMAT: &str = "cohort.plan";

/// The major version this crate writes and reads.
pub const PLAN_VERSION: u32 = 1;

/// Why a plan could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Not JSON, or not shaped like a plan.
    #[error("not a valid plan: {0}")]
    Json(#[from] serde_json::Error),
    /// Another format or major version.
    #[error("plan format {format:?} version {version} is not supported (this build reads {PLAN_FORMAT:?} version {PLAN_VERSION})")]
    Unsupported {
        /// The format found.
        format: String,
        /// The version found.
        version: u32,
    },
    /// The content contradicts itself.
    #[error("inconsistent plan: {0}")]
    Inconsistent(String),
}

/// The plan of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Always [`PLAN_FORMAT`].
    pub format: String,
    /// Always [`PLAN_VERSION`] when written by this crate.
    pub version: u32,
    /// Every rank, indexed by rank.
    pub ranks: Vec<RankPlan>,
    /// Ring orders of ranks; ring `r` uses NIC `r` of every host where hosts have several.
    pub rings: Vec<Vec<u32>>,
}

/// What one rank is given.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RankPlan {
    /// Global rank.
    pub rank: u32,
    /// Host name of the node it runs on.
    pub host: String,
    /// Rank among the ranks of its host.
    pub local_rank: u32,
    /// GPU index on its host, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// Its GPU's vendor (`nvidia`, `amd`, `other`), where known: AMD's runtime narrows by
    /// `ROCR_VISIBLE_DEVICES` first and indexes the other lists among what it left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_vendor: Option<String>,
    /// Its entry in the list of devices the step was granted (`CUDA_VISIBLE_DEVICES` and
    /// its like, in their order): each such variable is narrowed to its entry at this position,
    /// in the form it was given (index, UUID or MIG instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_slot: Option<u32>,
    /// NICs (names) it should use, closest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<String>,
    /// IP address other hosts reach it at (its NIC's address).
    pub address: String,
    /// CPUs it should run on, as a Linux list.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpus: String,
    /// Its NICs that NCCL drives over verbs (InfiniBand, RoCE), as `device:port` for
    /// `NCCL_IB_HCA`, closest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hcas: Vec<String>,
    /// The network interface that holds `address` (for `NCCL_SOCKET_IFNAME`), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Its host's topology in NCCL's format (for `NCCL_TOPO_FILE`), when the host's launcher
    /// exported one: the topology came from a file, or the PCI tree is virtualised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nccl_topo: Option<String>,
}

impl Plan {
    /// Parses and checks a plan: every rank present once, in order, and every ring a
    /// permutation of the ranks.
    pub fn from_json(bytes: &[u8]) -> Result<Plan, PlanError> {
        let plan: Plan = serde_json::from_slice(bytes)?;
        if plan.format != PLAN_FORMAT || plan.version != PLAN_VERSION {
            return Err(PlanError::Unsupported {
                format: plan.format,
                version: plan.version,
            });
        }
        plan.check()?;
        Ok(plan)
    }

    /// Checks the plan's consistency.
    pub fn check(&self) -> Result<(), PlanError> {
        for (index, rank) in self.ranks.iter().enumerate() {
            if rank.rank as usize != index {
                return Err(PlanError::Inconsistent(format!(
                    "entry {index} is rank {}",
                    rank.rank
                )));
            }
        }
        let n = self.ranks.len();
        for (r, ring) in self.rings.iter().enumerate() {
            let mut seen = vec![false; n];
            for &rank in ring {
                match seen.get_mut(rank as usize) {
                    Some(slot) if !*slot => *slot = true,
                    _ => {
                        return Err(PlanError::Inconsistent(format!(
                            "ring {r} lists rank {rank} twice or out of range"
                        )))
                    }
                }
            }
            if ring.len() != n {
                return Err(PlanError::Inconsistent(format!(
                    "ring {r} has {} ranks, the plan {n}",
                    ring.len()
                )));
            }
        }
        Ok(())
    }

    /// Serialises the plan as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rings: Vec<Vec<u32>>) -> Plan {
        Plan {
            format: PLAN_FORMAT.into(),
            version: PLAN_VERSION,
            ranks: (0..3)
                .map(|rank| RankPlan {
                    rank,
                    host: "n1".into(),
                    local_rank: rank,
                    gpu: None,
                    nics: vec![],
                    address: "127.0.0.1".into(),
                    cpus: String::new(),
                    ..RankPlan::default()
                })
                .collect(),
            rings,
        }
    }

    #[test]
    fn plans_round_trip_and_inconsistent_rings_are_refused() {
        let good = plan(vec![vec![0, 2, 1]]);
        assert_eq!(
            Plan::from_json(good.to_json_pretty().as_bytes()).unwrap(),
            good
        );
        for bad in [vec![vec![0, 1]], vec![vec![0, 1, 1]], vec![vec![0, 1, 7]]] {
            let text = plan(bad).to_json_pretty();
            assert!(matches!(
                Plan::from_json(text.as_bytes()),
                Err(PlanError::Inconsistent(_))
            ));
        }
    }
}
