//! `cohort topo doctor`: what in a node's topology will cost bandwidth, explained plainly.

use crate::model::{NvLinkPeer, PortState, Topology};
use crate::path::{Device, PathClass};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The device concerned (`GPU3`, `mlx5_1`) or `node`.
    pub subject: String,
    /// What is wrong, in one line.
    pub problem: String,
    /// Why it matters and what to look at.
    pub explanation: String,
}

impl Topology {
    /// Checks the topology; an empty list means nothing looked wrong.
    pub fn doctor(&self) -> Vec<Finding> {
        let mut findings = Vec::new();
        self.check_nic_distance(&mut findings);
        self.check_ports(&mut findings);
        self.check_sharing(&mut findings);
        self.check_nvlink_symmetry(&mut findings);
        findings
    }

    fn check_nic_distance(&self, findings: &mut Vec<Finding>) {
        if self.gpus.is_empty() {
            return;
        }
        if self.nics.is_empty() {
            if !self.plain_netdevs.is_empty() {
                findings.push(Finding {
                    subject: "node".into(),
                    problem: format!(
                        "{} GPU(s) but no RDMA NIC; only {} without RDMA",
                        self.gpus.len(),
                        self.plain_netdevs.join(", ")
                    ),
                    explanation: "traffic between nodes will go over TCP through the kernel, \
                                  far slower than RDMA; check that the RDMA drivers \
                                  (rdma-core, the NIC's kernel module) are loaded"
                        .into(),
                });
            }
            return;
        }
        for (pos, gpu) in self.gpus.iter().enumerate() {
            let best = (0..self.nics.len())
                .map(|nic| (self.path_class(Device::Gpu(pos), Device::Nic(nic)), nic))
                .min();
            if let Some((class @ (PathClass::Node | PathClass::Sys), nic)) = best {
                findings.push(Finding {
                    subject: format!("GPU{}", gpu.index),
                    problem: format!(
                        "its closest RDMA NIC ({}) is {class} away",
                        self.nics[nic].name
                    ),
                    explanation: if class == PathClass::Sys {
                        "data to other nodes crosses the link between CPU sockets, which \
                         usually caps bandwidth well below the NIC's rate; on a VM or \
                         container this often means the topology was not passed through"
                            .into()
                    } else {
                        "data to other nodes crosses the CPU's host bridges; GPUDirect RDMA \
                         is slow or disabled across host bridges"
                            .into()
                    },
                });
            }
        }
    }

    /// Kind, vendor and device id of a NIC: NICs that share them are siblings.
    fn nic_model(&self, nic: &crate::model::Nic) -> (crate::model::NicKind, Option<(u16, u16)>) {
        let ids = nic
            .pci
            .and_then(|idx| Some((self.pci[idx].vendor?, self.pci[idx].device?)));
        (nic.kind, ids)
    }

    fn check_ports(&self, findings: &mut Vec<Finding>) {
        for nic in &self.nics {
            // A slower management or storage NIC of another model is not a fault.
            let fastest = self
                .nics
                .iter()
                .filter(|other| self.nic_model(other) == self.nic_model(nic))
                .filter_map(|other| other.best_rate_gbps())
                .fold(None, |best: Option<f64>, rate| {
                    Some(best.map_or(rate, |b| b.max(rate)))
                });
            for port in &nic.ports {
                if matches!(
                    port.state,
                    PortState::Down | PortState::Init | PortState::Armed
                ) {
                    findings.push(Finding {
                        subject: nic.name.clone(),
                        problem: format!("port {} is {}", port.number, port.state.as_str()),
                        explanation: "a port that is not active carries no traffic; check \
                                      the cable, the switch port and (on InfiniBand) that a \
                                      subnet manager is running"
                            .into(),
                    });
                }
            }
            if let (Some(rate), Some(fastest)) = (nic.best_rate_gbps(), fastest) {
                if rate + 1e-9 < fastest && !nic.is_down() {
                    findings.push(Finding {
                        subject: nic.name.clone(),
                        problem: format!(
                            "runs at {rate} Gb/s while its siblings run at {fastest} Gb/s"
                        ),
                        explanation: "a link that trained at a lower rate (bad cable, wrong \
                                      switch port setting) slows every collective to its pace"
                            .into(),
                    });
                }
            }
        }
    }

    fn check_sharing(&self, findings: &mut Vec<Finding>) {
        let Ok(assignment) = self.assign_nics(None) else {
            return;
        };
        if self.nics.len() < 2 || assignment.is_empty() {
            return;
        }
        let mut load = vec![0usize; self.nics.len()];
        for item in &assignment {
            if let Some(&primary) = item.nics.first() {
                load[primary] += 1;
            }
        }
        let max = load.iter().copied().max().unwrap_or(0);
        let min = load.iter().copied().min().unwrap_or(0);
        if max > min + 1 {
            let busiest = load.iter().position(|&l| l == max).unwrap_or(0);
            let idlest = load.iter().position(|&l| l == min).unwrap_or(0);
            findings.push(Finding {
                subject: "node".into(),
                problem: format!(
                    "NICs are shared unevenly: {} serves {max} GPU(s), {} serves {min}",
                    self.nics[busiest].name, self.nics[idlest].name
                ),
                explanation: "the busiest NIC limits every collective; the GPUs' closest \
                              NICs are not spread evenly over the PCIe switches"
                    .into(),
            });
        }
    }

    fn check_nvlink_symmetry(&self, findings: &mut Vec<Finding>) {
        let totals: Vec<(u32, u32)> = self
            .gpus
            .iter()
            .map(|gpu| {
                let gpu_links = gpu
                    .nvlinks
                    .iter()
                    .filter(|link| !matches!(link.peer, NvLinkPeer::Cpu(_)))
                    .map(|link| link.links)
                    .sum();
                (gpu.index, gpu_links)
            })
            .filter(|(_, links)| *links > 0)
            .collect();
        let Some(most) = totals.iter().map(|(_, links)| *links).max() else {
            return;
        };
        for (index, links) in &totals {
            if *links < most {
                findings.push(Finding {
                    subject: format!("GPU{index}"),
                    problem: format!(
                        "has {links} NVLinks to GPUs and NVSwitches, others have {most}"
                    ),
                    explanation: "a GPU with fewer active NVLinks than its peers usually has a \
                                  link down (see nvidia-smi nvlink --status); collectives run \
                                  at the slowest GPU's pace"
                        .into(),
                });
            }
        }
    }
}
