//! NCCL's topology format (`NCCL_TOPO_FILE`): import into the model and export from it.
//!
//! NCCL records one `<cpu>` per NUMA node, one `<pci>` per PCIe switch (class 0x0604) with the
//! devices below it, and optionally `<gpu>`, `<nvlink>` and `<nic>/<net>` details. It has no
//! host bridges, so two devices that share only a `<cpu>` are `PHB` apart, as NCCL counts them.
//! The export writes what NCCL needs to rebuild its PCI graph (CPUs, switches, GPUs, NICs with
//! bus ids, classes and, where known, link speeds) and leaves the rest for NCCL to fill in from
//! the running node, as hand-written cloud topology files do.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use roxmltree::Node;

use crate::cpus::CpuList;
use crate::hwloc::guess_nic_kind;
use crate::model::{
    BusId, Gpu, GpuVendor, Locality, Nic, NicKind, NumaNode, NvLink, NvLinkPeer, PciIdx, PciKind,
    PciLink, PciNode, Port, PortState, SourceKind, Topology,
};

/// A problem in an NCCL topology file, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct NcclImportError {
    /// 1-based line number.
    pub line: u32,
    /// What is wrong.
    pub message: String,
}

struct Importer<'a, 'input> {
    doc: &'a roxmltree::Document<'input>,
    topo: Topology,
    gpu_nodes: Vec<(PciIdx, Vec<NvLinkEntry>)>,
    nic_nodes: Vec<(Option<PciIdx>, Locality, Vec<NetEntry>)>,
}

/// An `<nvlink>` element: target bus id, link count, target class, line.
type NvLinkEntry = (String, u32, Option<u32>, u32);

struct NetEntry {
    name: Option<String>,
    port: Option<u32>,
    speed_mbps: Option<f64>,
}

fn err(doc: &roxmltree::Document<'_>, node: Node<'_, '_>, message: String) -> NcclImportError {
    NcclImportError {
        line: doc.text_pos_at(node.range().start).row,
        message,
    }
}

fn parse_hex(text: &str) -> Option<u32> {
    let digits = text
        .trim()
        .strip_prefix("0x")
        .or_else(|| text.trim().strip_prefix("0X"))?;
    u32::from_str_radix(digits, 16).ok()
}

/// Imports a parsed NCCL topology document whose root is `<system>`.
pub(crate) fn import(
    doc: &roxmltree::Document<'_>,
    origin: &str,
) -> Result<Topology, NcclImportError> {
    let mut importer = Importer {
        doc,
        topo: Topology::default(),
        gpu_nodes: Vec::new(),
        nic_nodes: Vec::new(),
    };
    for cpu in doc.root_element().children().filter(Node::is_element) {
        if cpu.tag_name().name() == "cpu" {
            importer.cpu(cpu)?;
        }
    }
    let mut topo = importer.finish()?;
    topo.record_source(SourceKind::NcclXml, true, origin);
    Ok(topo)
}

impl Importer<'_, '_> {
    fn attr_u32(&self, node: Node<'_, '_>, name: &str) -> Result<Option<u32>, NcclImportError> {
        node.attribute(name)
            .map(|text| {
                let text = text.trim();
                parse_hex(text)
                    .or_else(|| text.parse().ok())
                    .ok_or_else(|| {
                        err(
                            self.doc,
                            node,
                            format!(
                                "<{}> attribute {name}={text:?} is not a number",
                                node.tag_name().name()
                            ),
                        )
                    })
            })
            .transpose()
    }

    fn cpu(&mut self, cpu: Node<'_, '_>) -> Result<(), NcclImportError> {
        let numa_id = self
            .attr_u32(cpu, "numaid")?
            .ok_or_else(|| err(self.doc, cpu, "<cpu> has no numaid attribute".into()))?;
        let cpus = match cpu.attribute("affinity") {
            Some(mask) => CpuList::parse_mask(mask)
                .map_err(|e| err(self.doc, cpu, format!("<cpu> affinity: {e}")))?,
            None => CpuList::default(),
        };
        if self.topo.arch.is_none() {
            self.topo.arch = cpu.attribute("arch").map(str::to_owned);
            self.topo.cpu_vendor = cpu.attribute("vendor").map(str::to_owned);
        }
        match self
            .topo
            .numa_nodes
            .iter_mut()
            .find(|node| node.os_index == numa_id)
        {
            Some(_) => {
                return Err(err(
                    self.doc,
                    cpu,
                    format!("a second <cpu> with numaid {numa_id}"),
                ))
            }
            None => self.topo.numa_nodes.push(NumaNode {
                os_index: numa_id,
                cpus: cpus.clone(),
                memory_bytes: None,
            }),
        }
        let locality = Locality {
            numa_nodes: vec![numa_id],
            cpus,
        };
        let host_bridge = self.topo.pci.len();
        self.topo.pci.push(PciNode {
            kind: PciKind::HostBridge,
            bus_id: None,
            class: None,
            vendor: None,
            device: None,
            link: PciLink::default(),
            parent: None,
            locality: locality.clone(),
        });
        for child in cpu.children().filter(Node::is_element) {
            match child.tag_name().name() {
                "pci" => self.pci(child, host_bridge, &locality)?,
                "nic" => {
                    let nets = self.nets(child)?;
                    self.nic_nodes.push((None, locality.clone(), nets));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn pci(
        &mut self,
        node: Node<'_, '_>,
        parent: PciIdx,
        locality: &Locality,
    ) -> Result<(), NcclImportError> {
        let bus_text = node
            .attribute("busid")
            .ok_or_else(|| err(self.doc, node, "<pci> has no busid attribute".into()))?;
        let bus_id: BusId = bus_text
            .parse()
            .map_err(|e| err(self.doc, node, format!("<pci> busid: {e}")))?;
        if self.topo.pci_by_bus_id(bus_id).is_some() {
            return Err(err(
                self.doc,
                node,
                format!("bus id {bus_id} appears twice"),
            ));
        }
        // NCCL writes the 24-bit class register (0x030200); keep class and subclass.
        let class = self.attr_u32(node, "class")?.map(|class| {
            let class = if class > 0xffff { class >> 8 } else { class };
            u16::try_from(class).unwrap_or(u16::MAX)
        });
        let short = |value: Option<u32>| value.and_then(|v| u16::try_from(v).ok());
        let vendor = short(self.attr_u32(node, "vendor")?).filter(|&v| v != 0);
        let device = short(self.attr_u32(node, "device")?).filter(|&v| v != 0);
        let speed_gts = node.attribute("link_speed").and_then(|text| {
            text.split_whitespace()
                .next()
                .and_then(|number| number.parse::<f32>().ok())
        });
        let width = short(self.attr_u32(node, "link_width")?);
        let kind = if class == Some(0x0604) {
            PciKind::Switch
        } else {
            PciKind::Endpoint
        };
        let idx = self.topo.pci.len();
        self.topo.pci.push(PciNode {
            kind,
            bus_id: Some(bus_id),
            class,
            vendor,
            device,
            link: PciLink {
                speed_gts,
                width,
                bandwidth_gbs: None,
            },
            parent: Some(parent),
            locality: locality.clone(),
        });
        let mut is_gpu =
            matches!(class, Some(0x0302 | 0x0300)) && matches!(vendor, None | Some(0x10de));
        let mut nvlinks = Vec::new();
        let mut nets = None;
        for child in node.children().filter(Node::is_element) {
            match child.tag_name().name() {
                "pci" => self.pci(child, idx, locality)?,
                "gpu" => {
                    is_gpu = true;
                    for link in child.children().filter(|c| c.has_tag_name("nvlink")) {
                        let target = link.attribute("target").ok_or_else(|| {
                            err(self.doc, link, "<nvlink> has no target attribute".into())
                        })?;
                        let count = self.attr_u32(link, "count")?.unwrap_or(1);
                        let tclass = self.attr_u32(link, "tclass")?;
                        let line = self.doc.text_pos_at(link.range().start).row;
                        nvlinks.push((target.to_owned(), count, tclass, line));
                    }
                }
                "nic" => nets = Some(self.nets(child)?),
                _ => {}
            }
        }
        if is_gpu {
            self.gpu_nodes.push((idx, nvlinks));
        } else if let Some(nets) = nets {
            self.nic_nodes.push((Some(idx), locality.clone(), nets));
        } else if class == Some(0x0207) {
            self.nic_nodes
                .push((Some(idx), locality.clone(), Vec::new()));
        }
        Ok(())
    }

    fn nets(&self, nic: Node<'_, '_>) -> Result<Vec<NetEntry>, NcclImportError> {
        let mut nets = Vec::new();
        for net in nic.children().filter(|c| c.has_tag_name("net")) {
            let speed_mbps = match net.attribute("speed") {
                Some(text) => Some(text.trim().parse::<f64>().map_err(|_| {
                    err(
                        self.doc,
                        net,
                        format!("<net> speed={text:?} is not a number"),
                    )
                })?),
                None => None,
            };
            nets.push(NetEntry {
                name: net.attribute("name").map(str::to_owned),
                port: self.attr_u32(net, "port")?,
                speed_mbps,
            });
        }
        Ok(nets)
    }

    fn finish(mut self) -> Result<Topology, NcclImportError> {
        let mut topo = std::mem::take(&mut self.topo);
        let mut gpus: Vec<(BusId, PciIdx)> = self
            .gpu_nodes
            .iter()
            .filter_map(|(idx, _)| topo.pci[*idx].bus_id.map(|bus| (bus, *idx)))
            .collect();
        gpus.sort();
        topo.gpus = gpus
            .iter()
            .zip(0u32..)
            .map(|(&(bus_id, pci), index)| Gpu {
                index,
                pci,
                bus_id,
                vendor: match topo.pci[pci].vendor {
                    Some(0x1002) => GpuVendor::Amd,
                    // NCCL describes NVIDIA GPUs only; files often leave the vendor out.
                    _ => GpuVendor::Nvidia,
                },
                model: None,
                uuid: None,
                nvlinks: Vec::new(),
                sources: vec![SourceKind::NcclXml],
            })
            .collect();
        for (pci, links) in &self.gpu_nodes {
            let Some(gpu_pos) = topo.gpus.iter().position(|gpu| gpu.pci == *pci) else {
                continue;
            };
            for (target, count, tclass, line) in links {
                let target: BusId = target.parse().map_err(|e| NcclImportError {
                    line: *line,
                    message: format!("<nvlink> target: {e}"),
                })?;
                let peer = match topo.gpus.iter().find(|gpu| gpu.bus_id == target) {
                    Some(gpu) => NvLinkPeer::Gpu(gpu.index),
                    None if tclass.is_some_and(|class| class >> 8 == 0x0680) => {
                        NvLinkPeer::NvSwitch(Some(target))
                    }
                    None => NvLinkPeer::Cpu(0),
                };
                topo.gpus[gpu_pos].nvlinks.push(NvLink {
                    peer,
                    links: *count,
                });
            }
            topo.gpus[gpu_pos].nvlinks.sort_by_key(|link| link.peer);
        }
        let mut unnamed = 0;
        for (pci, locality, nets) in self.nic_nodes {
            let class = pci.and_then(|idx| topo.pci[idx].class);
            let ids = pci.and_then(|idx| topo.pci[idx].vendor.zip(topo.pci[idx].device));
            let mut by_name: BTreeMap<String, Vec<&NetEntry>> = BTreeMap::new();
            for net in &nets {
                let name = net.name.clone().unwrap_or_default();
                by_name.entry(name).or_default().push(net);
            }
            if by_name.is_empty() {
                by_name.insert(String::new(), Vec::new());
            }
            for (name, entries) in by_name {
                let name = if name.is_empty() {
                    unnamed += 1;
                    format!("nic{}", unnamed - 1)
                } else {
                    name
                };
                let ports = entries
                    .iter()
                    .zip(1u32..)
                    .map(|(net, n)| Port {
                        number: net.port.unwrap_or(n),
                        state: PortState::Unknown,
                        rate_gbps: net.speed_mbps.map(|mbps| mbps / 1000.0),
                        link_layer: None,
                    })
                    .collect();
                let kind = guess_nic_kind(&name, ids, class, &[]);
                topo.nics.push(Nic {
                    kind: if kind == NicKind::Unknown && name.starts_with("mlx") {
                        NicKind::InfiniBand
                    } else {
                        kind
                    },
                    name,
                    pci,
                    locality: locality.clone(),
                    ports,
                    netdevs: Vec::new(),
                    sources: vec![SourceKind::NcclXml],
                });
            }
        }
        topo.sort_nics();
        topo.numa_nodes.sort_by_key(|node| node.os_index);
        Ok(topo)
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Default)]
struct ExportTree {
    children: BTreeMap<(Option<BusId>, PciIdx), ExportTree>,
}

/// Writes the topology in NCCL's format, for `NCCL_TOPO_FILE`.
pub fn to_nccl_xml(topo: &Topology) -> String {
    // Devices NCCL cares about: GPUs and NICs. Each hangs from its CPU through the PCIe
    // switches above it; root ports and host bridges belong to the CPU in NCCL's model.
    let mut devices: Vec<PciIdx> = topo.gpus.iter().map(|gpu| gpu.pci).collect();
    devices.extend(topo.nics.iter().filter_map(|nic| nic.pci));
    devices.sort_unstable();
    devices.dedup();
    let ancestors = |device: PciIdx| {
        let mut chain = Vec::new();
        let mut cursor = topo.pci[device].parent;
        while let Some(parent) = cursor {
            if chain.len() > topo.pci.len() {
                break;
            }
            chain.push(parent);
            cursor = topo.pci[parent].parent;
        }
        chain
    };
    // A root port shared by several exported devices (functions of one card) is written as a
    // switch, so that NCCL sees them one bridge apart as they are, not through the CPU.
    let shared_root_port = |idx: PciIdx| {
        topo.pci[idx].kind == PciKind::RootPort
            && devices
                .iter()
                .filter(|&&device| ancestors(device).contains(&idx))
                .count()
                > 1
    };
    let mut cpus: BTreeMap<u32, ExportTree> = BTreeMap::new();
    for &device in &devices {
        let node = &topo.pci[device];
        let numa = node.locality.numa_nodes.first().copied().unwrap_or(0);
        let mut chain = vec![device];
        chain.extend(ancestors(device).into_iter().filter(|&parent| {
            topo.pci[parent].bus_id.is_some()
                && (matches!(
                    topo.pci[parent].kind,
                    PciKind::SwitchUpstream | PciKind::Switch
                ) || shared_root_port(parent))
        }));
        let mut tree = cpus.entry(numa).or_default();
        for &idx in chain.iter().rev() {
            tree = tree
                .children
                .entry((topo.pci[idx].bus_id, idx))
                .or_default();
        }
    }
    let loose_nics: Vec<&Nic> = topo.nics.iter().filter(|nic| nic.pci.is_none()).collect();
    for nic in &loose_nics {
        cpus.entry(nic.locality.numa_nodes.first().copied().unwrap_or(0))
            .or_default();
    }

    let mut out = String::from("<system version=\"1\">\n");
    for (numa, tree) in &cpus {
        let cpuset = topo
            .numa_nodes
            .iter()
            .find(|node| node.os_index == *numa)
            .map(|node| node.cpus.clone())
            .unwrap_or_default();
        let _ = write!(out, "  <cpu numaid=\"{numa}\"");
        if !cpuset.is_empty() {
            let _ = write!(out, " affinity=\"{}\"", cpuset.to_mask());
        }
        if let Some(arch) = &topo.arch {
            let _ = write!(out, " arch=\"{}\"", escape(arch));
        }
        if let Some(vendor) = &topo.cpu_vendor {
            let _ = write!(out, " vendor=\"{}\"", escape(vendor));
        }
        out.push_str(">\n");
        write_tree(topo, tree, 2, &mut out);
        for nic in loose_nics
            .iter()
            .filter(|nic| nic.locality.numa_nodes.first().copied().unwrap_or(0) == *numa)
        {
            let dev = topo
                .nics
                .iter()
                .position(|other| std::ptr::eq(other, *nic))
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "    <nic>\n      {}\n    </nic>",
                net_element(nic, dev)
            );
        }
        out.push_str("  </cpu>\n");
    }
    out.push_str("</system>\n");
    out
}

fn write_tree(topo: &Topology, tree: &ExportTree, depth: usize, out: &mut String) {
    for ((bus_id, idx), child) in &tree.children {
        let node = &topo.pci[*idx];
        let Some(bus_id) = bus_id else { continue };
        let indent = "  ".repeat(depth);
        let class = match node.kind {
            PciKind::Endpoint => node.class.unwrap_or(0),
            _ => 0x0604,
        };
        let _ = write!(
            out,
            "{indent}<pci busid=\"{bus_id}\" class=\"0x{:06x}\"",
            u32::from(class) << 8
        );
        if let Some(vendor) = node.vendor {
            let _ = write!(out, " vendor=\"0x{vendor:04x}\"");
        }
        if let Some(device) = node.device {
            let _ = write!(out, " device=\"0x{device:04x}\"");
        }
        if let Some(speed) = node.link.speed_gts {
            let _ = write!(out, " link_speed=\"{speed:.1} GT/s PCIe\"");
        }
        if let Some(width) = node.link.width {
            let _ = write!(out, " link_width=\"{width}\"");
        }
        let nics: Vec<(usize, &Nic)> = topo
            .nics
            .iter()
            .enumerate()
            .filter(|(_, nic)| nic.pci == Some(*idx))
            .collect();
        if child.children.is_empty() && nics.is_empty() {
            out.push_str("/>\n");
            continue;
        }
        out.push_str(">\n");
        write_tree(topo, child, depth + 1, out);
        if !nics.is_empty() {
            let _ = writeln!(out, "{indent}  <nic>");
            for (dev, nic) in nics {
                let _ = writeln!(out, "{indent}    {}", net_element(nic, dev));
            }
            let _ = writeln!(out, "{indent}  </nic>");
        }
        let _ = writeln!(out, "{indent}</pci>");
    }
}

/// A `<net>` as NCCL's own dumps write it. `dev` is the NIC's position in name order, which is
/// how NCCL numbers devices too; NCCL overwrites it (and fills the rest) for NICs it finds.
fn net_element(nic: &Nic, dev: usize) -> String {
    let mut net = format!("<net name=\"{}\" dev=\"{dev}\"", escape(&nic.name));
    if let Some(rate) = nic.best_rate_gbps() {
        let _ = write!(net, " speed=\"{:.0}\"", rate * 1000.0);
    }
    if let Some(port) = nic.ports.first() {
        let _ = write!(net, " port=\"{}\"", port.number);
    }
    net.push_str("/>");
    net
}
