//! Planning ranks onto hardware: which GPU, NICs and CPUs each rank gets, and the ring orders.
//!
//! The same functions serve `cohort run` on one machine and the daemons at gang start: ranks
//! of a host are ordered so ring neighbours are as close as the topology allows, hosts so that
//! neighbours share a switch where Slurm's topology address says so, and ring `r` uses NIC `r`.

use cohort_proto::plan::{Plan, RankPlan, PLAN_FORMAT, PLAN_VERSION};

use crate::assign::AssignError;
use crate::model::{NicKind, PciKind, PortState, Topology};
use crate::path::Device;
use crate::CpuList;

/// Orders a host's GPUs (by index) into a chain where each step is as short as possible:
/// start at the lowest index, then always go to the closest GPU not yet in the chain (ties by
/// index). With NVLink all-to-all this is index order; over PCIe it keeps switch-mates adjacent.
pub fn order_gpus(topo: &Topology, gpus: &[u32]) -> Vec<u32> {
    let position = |index: u32| topo.gpus.iter().position(|gpu| gpu.index == index);
    let mut left: Vec<u32> = gpus.to_vec();
    left.sort_unstable();
    left.dedup();
    let mut chain = Vec::with_capacity(left.len());
    if left.is_empty() {
        return chain;
    }
    chain.push(left.remove(0));
    while !left.is_empty() {
        let last = *chain.last().unwrap_or(&0);
        let next = (0..left.len())
            .min_by_key(|&i| {
                let class = match (position(last), position(left[i])) {
                    (Some(a), Some(b)) => Some(topo.path_class(Device::Gpu(a), Device::Gpu(b))),
                    _ => None,
                };
                (class.is_none(), class, left[i])
            })
            .unwrap_or(0);
        chain.push(left.remove(next));
    }
    chain
}

/// Orders hosts so that hosts under the same switches are adjacent: by Slurm topology address
/// (`s0.s1.node`, compared component by component), hosts without one last, then by name.
pub fn order_hosts(hosts: &[(String, Option<String>)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..hosts.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| {
            let (name, address) = &hosts[i];
            let parts: Vec<String> = address
                .as_deref()
                .map(|a| a.split('.').map(str::to_owned).collect())
                .unwrap_or_default();
            (address.is_none(), parts, name.clone())
        };
        key(a).cmp(&key(b))
    });
    order
}

/// Options for planning ranks on this one machine.
#[derive(Debug, Clone)]
pub struct LocalPlanOptions {
    /// Number of ranks.
    pub n_ranks: u32,
    /// GPUs to use (all when `None`); rank `i` gets the `i`-th GPU of the ring order, modulo
    /// their number.
    pub gpus: Option<Vec<u32>>,
    /// Host name written into the plan.
    pub host: String,
    /// Address the ranks listen on.
    pub address: String,
}

impl Topology {
    /// Plans `n_ranks` ranks on this machine: GPUs (if any) in ring order, the NICs closest to
    /// each rank's GPU, and CPUs local to the GPU or, without GPUs, an even split of all CPUs.
    pub fn local_plan(&self, options: &LocalPlanOptions) -> Result<Plan, AssignError> {
        let wanted: Vec<u32> = match &options.gpus {
            Some(list) => list.clone(),
            None => self.gpus.iter().map(|gpu| gpu.index).collect(),
        };
        let assignment = self.assign_nics(Some(&wanted))?;
        let ordered = order_gpus(self, &wanted);
        let all_cpus = self
            .numa_nodes
            .iter()
            .fold(CpuList::default(), |acc, node| acc.union(&node.cpus));
        let n = options.n_ranks;
        let ranks = (0..n)
            .map(|rank| {
                let gpu = (!ordered.is_empty()).then(|| ordered[rank as usize % ordered.len()]);
                let (nics, cpus) = match gpu {
                    Some(index) => {
                        let nics = assignment
                            .iter()
                            .find(|a| a.gpu == index)
                            .map(|a| a.nics.iter().map(|&n| self.nics[n].name.clone()).collect())
                            .unwrap_or_default();
                        let cpus = self
                            .gpu(index)
                            .map(|gpu| self.gpu_locality(gpu).cpus.clone())
                            .unwrap_or_default();
                        (nics, cpus)
                    }
                    None => (Vec::new(), split_cpus(&all_cpus, rank, n)),
                };
                RankPlan {
                    rank,
                    host: options.host.clone(),
                    local_rank: rank,
                    gpu,
                    hcas: self.hcas(&nics),
                    ifname: self.interface_with(&options.address),
                    nics,
                    address: options.address.clone(),
                    cpus: cpus.to_string(),
                    nccl_topo: None,
                    device_slot: None,
                    gpu_number: None,
                    gpu_vendor: gpu
                        .and_then(|index| self.gpu(index))
                        .map(|g| g.vendor.as_str().to_owned()),
                }
            })
            .collect();
        let mut plan = Plan {
            format: PLAN_FORMAT.to_owned(),
            version: PLAN_VERSION,
            ranks,
            rings: vec![(0..n).collect()],
            world_size: None,
        };
        plan.number_gpus();
        Ok(plan)
    }
}

impl Topology {
    /// The index of the GPU a device-list entry names: a GPU index, `GPU-<uuid>` (or, as CUDA
    /// accepts, a prefix naming one GPU alone) or an old-style MIG instance
    /// `MIG-GPU-<uuid>/<gi>/<ci>` (its GPU's). A new-style `MIG-<uuid>` does not name its GPU.
    pub fn gpu_named(&self, id: &str) -> Result<u32, String> {
        let id = id.trim();
        if let Ok(index) = id.parse::<u32>() {
            return self
                .gpu(index)
                .map(|gpu| gpu.index)
                .ok_or_else(|| format!("{id}: this node has no GPU {index}"));
        }
        let uuid = match id.strip_prefix("MIG-") {
            Some(rest) if rest.starts_with("GPU-") => rest.split('/').next().unwrap_or(rest),
            Some(_) => {
                return Err(format!(
                    "{id}: a MIG instance's UUID does not say which GPU holds it; give the step GPU indices or MIG-GPU-<uuid>/<gi>/<ci> names"
                ))
            }
            None if id.starts_with("GPU-") => id,
            None => return Err(format!("{id}: neither a GPU index nor a GPU-<uuid> name")),
        };
        let matching: Vec<u32> = self
            .gpus
            .iter()
            .filter(|gpu| gpu.uuid.as_deref().is_some_and(|u| u.starts_with(uuid)))
            .map(|gpu| gpu.index)
            .collect();
        match matching.as_slice() {
            [index] => Ok(*index),
            [] if self.gpus.iter().all(|gpu| gpu.uuid.is_none()) => Err(format!(
                "{id}: this node's topology has no GPU UUIDs (NVML or hwloc's NVML component gives them)"
            )),
            [] => Err(format!("{id}: none of this node's GPUs has this UUID")),
            _ => Err(format!("{uuid}: names {} GPUs; give more of the UUID", matching.len())),
        }
    }

    /// `NCCL_IB_HCA` entries (`device:port`) for the NICs named, in order: those NCCL drives
    /// over verbs (InfiniBand, RoCE; EFA goes through its own plugin, iWARP is not NCCL's),
    /// each with its first active port, else its first port, else port 1.
    pub fn hcas(&self, nics: &[String]) -> Vec<String> {
        nics.iter()
            .filter_map(|name| self.nics.iter().find(|nic| nic.name == *name))
            .filter(|nic| matches!(nic.kind, NicKind::InfiniBand | NicKind::Roce))
            .map(|nic| {
                let port = nic
                    .ports
                    .iter()
                    .find(|p| p.state == PortState::Active)
                    .or_else(|| nic.ports.first())
                    .map_or(1, |p| p.number);
                format!("{}:{port}", nic.name)
            })
            .collect()
    }

    /// The network interface of an RDMA NIC that holds `address`, where the topology knows
    /// the addresses (a live node's sysfs).
    pub fn interface_with(&self, address: &str) -> Option<String> {
        self.nics
            .iter()
            .flat_map(|nic| nic.netdevs.iter())
            .find(|dev| dev.addresses.iter().any(|a| a == address))
            .map(|dev| dev.name.clone())
    }

    /// Whether the PCI tree looks virtualised, as cloud VMs show it: two or more GPUs, each
    /// directly on the root bus (no bridge between it and its host bridge or CPU), as a
    /// hypervisor presents devices it passes through. NCCL, reading such a tree, sees every GPU
    /// and NIC as equally far apart, the host's switches being hidden. A bare-metal server puts
    /// its GPUs behind root ports or switches.
    pub fn pci_virtualised(&self) -> bool {
        self.gpus.len() >= 2
            && self.gpus.iter().all(|gpu| {
                self.pci
                    .get(gpu.pci)
                    .and_then(|node| node.parent)
                    .is_none_or(|parent| self.pci[parent].kind == PciKind::HostBridge)
            })
    }
}

/// The `part`-th of `parts` nearly equal slices of a CPU set (all CPUs when there are more
/// parts than CPUs, so no rank is left without one).
fn split_cpus(cpus: &CpuList, part: u32, parts: u32) -> CpuList {
    let all = cpus.indices();
    let parts = parts.max(1) as usize;
    if all.len() < parts {
        return cpus.clone();
    }
    let part = part as usize;
    let start = all.len() * part / parts;
    let end = all.len() * (part + 1) / parts;
    CpuList::from_indices(all[start..end].iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_sharing_switches_are_adjacent() {
        let hosts = vec![
            ("n4".to_owned(), Some("s1.s3.n4".to_owned())),
            ("n1".to_owned(), Some("s1.s2.n1".to_owned())),
            ("n9".to_owned(), None),
            ("n3".to_owned(), Some("s1.s3.n3".to_owned())),
            ("n2".to_owned(), Some("s1.s2.n2".to_owned())),
        ];
        let order: Vec<&str> = order_hosts(&hosts)
            .into_iter()
            .map(|i| hosts[i].0.as_str())
            .collect();
        assert_eq!(order, ["n1", "n2", "n3", "n4", "n9"]);
    }

    #[test]
    fn cpus_split_evenly() {
        let cpus = CpuList::parse_list("0-7").unwrap();
        let parts: Vec<String> = (0..3)
            .map(|p| split_cpus(&cpus, p, 3).to_string())
            .collect();
        assert_eq!(parts, ["0-1", "2-4", "5-7"]);
        assert_eq!(
            split_cpus(&CpuList::parse_list("0-1").unwrap(), 2, 4).to_string(),
            "0-1"
        );
    }
}
