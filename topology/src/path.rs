//! Path classes between two devices, with the meaning `nvidia-smi topo -m` gives them.
//!
//! PCIe switches are counted as one bridge each, whatever number of PCI-PCI bridge functions
//! they expose: a switch's upstream port and its downstream ports are one hop, as NCCL counts
//! them. A root port alone (no switch) is one bridge too.

use std::cmp::Ordering;
use std::fmt;

use crate::model::{Locality, NvLinkPeer, PciIdx, PciKind, Topology};

/// How two devices are connected, from best to worst. `Ord` follows that order: a smaller
/// class is a better path, and among NVLink paths more links are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathClass {
    /// NVLink, directly or through NVSwitches, with this many links (`NV#`).
    NvLink(u32),
    /// Through at most one PCIe bridge or switch, without a host bridge (`PIX`).
    Pix,
    /// Through several PCIe bridges or switches, without a host bridge (`PXB`).
    Pxb,
    /// Through a PCIe host bridge, typically the CPU's root complex (`PHB`).
    Phb,
    /// Within one NUMA node, between different host bridges (`NODE`).
    Node,
    /// Across the interconnect between NUMA nodes (QPI/UPI, Infinity Fabric) (`SYS`).
    Sys,
}

impl PathClass {
    fn rank(self) -> (u8, std::cmp::Reverse<u32>) {
        match self {
            PathClass::NvLink(links) => (0, std::cmp::Reverse(links)),
            PathClass::Pix => (1, std::cmp::Reverse(0)),
            PathClass::Pxb => (2, std::cmp::Reverse(0)),
            PathClass::Phb => (3, std::cmp::Reverse(0)),
            PathClass::Node => (4, std::cmp::Reverse(0)),
            PathClass::Sys => (5, std::cmp::Reverse(0)),
        }
    }

    /// The legend line for this class (without the link count).
    pub fn meaning(self) -> &'static str {
        match self {
            PathClass::NvLink(_) => "Connection traversing a bonded set of # NVLinks",
            PathClass::Pix => "Connection traversing at most a single PCIe bridge",
            PathClass::Pxb => {
                "Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)"
            }
            PathClass::Phb => {
                "Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)"
            }
            PathClass::Node => {
                "Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node"
            }
            PathClass::Sys => {
                "Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)"
            }
        }
    }
}

impl PartialOrd for PathClass {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PathClass {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl fmt::Display for PathClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathClass::NvLink(links) => write!(f, "NV{links}"),
            PathClass::Pix => f.write_str("PIX"),
            PathClass::Pxb => f.write_str("PXB"),
            PathClass::Phb => f.write_str("PHB"),
            PathClass::Node => f.write_str("NODE"),
            PathClass::Sys => f.write_str("SYS"),
        }
    }
}

/// A device that has a place in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// A GPU, by position in [`Topology::gpus`].
    Gpu(usize),
    /// A NIC, by position in [`Topology::nics`].
    Nic(usize),
}

impl Topology {
    fn device_pci(&self, device: Device) -> Option<PciIdx> {
        match device {
            Device::Gpu(pos) => Some(self.gpus[pos].pci),
            Device::Nic(pos) => self.nics[pos].pci,
        }
    }

    fn device_locality(&self, device: Device) -> &Locality {
        match device {
            Device::Gpu(pos) => self.gpu_locality(&self.gpus[pos]),
            Device::Nic(pos) => &self.nics[pos].locality,
        }
    }

    /// The path class between two different devices.
    pub fn path_class(&self, a: Device, b: Device) -> PathClass {
        if let (Device::Gpu(ga), Device::Gpu(gb)) = (a, b) {
            if let Some(links) = self.nvlink_count(ga, gb) {
                return PathClass::NvLink(links);
            }
        }
        match (self.device_pci(a), self.device_pci(b)) {
            (Some(pa), Some(pb)) => self.pci_path_class(pa, pb),
            _ => locality_class(self.device_locality(a), self.device_locality(b)),
        }
    }

    /// NVLinks between two GPUs (by position): direct links, or else the smaller of their
    /// link counts into the NVSwitch fabric when both are attached to NVSwitches.
    fn nvlink_count(&self, ga: usize, gb: usize) -> Option<u32> {
        let a = &self.gpus[ga];
        let b = &self.gpus[gb];
        let direct: u32 = a
            .nvlinks
            .iter()
            .filter(|link| link.peer == NvLinkPeer::Gpu(b.index))
            .map(|link| link.links)
            .sum();
        if direct > 0 {
            return Some(direct);
        }
        let switched = |gpu: &crate::model::Gpu| -> u32 {
            gpu.nvlinks
                .iter()
                .filter(|link| matches!(link.peer, NvLinkPeer::NvSwitch(_)))
                .map(|link| link.links)
                .sum()
        };
        let (sa, sb) = (switched(a), switched(b));
        (sa > 0 && sb > 0).then(|| sa.min(sb))
    }

    /// Ancestors of a PCI node from its parent up to the top.
    fn pci_ancestors(&self, idx: PciIdx) -> Vec<PciIdx> {
        let mut chain = Vec::new();
        let mut cursor = self.pci[idx].parent;
        while let Some(parent) = cursor {
            // A malformed arena with a cycle must not loop forever.
            if chain.contains(&parent) || chain.len() > self.pci.len() {
                break;
            }
            chain.push(parent);
            cursor = self.pci[parent].parent;
        }
        chain
    }

    /// The switch (or lone bridge) a bridge belongs to: downstream ports belong to their
    /// upstream port; everything else stands for itself.
    fn bridge_unit(&self, idx: PciIdx) -> PciIdx {
        match (self.pci[idx].kind, self.pci[idx].parent) {
            (PciKind::SwitchDownstream, Some(parent)) => parent,
            _ => idx,
        }
    }

    fn pci_path_class(&self, a: PciIdx, b: PciIdx) -> PathClass {
        let up_a = self.pci_ancestors(a);
        let up_b = self.pci_ancestors(b);
        let common = up_a.iter().position(|ancestor| up_b.contains(ancestor));
        let Some(pos_a) = common else {
            return locality_class(&self.pci[a].locality, &self.pci[b].locality);
        };
        let lca = up_a[pos_a];
        if self.pci[lca].kind == PciKind::HostBridge {
            return PathClass::Phb;
        }
        if !self.pci[lca].kind.is_bridge() {
            // An endpoint with children is not something PCI allows; treat it as a bridge.
            return PathClass::Pix;
        }
        let pos_b = up_b
            .iter()
            .position(|&ancestor| ancestor == lca)
            .unwrap_or(0);
        let mut units: Vec<PciIdx> = up_a[..=pos_a]
            .iter()
            .chain(up_b[..=pos_b].iter())
            .filter(|&&idx| self.pci[idx].kind.is_bridge())
            .map(|&idx| self.bridge_unit(idx))
            .collect();
        units.sort_unstable();
        units.dedup();
        if units.len() <= 1 {
            PathClass::Pix
        } else {
            PathClass::Pxb
        }
    }
}

/// The class between devices that share no PCI ancestor: `NODE` on the same NUMA node(s),
/// `SYS` otherwise. Where NUMA nodes are unknown, local CPUs decide.
fn locality_class(a: &Locality, b: &Locality) -> PathClass {
    let same = if !a.numa_nodes.is_empty() && !b.numa_nodes.is_empty() {
        a.numa_nodes == b.numa_nodes
    } else {
        !a.cpus.is_empty() && a.cpus == b.cpus
    };
    if same {
        PathClass::Node
    } else {
        PathClass::Sys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_ordered_best_first() {
        let mut classes = [
            PathClass::Sys,
            PathClass::Pix,
            PathClass::NvLink(2),
            PathClass::Node,
            PathClass::NvLink(12),
            PathClass::Phb,
            PathClass::Pxb,
        ];
        classes.sort();
        let names: Vec<String> = classes.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["NV12", "NV2", "PIX", "PXB", "PHB", "NODE", "SYS"]);
    }
}
