//! The typed model of one node: NUMA nodes, the PCI tree, GPUs and RDMA NICs.
//!
//! Every loader (hwloc, NCCL XML) produces this model and every consumer (path classes,
//! assignment, rendering, export) reads it. It is plain data with no I/O; the only serialised
//! form is `cohort_proto::topology::TopologyDoc`, built in `render.rs`.

use std::fmt;
use std::str::FromStr;

use crate::cpus::CpuList;

/// Index of a node in [`Topology::pci`].
pub type PciIdx = usize;

/// Everything known about one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    /// Host name, where the source recorded one.
    pub hostname: Option<String>,
    /// CPU architecture (`x86_64`, `ppc64le`), where known.
    pub arch: Option<String>,
    /// CPU vendor string (`GenuineIntel`), where known.
    pub cpu_vendor: Option<String>,
    /// Every source that was tried, in order.
    pub sources: Vec<Source>,
    /// NUMA nodes, ordered by OS index.
    pub numa_nodes: Vec<NumaNode>,
    /// The PCI tree as an arena; parents come before their children.
    pub pci: Vec<PciNode>,
    /// GPUs, ordered by index (PCI bus order).
    pub gpus: Vec<Gpu>,
    /// RDMA-capable NICs, ordered by name.
    pub nics: Vec<Nic>,
    /// Network interfaces that belong to no RDMA NIC (plain Ethernet), by name.
    pub plain_netdevs: Vec<String>,
    /// Remarks for the user from discovery (missing libraries, inconsistent data).
    pub notes: Vec<String>,
}

/// Where facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    /// hwloc discovering the running machine.
    HwlocLive,
    /// An hwloc XML file (`lstopo --of xml`).
    HwlocXml,
    /// An NCCL topology file (`NCCL_TOPO_FILE` format).
    NcclXml,
    /// NVIDIA's management library, loaded at run time.
    Nvml,
    /// Linux sysfs (`/sys/class/infiniband`, `/sys/class/net`).
    Sysfs,
}

impl SourceKind {
    /// The short name used in output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::HwlocLive => "hwloc-live",
            SourceKind::HwlocXml => "hwloc-xml",
            SourceKind::NcclXml => "nccl-xml",
            SourceKind::Nvml => "nvml",
            SourceKind::Sysfs => "sysfs",
        }
    }
}

/// One source and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Which source.
    pub kind: SourceKind,
    /// Whether its facts were used.
    pub used: bool,
    /// A file path or library version when used; the reason when not.
    pub detail: String,
}

/// A NUMA node.
#[derive(Debug, Clone, PartialEq)]
pub struct NumaNode {
    /// The OS index.
    pub os_index: u32,
    /// Its CPUs.
    pub cpus: CpuList,
    /// Local memory in bytes, where known.
    pub memory_bytes: Option<u64>,
}

/// Where a device sits relative to CPUs and memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    /// NUMA nodes the device is attached to (usually one; empty when unknown).
    pub numa_nodes: Vec<u32>,
    /// CPUs local to the device.
    pub cpus: CpuList,
}

/// The part a PCI object plays in the tree, which decides how paths through it are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciKind {
    /// A host bridge: where PCIe meets the CPU (a root complex).
    HostBridge,
    /// A root port: the first PCI-PCI bridge below a host bridge.
    RootPort,
    /// The upstream port of a PCIe switch; with its downstream ports it is one switch.
    SwitchUpstream,
    /// A downstream port of the switch whose upstream port is its parent.
    SwitchDownstream,
    /// A whole PCIe switch as one object (NCCL's format records switches this way).
    Switch,
    /// A device: GPU, NIC, NVMe drive, NVSwitch, ...
    Endpoint,
}

impl PciKind {
    /// Whether this is a PCI-PCI bridge (root port or part of a switch).
    pub fn is_bridge(self) -> bool {
        matches!(
            self,
            PciKind::RootPort
                | PciKind::SwitchUpstream
                | PciKind::SwitchDownstream
                | PciKind::Switch
        )
    }
}

/// A PCI link's speed and width, as far as the source knew them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PciLink {
    /// Transfer rate per lane in GT/s.
    pub speed_gts: Option<f32>,
    /// Number of lanes.
    pub width: Option<u16>,
    /// Usable bandwidth in GB/s (hwloc reports only this).
    pub bandwidth_gbs: Option<f32>,
}

/// One object of the PCI tree.
#[derive(Debug, Clone, PartialEq)]
pub struct PciNode {
    /// Its role.
    pub kind: PciKind,
    /// Bus id; host bridges have none.
    pub bus_id: Option<BusId>,
    /// Class code (`0x0302`).
    pub class: Option<u16>,
    /// Vendor id.
    pub vendor: Option<u16>,
    /// Device id.
    pub device: Option<u16>,
    /// The link to its parent.
    pub link: PciLink,
    /// Parent in the arena; `None` for top-level objects.
    pub parent: Option<PciIdx>,
    /// Locality of the object (set for every node; children share their top's).
    pub locality: Locality,
}

/// A PCI bus id `domain:bus:device.function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BusId {
    /// PCI domain (segment).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device number.
    pub device: u8,
    /// Function number.
    pub function: u8,
}

impl fmt::Display for BusId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// A string that is not a PCI bus id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a PCI bus id (expected dddd:bb:dd.f)")]
pub struct BusIdParseError(pub String);

impl FromStr for BusId {
    type Err = BusIdParseError;

    fn from_str(text: &str) -> Result<BusId, BusIdParseError> {
        let bad = || BusIdParseError(text.to_owned());
        // NVML writes an eight-digit domain (`00000000:3B:00.0`); sysfs and hwloc four.
        let (rest, function) = text.rsplit_once('.').ok_or_else(bad)?;
        let mut parts = rest.split(':');
        let (domain, bus, device) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(domain), Some(bus), Some(device), None) => (domain, bus, device),
            (Some(bus), Some(device), None, None) => ("0", bus, device),
            _ => return Err(bad()),
        };
        let hex_u8 = |s: &str| {
            if s.is_empty() || s.len() > 2 {
                return Err(bad());
            }
            u8::from_str_radix(s, 16).map_err(|_| bad())
        };
        if domain.is_empty() || domain.len() > 8 {
            return Err(bad());
        }
        let function = hex_u8(function)?;
        if function > 7 {
            return Err(bad());
        }
        Ok(BusId {
            domain: u32::from_str_radix(domain, 16).map_err(|_| bad())?,
            bus: hex_u8(bus)?,
            device: hex_u8(device)?,
            function,
        })
    }
}

/// Who made a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuVendor {
    /// NVIDIA (PCI vendor 0x10de).
    Nvidia,
    /// AMD (PCI vendor 0x1002).
    Amd,
    /// Anyone else.
    Other,
}

impl GpuVendor {
    /// Lower-case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvidia",
            GpuVendor::Amd => "amd",
            GpuVendor::Other => "other",
        }
    }
}

/// A GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    /// Index in PCI bus order, as `nvidia-smi` numbers GPUs.
    pub index: u32,
    /// Its node in the PCI tree.
    pub pci: PciIdx,
    /// Its bus id.
    pub bus_id: BusId,
    /// Vendor.
    pub vendor: GpuVendor,
    /// Model name, where a source gave one.
    pub model: Option<String>,
    /// UUID (NVML only).
    pub uuid: Option<String>,
    /// NVLink connections.
    pub nvlinks: Vec<NvLink>,
    /// Sources that contributed facts about it.
    pub sources: Vec<SourceKind>,
}

/// What the far end of an NVLink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NvLinkPeer {
    /// Another GPU, by index.
    Gpu(u32),
    /// An NVSwitch, by bus id where known.
    NvSwitch(Option<BusId>),
    /// A CPU package (POWER and Grace systems), by index.
    Cpu(u32),
}

/// NVLink connections from a GPU to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvLink {
    /// The far end.
    pub peer: NvLinkPeer,
    /// Number of links.
    pub links: u32,
}

/// The RDMA flavour of a NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicKind {
    /// InfiniBand.
    InfiniBand,
    /// RDMA over Converged Ethernet.
    Roce,
    /// AWS Elastic Fabric Adapter.
    Efa,
    /// iWARP.
    Iwarp,
    /// The sources did not say.
    Unknown,
}

impl NicKind {
    /// Lower-case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            NicKind::InfiniBand => "infiniband",
            NicKind::Roce => "roce",
            NicKind::Efa => "efa",
            NicKind::Iwarp => "iwarp",
            NicKind::Unknown => "unknown",
        }
    }
}

/// The state of an RDMA port, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    /// Up and usable.
    Active,
    /// No link.
    Down,
    /// Link up, not yet configured by the subnet manager.
    Init,
    /// Configured, not yet active.
    Armed,
    /// Anything else.
    Unknown,
}

impl PortState {
    /// Lower-case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Active => "active",
            PortState::Down => "down",
            PortState::Init => "init",
            PortState::Armed => "armed",
            PortState::Unknown => "unknown",
        }
    }
}

/// One port of an RDMA NIC.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    /// Port number (from 1).
    pub number: u32,
    /// State.
    pub state: PortState,
    /// Rate in Gb/s, where known.
    pub rate_gbps: Option<f64>,
    /// `InfiniBand` or `Ethernet`, where known.
    pub link_layer: Option<String>,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netdev {
    /// Interface name.
    pub name: String,
    /// Its addresses, where known (live discovery only).
    pub addresses: Vec<String>,
}

/// An RDMA-capable NIC.
#[derive(Debug, Clone, PartialEq)]
pub struct Nic {
    /// Device name (`mlx5_0`); `nic<N>` where the source had none.
    pub name: String,
    /// Flavour.
    pub kind: NicKind,
    /// Its node in the PCI tree, where it is a PCI device.
    pub pci: Option<PciIdx>,
    /// Locality (copied from its PCI node, or given directly by the source).
    pub locality: Locality,
    /// Ports.
    pub ports: Vec<Port>,
    /// Network interfaces.
    pub netdevs: Vec<Netdev>,
    /// Sources that contributed facts about it.
    pub sources: Vec<SourceKind>,
}

impl Nic {
    /// The fastest rate of an active port, or of any port when none is active.
    pub fn best_rate_gbps(&self) -> Option<f64> {
        let active = self
            .ports
            .iter()
            .filter(|port| port.state == PortState::Active)
            .filter_map(|port| port.rate_gbps)
            .fold(None, |best: Option<f64>, rate| {
                Some(best.map_or(rate, |b| b.max(rate)))
            });
        active.or_else(|| {
            self.ports
                .iter()
                .filter_map(|port| port.rate_gbps)
                .fold(None, |best: Option<f64>, rate| {
                    Some(best.map_or(rate, |b| b.max(rate)))
                })
        })
    }

    /// Whether ports are known and every one is in a state that carries no traffic. Ports of
    /// unknown state (topology files) do not count as down.
    pub fn is_down(&self) -> bool {
        !self.ports.is_empty()
            && self.ports.iter().all(|port| {
                matches!(
                    port.state,
                    PortState::Down | PortState::Init | PortState::Armed
                )
            })
    }
}

impl Topology {
    /// The GPU with this index.
    pub fn gpu(&self, index: u32) -> Option<&Gpu> {
        self.gpus.iter().find(|gpu| gpu.index == index)
    }

    /// The bus id of a PCI node, if it has one.
    pub fn bus_id(&self, idx: PciIdx) -> Option<BusId> {
        self.pci.get(idx).and_then(|node| node.bus_id)
    }

    /// The PCI node with this bus id.
    pub fn pci_by_bus_id(&self, bus_id: BusId) -> Option<PciIdx> {
        self.pci.iter().position(|node| node.bus_id == Some(bus_id))
    }

    /// Locality of a GPU.
    pub fn gpu_locality(&self, gpu: &Gpu) -> &Locality {
        &self.pci[gpu.pci].locality
    }

    /// Sorts NICs by name, `mlx5_10` after `mlx5_9`.
    pub(crate) fn sort_nics(&mut self) {
        self.nics.sort_by_cached_key(|nic| natural_key(&nic.name));
    }

    /// Records that a source was used.
    pub fn record_source(&mut self, kind: SourceKind, used: bool, detail: impl Into<String>) {
        self.sources.push(Source {
            kind,
            used,
            detail: detail.into(),
        });
    }
}

/// Sorts `mlx5_10` after `mlx5_9`.
pub(crate) fn natural_key(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, number) = name.split_at(name.len() - digits);
    (stem.to_owned(), number.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_parse_in_every_spelling_tools_use() {
        let want = BusId {
            domain: 0,
            bus: 0x3b,
            device: 0,
            function: 0,
        };
        assert_eq!("0000:3b:00.0".parse::<BusId>().unwrap(), want);
        assert_eq!("00000000:3B:00.0".parse::<BusId>().unwrap(), want);
        assert_eq!("3b:00.0".parse::<BusId>().unwrap(), want);
        assert_eq!(want.to_string(), "0000:3b:00.0");
        for bad in [
            "",
            "0000:3b:00",
            "zz:00.0",
            "0000:3b:00.9",
            "0:0:0:0.0",
            "0000:3b:000.0",
        ] {
            assert!(bad.parse::<BusId>().is_err(), "{bad} parsed");
        }
    }
}
