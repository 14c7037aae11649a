//! RDMA devices as Linux sysfs shows them, read below an explicit root directory.
//!
//! The root is `/` on a live node; tests point it at a captured tree, so every code path here
//! can be replayed. Layout read (as the kernel's `drivers/infiniband/core/sysfs.c` writes it):
//! `sys/class/infiniband/<dev>/node_type` (`1: CA`, `4: RNIC`),
//! `sys/class/infiniband/<dev>/ports/<n>/{state,rate,link_layer}` (`4: ACTIVE`,
//! `200 Gb/sec (4X HDR)`, `InfiniBand`), `sys/class/infiniband/<dev>/device` (a link to the PCI
//! function, whose name is its bus id), `sys/class/infiniband/<dev>/device/net/<ifname>`, and
//! `sys/bus/pci/devices/<bus id>/current_link_{speed,width}` (`16.0 GT/s PCIe`, `16`).

use std::path::{Path, PathBuf};

use crate::model::natural_key;
use crate::model::{BusId, Locality, Netdev, Nic, NicKind, Port, PortState, SourceKind, Topology};

/// A directory standing for `/` when reading sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsRoot(pub PathBuf);

impl Default for SysfsRoot {
    fn default() -> SysfsRoot {
        SysfsRoot(PathBuf::from("/"))
    }
}

/// One RDMA device as sysfs shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RdmaDevice {
    /// Device name (`mlx5_0`).
    pub name: String,
    /// The PCI function it belongs to, where the `device` link resolves to one.
    pub bus_id: Option<BusId>,
    /// `node_type` as the kernel wrote it (`1: CA`).
    pub node_type: Option<String>,
    /// Ports, by number.
    pub ports: Vec<Port>,
    /// Network interfaces of the same PCI function.
    pub netdevs: Vec<String>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            )
        })
        .collect();
    names.sort_by_cached_key(|(name, _)| natural_key(name));
    names
}

/// Parses `4: ACTIVE`.
fn parse_state(text: &str) -> PortState {
    let word = text.split(':').next_back().unwrap_or(text).trim();
    match word.to_ascii_uppercase().as_str() {
        "ACTIVE" => PortState::Active,
        "DOWN" => PortState::Down,
        "INIT" => PortState::Init,
        "ARMED" => PortState::Armed,
        _ => PortState::Unknown,
    }
}

/// Parses `200 Gb/sec (4X HDR)` into 200.
fn parse_rate(text: &str) -> Option<f64> {
    let mut words = text.split_whitespace();
    let number: f64 = words.next()?.parse().ok()?;
    match words.next() {
        Some(unit) if unit.starts_with("Gb") => Some(number),
        Some(unit) if unit.starts_with("Mb") => Some(number / 1000.0),
        _ => None,
    }
}

impl SysfsRoot {
    fn path(&self, relative: &str) -> PathBuf {
        self.0.join(relative)
    }

    /// Lists RDMA devices; an absent `sys/class/infiniband` (no RDMA stack) is an empty list.
    pub fn rdma_devices(&self) -> Vec<RdmaDevice> {
        let class = self.path("sys/class/infiniband");
        sorted_entries(&class)
            .into_iter()
            .map(|(name, dir)| {
                let bus_id = std::fs::canonicalize(dir.join("device"))
                    .ok()
                    .and_then(|target| {
                        target
                            .file_name()
                            .and_then(|n| n.to_str())
                            .and_then(|n| n.parse().ok())
                    });
                let ports = sorted_entries(&dir.join("ports"))
                    .into_iter()
                    .filter_map(|(number, port_dir)| {
                        Some(Port {
                            number: number.parse().ok()?,
                            state: read_trimmed(&port_dir.join("state"))
                                .map_or(PortState::Unknown, |s| parse_state(&s)),
                            rate_gbps: read_trimmed(&port_dir.join("rate"))
                                .and_then(|s| parse_rate(&s)),
                            link_layer: read_trimmed(&port_dir.join("link_layer")),
                        })
                    })
                    .collect();
                let netdevs = sorted_entries(&dir.join("device/net"))
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect();
                RdmaDevice {
                    name,
                    bus_id,
                    node_type: read_trimmed(&dir.join("node_type")),
                    ports,
                    netdevs,
                }
            })
            .collect()
    }
}

/// The RDMA flavour sysfs tells: EFA by name, iWARP by node type, else the link layer.
fn kind_from_sysfs(device: &RdmaDevice) -> Option<NicKind> {
    if device.name.starts_with("efa") {
        return Some(NicKind::Efa);
    }
    if device
        .node_type
        .as_deref()
        .is_some_and(|t| t.starts_with("4:") || t.contains("RNIC"))
    {
        return Some(NicKind::Iwarp);
    }
    let layers: Vec<&str> = device
        .ports
        .iter()
        .filter_map(|port| port.link_layer.as_deref())
        .collect();
    if layers
        .iter()
        .any(|layer| layer.eq_ignore_ascii_case("InfiniBand"))
    {
        Some(NicKind::InfiniBand)
    } else if layers
        .iter()
        .any(|layer| layer.eq_ignore_ascii_case("Ethernet"))
    {
        Some(NicKind::Roce)
    } else {
        None
    }
}

impl Topology {
    /// Adds what sysfs says about RDMA devices: port state, rate, link layer, kind and network
    /// interfaces. Devices hwloc did not report are added, placed by their bus id.
    pub fn apply_sysfs(&mut self, root: &SysfsRoot) {
        let devices = root.rdma_devices();
        let detail = format!(
            "{} ({} RDMA device{})",
            root.path("sys/class/infiniband").display(),
            devices.len(),
            if devices.len() == 1 { "" } else { "s" }
        );
        for device in devices {
            let pci = device.bus_id.and_then(|bus| self.pci_by_bus_id(bus));
            let position = match self.nics.iter().position(|nic| nic.name == device.name) {
                Some(position) => position,
                None => {
                    let locality =
                        pci.map_or_else(Locality::default, |idx| self.pci[idx].locality.clone());
                    self.nics.push(Nic {
                        name: device.name.clone(),
                        kind: NicKind::Unknown,
                        pci,
                        locality,
                        ports: Vec::new(),
                        netdevs: Vec::new(),
                        sources: Vec::new(),
                    });
                    self.nics.len() - 1
                }
            };
            let kind = kind_from_sysfs(&device);
            let nic = &mut self.nics[position];
            if let Some(kind) = kind {
                nic.kind = kind;
            }
            if !device.ports.is_empty() {
                nic.ports = device.ports;
            }
            for name in device.netdevs {
                if !nic.netdevs.iter().any(|dev| dev.name == name) {
                    nic.netdevs.push(Netdev {
                        name,
                        addresses: Vec::new(),
                    });
                }
            }
            if !nic.sources.contains(&SourceKind::Sysfs) {
                nic.sources.push(SourceKind::Sysfs);
            }
            self.plain_netdevs
                .retain(|name| !nic.netdevs.iter().any(|dev| &dev.name == name));
        }
        self.sort_nics();
        let links = self.apply_pci_links(root);
        self.record_source(
            SourceKind::Sysfs,
            true,
            format!("{detail}; PCIe link speed and width of {links} device(s)"),
        );
    }

    /// Reads `current_link_speed` (`16.0 GT/s PCIe`) and `current_link_width` (`16`) of every
    /// PCI function with a bus id from `sys/bus/pci/devices/<bus id>/`; returns how many had
    /// them.
    fn apply_pci_links(&mut self, root: &SysfsRoot) -> usize {
        let devices = root.path("sys/bus/pci/devices");
        let mut found = 0;
        for node in &mut self.pci {
            let Some(bus_id) = node.bus_id else { continue };
            let dir = devices.join(bus_id.to_string());
            let speed = read_trimmed(&dir.join("current_link_speed")).and_then(|text| {
                text.split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<f32>().ok())
            });
            let width = read_trimmed(&dir.join("current_link_width"))
                .and_then(|text| text.parse::<u16>().ok());
            // Root complex functions report 0 or "Unknown"; those are not links.
            if let (Some(speed), Some(width)) = (speed, width) {
                if speed > 0.0 && width > 0 {
                    node.link.speed_gts = Some(speed);
                    node.link.width = Some(width);
                    found += 1;
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_files_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_state("4: ACTIVE"), PortState::Active);
        assert_eq!(parse_state("1: DOWN"), PortState::Down);
        assert_eq!(parse_state("garbage"), PortState::Unknown);
        assert_eq!(parse_rate("200 Gb/sec (4X HDR)"), Some(200.0));
        assert_eq!(parse_rate("2.5 Gb/sec (1X SDR)"), Some(2.5));
        assert_eq!(parse_rate("fast"), None);
    }

    #[test]
    fn a_root_without_rdma_lists_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SysfsRoot(dir.path().to_owned()).rdma_devices().is_empty());
    }
}
