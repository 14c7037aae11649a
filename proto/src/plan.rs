//! The plan of a job step: every rank's host, GPU, NICs and address, and the ring order(s).
//!
//! `cohort run` writes the whole plan; at a gang start each node gets its share (its own
//! ranks, and the ring order on the node of rank 0). Either is written as JSON, its path given
//! to every rank in `COHORT_PLAN`; the collectives read it to connect ranks and order rings.

use serde::{Deserialize, Serialize};

/// The value of [`Plan::format`].
pub const PLAN_FORMAT: &str = "cohort.plan";

/// The major version of a whole plan (every rank), which this crate writes and reads.
pub const PLAN_VERSION: u32 = 1;

/// The major version of a node's share of a plan (its own ranks, [`Plan::world_size`] set),
/// which this crate writes and reads; a reader of version 1 alone refuses it by its version.
pub const PLAN_SHARE_VERSION: u32 = 2;

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
    /// In a node's share, only the share of rank 0's node has them: rank 0 publishes the ring
    /// order in the rendezvous store for the others.
    pub rings: Vec<Vec<u32>>,
    /// In a node's share of the plan ([`PLAN_SHARE_VERSION`]): the step's number of ranks,
    /// `ranks` holding only the node's own, by rank. Absent: `ranks` holds every rank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_size: Option<u32>,
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
    /// Its GPU's number within the step (the trial's `sys/gpuN` metrics): the step's GPUs
    /// numbered in the order of the lowest rank using each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_number: Option<u32>,
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

/// Every ring a permutation of `0..n`.
fn check_rings(rings: &[Vec<u32>], n: usize) -> Result<(), PlanError> {
    for (r, ring) in rings.iter().enumerate() {
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

impl Plan {
    /// Parses and checks a plan: a whole plan (every rank present once, in order, every
    /// ring a permutation of the ranks) or a node's share.
    pub fn from_json(bytes: &[u8]) -> Result<Plan, PlanError> {
        let plan: Plan = serde_json::from_slice(bytes)?;
        if plan.format != PLAN_FORMAT
            || !(plan.version == PLAN_VERSION || plan.version == PLAN_SHARE_VERSION)
        {
            return Err(PlanError::Unsupported {
                format: plan.format,
                version: plan.version,
            });
        }
        if (plan.version == PLAN_SHARE_VERSION) != plan.world_size.is_some() {
            return Err(PlanError::Inconsistent(format!(
                "version {} with{} a world size: a share (version {PLAN_SHARE_VERSION}) has one, a whole plan none",
                plan.version,
                if plan.world_size.is_some() { "" } else { "out" }
            )));
        }
        plan.check()?;
        Ok(plan)
    }

    /// The step's number of ranks.
    pub fn world_size(&self) -> u32 {
        self.world_size
            .unwrap_or_else(|| u32::try_from(self.ranks.len()).unwrap_or(u32::MAX))
    }

    /// Whether this is one node's share of the plan rather than the whole plan.
    pub fn is_share(&self) -> bool {
        self.world_size.is_some()
    }

    /// Rank `rank`'s entry, when the plan holds it.
    pub fn rank(&self, rank: u32) -> Option<&RankPlan> {
        match self.ranks.get(rank as usize) {
            Some(entry) if entry.rank == rank => Some(entry),
            _ => self
                .ranks
                .binary_search_by_key(&rank, |r| r.rank)
                .ok()
                .map(|i| &self.ranks[i]),
        }
    }

    /// Numbers the step's GPUs (`RankPlan::gpu_number`) in the order of the lowest rank using
    /// each, a GPU being a host and an index; for a whole plan.
    pub fn number_gpus(&mut self) {
        let mut numbers: std::collections::HashMap<(String, u32), u32> =
            std::collections::HashMap::new();
        let mut order: Vec<usize> = (0..self.ranks.len()).collect();
        order.sort_by_key(|&i| self.ranks[i].rank);
        for i in order {
            let rank = &mut self.ranks[i];
            if let Some(gpu) = rank.gpu {
                let next = u32::try_from(numbers.len()).unwrap_or(u32::MAX);
                rank.gpu_number = Some(*numbers.entry((rank.host.clone(), gpu)).or_insert(next));
            }
        }
    }

    /// Every host's share (see [`Plan::share`]), by host, made in one pass over the ranks.
    pub fn shares(&self) -> std::collections::HashMap<String, Plan> {
        let mut shares: std::collections::HashMap<String, Plan> = std::collections::HashMap::new();
        for rank in &self.ranks {
            shares
                .entry(rank.host.clone())
                .or_insert_with(|| Plan {
                    format: PLAN_FORMAT.to_owned(),
                    version: PLAN_SHARE_VERSION,
                    ranks: Vec::new(),
                    rings: Vec::new(),
                    world_size: Some(self.world_size()),
                })
                .ranks
                .push(rank.clone());
        }
        for share in shares.values_mut() {
            share.ranks.sort_by_key(|r| r.rank);
        }
        shares
    }

    /// The share of host `host`: its ranks, the world size, no rings. What a node's launcher
    /// needs of the step's plan, whatever the number of nodes.
    pub fn share(&self, host: &str) -> Plan {
        Plan {
            format: PLAN_FORMAT.to_owned(),
            version: PLAN_SHARE_VERSION,
            ranks: self
                .ranks
                .iter()
                .filter(|r| r.host == host)
                .cloned()
                .collect(),
            rings: Vec::new(),
            world_size: Some(self.world_size()),
        }
    }

    /// Checks the plan's consistency.
    pub fn check(&self) -> Result<(), PlanError> {
        if let Some(world) = self.world_size {
            if let Some(pair) = self.ranks.windows(2).find(|w| w[0].rank >= w[1].rank) {
                return Err(PlanError::Inconsistent(format!(
                    "a share lists rank {} after rank {}",
                    pair[1].rank, pair[0].rank
                )));
            }
            if let Some(rank) = self.ranks.iter().find(|r| r.rank >= world) {
                return Err(PlanError::Inconsistent(format!(
                    "a share of {world} ranks lists rank {}",
                    rank.rank
                )));
            }
            return check_rings(&self.rings, world as usize);
        }
        for (index, rank) in self.ranks.iter().enumerate() {
            if rank.rank as usize != index {
                return Err(PlanError::Inconsistent(format!(
                    "entry {index} is rank {}",
                    rank.rank
                )));
            }
        }
        check_rings(&self.rings, self.ranks.len())
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
            world_size: None,
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
