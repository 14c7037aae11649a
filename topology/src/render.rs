//! What `cohort topo` prints: the path matrix in `nvidia-smi topo -m`'s layout, the legend,
//! the GPU -> NIC assignment, and the JSON document.

use std::fmt::Write as _;

use cohort_proto::topology as doc;

use crate::assign::Assignment;
use crate::model::{NvLinkPeer, Topology};
use crate::path::{Device, PathClass};

impl Topology {
    fn devices(&self) -> Vec<(String, Device)> {
        let gpus = (0..self.gpus.len())
            .map(|pos| (format!("GPU{}", self.gpus[pos].index), Device::Gpu(pos)));
        let nics = (0..self.nics.len()).map(|pos| (format!("NIC{pos}"), Device::Nic(pos)));
        gpus.chain(nics).collect()
    }

    fn class_text(&self, a: Device, b: Device) -> String {
        if a == b {
            "X".to_owned()
        } else {
            self.path_class(a, b).to_string()
        }
    }

    /// Path classes between every pair of devices, `X` on the diagonal.
    fn class_matrix(&self, devices: &[(String, Device)]) -> Vec<Vec<String>> {
        devices
            .iter()
            .map(|(_, a)| {
                devices
                    .iter()
                    .map(|(_, b)| self.class_text(*a, *b))
                    .collect()
            })
            .collect()
    }

    fn affinity(&self, device: Device) -> (String, String) {
        let locality = match device {
            Device::Gpu(pos) => self.gpu_locality(&self.gpus[pos]),
            Device::Nic(pos) => &self.nics[pos].locality,
        };
        let cpus = if locality.cpus.is_empty() {
            "N/A".to_owned()
        } else {
            locality.cpus.to_string()
        };
        let numa = if locality.numa_nodes.is_empty() {
            "N/A".to_owned()
        } else {
            locality
                .numa_nodes
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        (cpus, numa)
    }

    /// One line per source: what it is, whether it was used, and the detail.
    pub fn render_sources(&self) -> String {
        let mut out = String::from("Sources:\n");
        for source in &self.sources {
            let _ = writeln!(
                out,
                "  {:<10} {:<12} {}",
                source.kind.as_str(),
                if source.used { "used" } else { "unavailable" },
                source.detail
            );
        }
        out
    }

    /// The path matrix with CPU and NUMA affinity columns and the legends, or a plain sentence
    /// when there is nothing to show.
    pub fn render_matrix(&self) -> String {
        let devices = self.devices();
        let mut out = String::new();
        if self.gpus.is_empty() && self.nics.is_empty() {
            out.push_str("No GPU and no RDMA NIC found");
            if !self.plain_netdevs.is_empty() {
                let _ = write!(
                    out,
                    " (network interfaces without RDMA: {})",
                    self.plain_netdevs.join(", ")
                );
            }
            out.push_str(".\n");
            return out;
        }
        let cells = self.class_matrix(&devices);
        let width = devices
            .iter()
            .map(|(label, _)| label.len())
            .chain(cells.iter().flatten().map(String::len))
            .max()
            .unwrap_or(4)
            + 2;
        let affinities: Vec<(String, String)> = devices
            .iter()
            .map(|(_, device)| self.affinity(*device))
            .collect();
        let cpu_width = affinities
            .iter()
            .map(|(cpus, _)| cpus.len())
            .max()
            .unwrap_or(0)
            .max("CPU Affinity".len())
            + 2;
        let _ = write!(out, "{:<width$}", "");
        for (label, _) in &devices {
            let _ = write!(out, "{label:<width$}");
        }
        let _ = writeln!(out, "{:<cpu_width$}NUMA Affinity", "CPU Affinity");
        for (row, (label, _)) in devices.iter().enumerate() {
            let _ = write!(out, "{label:<width$}");
            for cell in &cells[row] {
                let _ = write!(out, "{cell:<width$}");
            }
            let (cpus, numa) = &affinities[row];
            let _ = writeln!(out, "{cpus:<cpu_width$}{numa}");
        }
        out.push_str("\nLegend:\n\n  X    = Self\n");
        for class in [
            PathClass::Sys,
            PathClass::Node,
            PathClass::Phb,
            PathClass::Pxb,
            PathClass::Pix,
        ] {
            let _ = writeln!(out, "  {:<4} = {}", class.to_string(), class.meaning());
        }
        let _ = writeln!(out, "  NV#  = {}", PathClass::NvLink(0).meaning());
        if !self.nics.is_empty() {
            out.push_str("\nNIC Legend:\n\n");
            for (pos, nic) in self.nics.iter().enumerate() {
                let bus = self.nics[pos]
                    .pci
                    .and_then(|idx| self.bus_id(idx))
                    .map(|bus| format!(", {bus}"))
                    .unwrap_or_default();
                let _ = writeln!(out, "  NIC{pos}: {} ({}{bus})", nic.name, nic.kind.as_str());
            }
        }
        out
    }

    /// The GPU -> NIC assignment, one GPU per line.
    pub fn render_assignment(&self, assignment: &[Assignment]) -> String {
        let mut out = String::from("GPU -> NIC assignment:\n");
        if assignment.is_empty() {
            out.push_str("  (no GPU to assign)\n");
            return out;
        }
        for item in assignment {
            let gpu_label = format!("GPU{}", item.gpu);
            if item.nics.is_empty() {
                let _ = writeln!(out, "  {gpu_label:<6} (no RDMA NIC on this node)");
                continue;
            }
            let names: Vec<&str> = item
                .nics
                .iter()
                .map(|&nic| self.nics[nic].name.as_str())
                .collect();
            let path = item.path.map(|p| p.to_string()).unwrap_or_default();
            let rails = if names.len() > 1 {
                format!("  ({} rails)", names.len())
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {gpu_label:<6} {:<20} {path}{rails}",
                names.join(",")
            );
        }
        out
    }

    /// The versioned JSON document.
    pub fn to_doc(&self, assignment: &[Assignment]) -> doc::TopologyDoc {
        let devices = self.devices();
        let numa_list = |nodes: &[u32]| nodes.to_vec();
        doc::TopologyDoc {
            format: doc::TOPOLOGY_FORMAT.to_owned(),
            version: doc::TOPOLOGY_VERSION,
            hostname: self.hostname.clone(),
            arch: self.arch.clone(),
            sources: self
                .sources
                .iter()
                .map(|source| doc::SourceDoc {
                    kind: source.kind.as_str().to_owned(),
                    status: if source.used { "used" } else { "unavailable" }.to_owned(),
                    detail: source.detail.clone(),
                })
                .collect(),
            numa_nodes: self
                .numa_nodes
                .iter()
                .map(|node| doc::NumaNodeDoc {
                    os_index: node.os_index,
                    cpus: node.cpus.to_string(),
                    memory_bytes: node.memory_bytes,
                })
                .collect(),
            pci: self
                .pci
                .iter()
                .enumerate()
                .map(|(id, node)| doc::PciDoc {
                    id,
                    parent: node.parent,
                    kind: match node.kind {
                        crate::model::PciKind::HostBridge => "host-bridge",
                        crate::model::PciKind::Endpoint => "endpoint",
                        _ => "bridge",
                    }
                    .to_owned(),
                    bus_id: node.bus_id.map(|bus| bus.to_string()),
                    class: node.class,
                    vendor: node.vendor,
                    device: node.device,
                    link_speed_gts: node.link.speed_gts,
                    link_width: node.link.width,
                    link_bandwidth_gbs: node.link.bandwidth_gbs,
                    numa_nodes: if node.parent.is_none() {
                        numa_list(&node.locality.numa_nodes)
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
            gpus: self
                .gpus
                .iter()
                .map(|gpu| {
                    let locality = self.gpu_locality(gpu);
                    doc::GpuDoc {
                        index: gpu.index,
                        bus_id: gpu.bus_id.to_string(),
                        vendor: gpu.vendor.as_str().to_owned(),
                        model: gpu.model.clone(),
                        uuid: gpu.uuid.clone(),
                        numa_nodes: numa_list(&locality.numa_nodes),
                        cpus: locality.cpus.to_string(),
                        nvlinks: gpu
                            .nvlinks
                            .iter()
                            .map(|link| {
                                let (peer_kind, peer) = match link.peer {
                                    NvLinkPeer::Gpu(index) => ("gpu", index.to_string()),
                                    NvLinkPeer::NvSwitch(bus) => {
                                        ("nvswitch", bus.map(|b| b.to_string()).unwrap_or_default())
                                    }
                                    NvLinkPeer::Cpu(index) => ("cpu", index.to_string()),
                                };
                                doc::NvLinkDoc {
                                    peer_kind: peer_kind.to_owned(),
                                    peer,
                                    links: link.links,
                                }
                            })
                            .collect(),
                        sources: gpu.sources.iter().map(|s| s.as_str().to_owned()).collect(),
                    }
                })
                .collect(),
            nics: self
                .nics
                .iter()
                .map(|nic| doc::NicDoc {
                    name: nic.name.clone(),
                    kind: nic.kind.as_str().to_owned(),
                    bus_id: nic
                        .pci
                        .and_then(|idx| self.bus_id(idx))
                        .map(|b| b.to_string()),
                    numa_nodes: numa_list(&nic.locality.numa_nodes),
                    ports: nic
                        .ports
                        .iter()
                        .map(|port| doc::PortDoc {
                            number: port.number,
                            state: port.state.as_str().to_owned(),
                            rate_gbps: port.rate_gbps,
                            link_layer: port.link_layer.clone(),
                        })
                        .collect(),
                    netdevs: nic
                        .netdevs
                        .iter()
                        .map(|dev| doc::NetdevDoc {
                            name: dev.name.clone(),
                            addresses: dev.addresses.clone(),
                        })
                        .collect(),
                    sources: nic.sources.iter().map(|s| s.as_str().to_owned()).collect(),
                })
                .collect(),
            paths: doc::PathMatrixDoc {
                labels: devices.iter().map(|(label, _)| label.clone()).collect(),
                classes: self.class_matrix(&devices),
            },
            assignment: assignment
                .iter()
                .map(|item| doc::AssignmentDoc {
                    gpu: item.gpu,
                    nics: item
                        .nics
                        .iter()
                        .map(|&nic| self.nics[nic].name.clone())
                        .collect(),
                    path: item.path.map(|p| p.to_string()).unwrap_or_default(),
                })
                .collect(),
            notes: self.notes.clone(),
        }
    }
}
