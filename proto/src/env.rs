//! The environment of a rank: the name of every variable Cohort sets or reads, and the one
//! builder of a rank's environment from a plan, used by every launcher (the SPANK plugin and
//! `cohort run`), so that a program sees the same variables however it was started.

use crate::plan::Plan;

/// This rank (0 to world size - 1).
pub const RANK: &str = "COHORT_RANK";
/// Number of ranks.
pub const WORLD_SIZE: &str = "COHORT_WORLD_SIZE";
/// Rank among the ranks on this host.
pub const LOCAL_RANK: &str = "COHORT_LOCAL_RANK";
/// Number of ranks on this host.
pub const LOCAL_WORLD_SIZE: &str = "COHORT_LOCAL_WORLD_SIZE";
/// The rendezvous store (`host:port`), served by rank 0.
pub const STORE: &str = "COHORT_STORE";
/// For rank 0: the store's socket, bound by the launcher and inherited as this descriptor.
pub const STORE_FD: &str = "COHORT_STORE_FD";
/// The step's secret, proved by every connection of the store and between ranks.
pub const SECRET: &str = "COHORT_SECRET";
/// Path of the step's plan (JSON, `crate::plan::Plan`).
pub const PLAN: &str = "COHORT_PLAN";
/// The NIC closest to this rank's GPU.
pub const NIC: &str = "COHORT_NIC";
/// The CPUs near this rank's GPU, as a Linux CPU list.
pub const CPUS: &str = "COHORT_CPUS";
/// Deadline of every blocking collective operation, in seconds.
pub const TIMEOUT: &str = "COHORT_TIMEOUT";
/// Transports allowed: `auto`, `tcp`, `tcp-slots`, `rdma`.
pub const TRANSPORT: &str = "COHORT_TRANSPORT";
/// Allreduce algorithm: `auto`, `ring`, `rd`.
pub const ALGO: &str = "COHORT_ALGO";
/// TCP connections per peer between hosts: `auto` or 1 to 16.
pub const TCP_STREAMS: &str = "COHORT_TCP_STREAMS";
/// The RDMA device and port to use (`mlx5_0:1`), instead of the one behind the NIC.
pub const RDMA_DEVICE: &str = "COHORT_RDMA_DEVICE";
/// The experiment catalog's root directory.
pub const CATALOG: &str = "COHORT_CATALOG";
/// A configuration file naming the catalog (when `COHORT_CATALOG` is not set).
pub const CONFIG: &str = "COHORT_CONFIG";
/// The experiment a run is recorded under.
pub const EXPERIMENT: &str = "COHORT_EXPERIMENT";
/// The trial a run is recorded as.
pub const TRIAL: &str = "COHORT_TRIAL";
/// A trial's hyperparameters, as a JSON object.
pub const HPARAMS: &str = "COHORT_HPARAMS";
/// For a search's trial: the length (steps) to train until before reporting.
pub const SEARCH_UNTIL: &str = "COHORT_SEARCH_UNTIL";
/// The signal that warns a worker to checkpoint and stop (`USR2` by default; Slurm sends it
/// with `--signal=USR2@SECONDS` before the time limit).
pub const STOP_SIGNAL: &str = "COHORT_STOP_SIGNAL";
/// `1`: every rank records metrics, not only rank 0.
pub const TRACK_ALL_RANKS: &str = "COHORT_TRACK_ALL_RANKS";
/// `cohortd`'s log filter, over its configuration's.
pub const LOG: &str = "COHORT_LOG";
/// `cohortd`'s log format (`plain`, `json`), over its configuration's.
pub const LOG_FORMAT: &str = "COHORT_LOG_FORMAT";

/// The names PyTorch's `init_process_group(init_method="env://")` reads, and the GPU list.
pub mod torch {
    /// Global rank.
    pub const RANK: &str = "RANK";
    /// Number of ranks.
    pub const WORLD_SIZE: &str = "WORLD_SIZE";
    /// Rank on this host.
    pub const LOCAL_RANK: &str = "LOCAL_RANK";
    /// Ranks on this host.
    pub const LOCAL_WORLD_SIZE: &str = "LOCAL_WORLD_SIZE";
    /// Host of torch's own rendezvous (rank 0's, the store's host).
    pub const MASTER_ADDR: &str = "MASTER_ADDR";
    /// Port of torch's own rendezvous: the store's port + 1.
    pub const MASTER_PORT: &str = "MASTER_PORT";
    /// The GPUs this process sees (its own GPU).
    pub const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";
}

/// NCCL's variables (RCCL, for AMD GPUs, reads the same names), which Cohort sets from the
/// plan as hints: only where the user's environment has none ([`nccl_env`]).
pub mod nccl {
    /// The HCAs and ports NCCL's verbs transport uses (`=mlx5_0:1,mlx5_1:1`: `=` asks for
    /// exactly these).
    pub const IB_HCA: &str = "NCCL_IB_HCA";
    /// The interface NCCL's bootstrap and socket transport use (`=ib0`: exactly this one).
    pub const SOCKET_IFNAME: &str = "NCCL_SOCKET_IFNAME";
    /// A topology file NCCL reads instead of probing the PCI tree.
    pub const TOPO_FILE: &str = "NCCL_TOPO_FILE";
}

/// NCCL's variables for rank `rank` of `plan`: its HCAs, the interface of its address, and
/// its host's exported topology, each where the plan knows it. Launchers set each only where
/// the user's environment does not already (a value the user set always wins), and not at all
/// when NCCL hints are switched off.
pub fn nccl_env(plan: &Plan, rank: u32) -> Result<Vec<(&'static str, String)>, String> {
    let me = plan
        .rank(rank)
        .ok_or_else(|| format!("rank {rank} is not in the plan"))?;
    let mut env = Vec::new();
    if !me.hcas.is_empty() {
        env.push((nccl::IB_HCA, format!("={}", me.hcas.join(","))));
    }
    if let Some(ifname) = &me.ifname {
        env.push((nccl::SOCKET_IFNAME, format!("={ifname}")));
    }
    if let Some(path) = &me.nccl_topo {
        env.push((nccl::TOPO_FILE, path.clone()));
    }
    Ok(env)
}

/// What a launcher knows beyond the plan.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// Where the plan was written for the ranks to read.
    pub plan_path: &'a str,
    /// The rendezvous store's address (`host:port`).
    pub store: &'a str,
    /// The step's secret.
    pub secret: &'a str,
    /// Whether each rank sees only its own GPU (`CUDA_VISIBLE_DEVICES`); false leaves the
    /// variable as the launcher's environment has it.
    pub own_gpu: bool,
}

/// The environment of rank `rank` of `plan`: Cohort's variables and the torch conventions,
/// in a fixed order. The error says what in the plan or the store address is wrong.
pub fn rank_env(
    plan: &Plan,
    rank: u32,
    launch: &Launch<'_>,
) -> Result<Vec<(&'static str, String)>, String> {
    let me = plan
        .rank(rank)
        .ok_or_else(|| format!("rank {rank} is not in the plan"))?;
    let world = plan.world_size().to_string();
    let local_world = plan
        .ranks
        .iter()
        .filter(|r| r.host == me.host)
        .count()
        .to_string();
    let (store_host, store_port) = launch
        .store
        .rsplit_once(':')
        .ok_or_else(|| format!("the store address {:?} has no port", launch.store))?;
    let master_port = store_port
        .parse::<u16>()
        .ok()
        .and_then(|port| port.checked_add(1))
        .ok_or_else(|| {
            format!(
                "the store address {:?} has no port below 65535 (MASTER_PORT is the next one)",
                launch.store
            )
        })?;
    let mut env = vec![
        (RANK, rank.to_string()),
        (WORLD_SIZE, world.clone()),
        (LOCAL_RANK, me.local_rank.to_string()),
        (LOCAL_WORLD_SIZE, local_world.clone()),
        (STORE, launch.store.to_owned()),
        (SECRET, launch.secret.to_owned()),
        (PLAN, launch.plan_path.to_owned()),
        (torch::RANK, rank.to_string()),
        (torch::WORLD_SIZE, world),
        (torch::LOCAL_RANK, me.local_rank.to_string()),
        (torch::LOCAL_WORLD_SIZE, local_world),
        (torch::MASTER_ADDR, store_host.to_owned()),
        (torch::MASTER_PORT, master_port.to_string()),
    ];
    if let Some(nic) = me.nics.first() {
        env.push((NIC, nic.clone()));
    }
    if let (Some(gpu), true) = (me.gpu, launch.own_gpu) {
        env.push((torch::CUDA_VISIBLE_DEVICES, gpu.to_string()));
    }
    if !me.cpus.is_empty() {
        env.push((CPUS, me.cpus.clone()));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{RankPlan, PLAN_FORMAT, PLAN_VERSION};

    fn plan() -> Plan {
        let rank = |rank: u32, host: &str, local_rank: u32, cpus: &str| RankPlan {
            rank,
            host: host.into(),
            local_rank,
            gpu: Some(local_rank),
            nics: vec![format!("mlx5_{local_rank}")],
            address: "10.0.0.1".into(),
            cpus: cpus.into(),
            ..RankPlan::default()
        };
        Plan {
            format: PLAN_FORMAT.into(),
            version: PLAN_VERSION,
            ranks: vec![
                rank(0, "n1", 0, "0-3"),
                rank(1, "n1", 1, "4-7"),
                rank(2, "n2", 0, ""),
            ],
            rings: vec![vec![0, 1, 2]],
            world_size: None,
        }
    }

    const LAUNCH: Launch<'static> = Launch {
        plan_path: "/tmp/p.json",
        store: "10.0.0.1:40000",
        secret: "s3cr3t",
        own_gpu: true,
    };

    #[test]
    fn nccl_hints_name_exactly_the_ranks_hcas_interface_and_topology_file() {
        let mut plan = plan();
        assert_eq!(nccl_env(&plan, 0).unwrap(), Vec::new());
        plan.ranks[1].hcas = vec!["mlx5_1:1".into(), "mlx5_3:2".into()];
        plan.ranks[1].ifname = Some("ib1".into());
        plan.ranks[1].nccl_topo = Some("/run/cohort/nccl-topo-1.xml".into());
        assert_eq!(
            nccl_env(&plan, 1).unwrap(),
            vec![
                ("NCCL_IB_HCA", "=mlx5_1:1,mlx5_3:2".to_owned()),
                ("NCCL_SOCKET_IFNAME", "=ib1".to_owned()),
                ("NCCL_TOPO_FILE", "/run/cohort/nccl-topo-1.xml".to_owned()),
            ]
        );
        assert!(nccl_env(&plan, 3).unwrap_err().contains("rank 3"));
    }

    #[test]
    fn a_rank_gets_its_place_the_store_and_the_torch_conventions() {
        let env = rank_env(&plan(), 1, &LAUNCH).unwrap();
        let expected = [
            ("COHORT_RANK", "1"),
            ("COHORT_WORLD_SIZE", "3"),
            ("COHORT_LOCAL_RANK", "1"),
            ("COHORT_LOCAL_WORLD_SIZE", "2"),
            ("COHORT_STORE", "10.0.0.1:40000"),
            ("COHORT_SECRET", "s3cr3t"),
            ("COHORT_PLAN", "/tmp/p.json"),
            ("RANK", "1"),
            ("WORLD_SIZE", "3"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "40001"),
            ("COHORT_NIC", "mlx5_1"),
            ("CUDA_VISIBLE_DEVICES", "1"),
            ("COHORT_CPUS", "4-7"),
        ];
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(got, expected);
        // Rank 2 is alone on its host and has no CPU list.
        let env = rank_env(&plan(), 2, &LAUNCH).unwrap();
        assert!(env.contains(&("COHORT_LOCAL_WORLD_SIZE", "1".to_owned())));
        assert!(!env.iter().any(|(k, _)| *k == CPUS));
    }

    #[test]
    fn gpus_are_left_alone_when_asked_and_bad_inputs_are_named() {
        let launch = Launch {
            own_gpu: false,
            ..LAUNCH
        };
        let env = rank_env(&plan(), 0, &launch).unwrap();
        assert!(!env.iter().any(|(k, _)| *k == torch::CUDA_VISIBLE_DEVICES));
        assert!(rank_env(&plan(), 3, &LAUNCH)
            .unwrap_err()
            .contains("rank 3"));
        let launch = Launch {
            store: "10.0.0.1:65535",
            ..LAUNCH
        };
        assert!(rank_env(&plan(), 0, &launch)
            .unwrap_err()
            .contains("MASTER_PORT"));
        let launch = Launch {
            store: "nowhere",
            ..LAUNCH
        };
        assert!(rank_env(&plan(), 0, &launch)
            .unwrap_err()
            .contains("no port"));
    }
}
