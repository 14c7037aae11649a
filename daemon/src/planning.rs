//! The pure part of a gang start: placing a node's ranks on its hardware, and assembling the
//! nodes' parts into one plan. No I/O, no clock, no randomness: the same parts give the same
//! plan, which `test_data/plans/` pins down case by case.

use std::net::IpAddr;

use cohort_proto::plan::{Plan, RankPlan, PLAN_FORMAT, PLAN_VERSION};
use cohort_topology::{LocalPlanOptions, Topology};

/// Places a node's ranks on its own hardware: GPUs in ring order, closest NICs, local CPUs,
/// and the address peers reach them at (the first assigned NIC's IPv4 address when it has one,
/// else `fallback`: the address and its interface), with NCCL's hints: the HCAs, the
/// interface of the address, and the node's exported NCCL topology file, where there is one.
pub(crate) fn place_ranks(
    topology: Option<&Topology>,
    node: &str,
    ranks: &[u32],
    gpus: &[u32],
    fallback: (IpAddr, Option<&str>),
    nccl_topo: Option<&str>,
) -> Result<Vec<RankPlan>, String> {
    let n_ranks = u32::try_from(ranks.len()).map_err(|_| "too many ranks".to_owned())?;
    let empty = Topology::default();
    let topo = topology.unwrap_or(&empty);
    // Several MIG instances of one GPU are one GPU to place ranks on.
    let mut distinct = gpus.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let local = topo
        .local_plan(&LocalPlanOptions {
            n_ranks,
            gpus: Some(distinct),
            host: node.to_owned(),
            address: fallback.0.to_string(),
        })
        .map_err(|e| format!("GPUs granted by Slurm: {e}"))?;
    // Each rank's entry in the device list: the first not yet taken that names its GPU (so
    // ranks sharing a GPU get its MIG instances in turn), else the GPU's first.
    let mut taken = vec![false; gpus.len()];
    Ok(local
        .ranks
        .into_iter()
        .zip(ranks)
        .map(|(mut plan, &global)| {
            plan.rank = global;
            if let Some(gpu) = plan.gpu {
                let free = (0..gpus.len()).find(|&p| gpus[p] == gpu && !taken[p]);
                let slot = free.or_else(|| gpus.iter().position(|&g| g == gpu));
                if let Some(p) = free {
                    taken[p] = true;
                }
                plan.device_slot = slot.and_then(|p| u32::try_from(p).ok());
            }
            match plan.nics.first().and_then(|name| nic_ipv4(topo, name)) {
                Some((address, ifname)) => {
                    plan.address = address;
                    plan.ifname = Some(ifname);
                }
                None => plan.ifname = fallback.1.map(str::to_owned),
            }
            plan.nccl_topo = nccl_topo.map(str::to_owned);
            plan
        })
        .collect())
}

/// The GPUs a join was granted, in the order of the step's device list: its indices, or the
/// GPU each of its device names (`GPU-<uuid>`, `MIG-GPU-<uuid>/..`) stands for on this node.
pub(crate) fn granted_gpus(
    topology: Option<&Topology>,
    gpus: &[u32],
    gpu_ids: &[String],
) -> Result<Vec<u32>, String> {
    if !gpus.is_empty() || gpu_ids.is_empty() {
        return Ok(gpus.to_vec());
    }
    let empty = Topology::default();
    let topo = topology.unwrap_or(&empty);
    gpu_ids
        .iter()
        .map(|id| {
            topo.gpu_named(id)
                .map_err(|e| format!("the step's device list: {e}"))
        })
        .collect()
}

/// A NIC's first IPv4 address and the interface that holds it.
fn nic_ipv4(topo: &Topology, name: &str) -> Option<(String, String)> {
    topo.nics
        .iter()
        .find(|nic| nic.name == name)?
        .netdevs
        .iter()
        .find_map(|dev| {
            dev.addresses
                .iter()
                .find(|address| address.parse::<std::net::Ipv4Addr>().is_ok())
                .map(|address| (address.clone(), dev.name.clone()))
        })
}

/// One node's part of a step: its name, Slurm's topology address, its ranks already placed.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct NodePart {
    pub(crate) node: String,
    #[serde(default)]
    pub(crate) topology_addr: Option<String>,
    pub(crate) ranks: Vec<RankPlan>,
}

/// Assembles the nodes' parts into the step's plan: ranks by number, one ring through the
/// hosts ordered so that neighbours share switches (Slurm's topology address), each host's
/// ranks in their local ring order. The error says what does not fit: ranks that do not make
/// 0..world size, or a node placing a rank on another host.
pub(crate) fn assemble(parts: Vec<NodePart>, world_size: u32) -> Result<Plan, String> {
    for part in &parts {
        if let Some(rank) = part.ranks.iter().find(|r| r.host != part.node) {
            return Err(format!(
                "node {} placed rank {} on another host ({})",
                part.node, rank.rank, rank.host
            ));
        }
    }
    let hosts: Vec<(String, Option<String>)> = parts
        .iter()
        .map(|p| (p.node.clone(), p.topology_addr.clone()))
        .collect();
    let order = cohort_topology::plan::order_hosts(&hosts);
    let ring: Vec<u32> = order
        .iter()
        .flat_map(|&i| parts[i].ranks.iter().map(|r| r.rank))
        .collect();
    let mut ranks: Vec<RankPlan> = parts.into_iter().flat_map(|p| p.ranks).collect();
    ranks.sort_by_key(|r| r.rank);
    let world = world_size as usize;
    if ranks.len() != world || ranks.iter().enumerate().any(|(i, r)| r.rank as usize != i) {
        return Err(format!(
            "the nodes' ranks do not make 0..{} (got {:?})",
            world,
            ranks.iter().map(|r| r.rank).collect::<Vec<_>>()
        ));
    }
    let mut plan = Plan {
        format: PLAN_FORMAT.to_owned(),
        version: PLAN_VERSION,
        ranks,
        rings: vec![ring],
        world_size: None,
    };
    plan.number_gpus();
    plan.check().map_err(|e| e.to_string())?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A case: each node's topology file (or none), granted GPUs, ranks and address, placed
    /// with `place_ranks`, then assembled.
    #[derive(Debug, serde::Deserialize)]
    struct Case {
        world_size: u32,
        nodes: Vec<CaseNode>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct CaseNode {
        node: String,
        #[serde(default)]
        topology: Option<PathBuf>,
        #[serde(default)]
        topology_addr: Option<String>,
        ranks: Vec<u32>,
        #[serde(default)]
        gpus: Vec<u32>,
        address: IpAddr,
        /// The interface of `address`.
        #[serde(default)]
        ifname: Option<String>,
        /// The node's exported NCCL topology file.
        #[serde(default)]
        nccl_topo: Option<String>,
        /// The step's device list when it names GPUs rather than indexing them.
        #[serde(default)]
        gpu_ids: Vec<String>,
        /// UUIDs given to the topology file's GPUs, in index order (the files have none;
        /// NVML gives them on a live node).
        #[serde(default)]
        uuids: Vec<String>,
    }

    fn run(case: &Case, root: &Path) -> String {
        let mut parts = Vec::new();
        for node in &case.nodes {
            let mut topology = node
                .topology
                .as_ref()
                .map(|file| Topology::from_file(&root.join(file)).unwrap());
            if let Some(topo) = &mut topology {
                for (gpu, uuid) in topo.gpus.iter_mut().zip(&node.uuids) {
                    gpu.uuid = Some(uuid.clone());
                }
            }
            let gpus = match granted_gpus(topology.as_ref(), &node.gpus, &node.gpu_ids) {
                Ok(gpus) => gpus,
                Err(e) => return format!("error: {e}\n"),
            };
            match place_ranks(
                topology.as_ref(),
                &node.node,
                &node.ranks,
                &gpus,
                (node.address, node.ifname.as_deref()),
                node.nccl_topo.as_deref(),
            ) {
                Ok(ranks) => parts.push(NodePart {
                    node: node.node.clone(),
                    topology_addr: node.topology_addr.clone(),
                    ranks,
                }),
                Err(e) => return format!("error: {e}\n"),
            }
        }
        match assemble(parts, case.world_size) {
            Ok(plan) => format!("{}\n", plan.to_json_pretty()),
            Err(e) => format!("error: {e}\n"),
        }
    }

    /// Every `test_data/plans/*.case.json` gives the plan (or error) in its `.plan.json`;
    /// `UPDATE_EXPECT=1` rewrites them after a deliberate change (review the diff).
    #[test]
    fn every_case_gives_its_recorded_plan() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("test_data/plans");
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".case.json"))
            .collect();
        cases.sort();
        assert!(cases.len() >= 4, "{cases:?}");
        let update = std::env::var_os("UPDATE_EXPECT").is_some();
        let mut wrong = Vec::new();
        for path in cases {
            let case: Case = serde_json::from_slice(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let got = run(&case, &root.join(".."));
            let expected_path =
                PathBuf::from(path.to_string_lossy().replace(".case.json", ".plan.json"));
            if update {
                std::fs::write(&expected_path, &got).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
            if got != expected {
                wrong.push(format!("{}:\n{got}", expected_path.display()));
            }
        }
        assert!(
            wrong.is_empty(),
            "plans differ (UPDATE_EXPECT=1 to accept):\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn a_node_cannot_place_a_rank_on_another_host() {
        let rank = RankPlan {
            rank: 0,
            host: "elsewhere".into(),
            local_rank: 0,
            gpu: None,
            nics: vec![],
            address: "10.0.0.9".into(),
            cpus: String::new(),
            ..RankPlan::default()
        };
        let part = NodePart {
            node: "n1".into(),
            topology_addr: None,
            ranks: vec![rank],
        };
        let err = assemble(vec![part], 1).unwrap_err();
        assert!(
            err.contains("node n1 placed rank 0 on another host (elsewhere)"),
            "{err}"
        );
    }
}
