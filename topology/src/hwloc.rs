//! Reading a node through hwloc: the running machine, or an XML file `lstopo --of xml` wrote.
//!
//! Both paths go through the same hwloc library (via `hwlocality`) and the same walk over its
//! object tree, so a topology file replays exactly what discovery on that machine would see.

use std::collections::HashMap;
use std::ffi::CStr;

use hwlocality::object::attributes::{ObjectAttributes, UpstreamAttributes};
use hwlocality::object::types::{BridgeType, OSDeviceType, ObjectType};
use hwlocality::object::TopologyObject;
use hwlocality::topology::builder::TypeFilter;
use hwlocality::Topology as HwlocTopology;

use crate::cpus::CpuList;
use crate::model::{
    BusId, Gpu, GpuVendor, Locality, Netdev, Nic, NicKind, NumaNode, NvLink, NvLinkPeer, PciIdx,
    PciKind, PciLink, PciNode, SourceKind, Topology,
};

/// Why hwloc could not give a topology.
#[derive(Debug, thiserror::Error)]
pub enum HwlocError {
    /// hwloc refused to set up or build the topology.
    #[error("hwloc failed: {0}")]
    Build(String),
    /// hwloc rejected the XML content.
    #[error("hwloc rejected the XML: {0}")]
    Xml(String),
}

/// Discovers the running machine with PCI and OS devices enabled.
pub(crate) fn discover_live() -> Result<Topology, HwlocError> {
    let build = |e: &dyn std::fmt::Display| HwlocError::Build(e.to_string());
    let hwloc = HwlocTopology::builder()
        .with_io_type_filter(TypeFilter::KeepImportant)
        .map_err(|e| build(&e))?
        .build()
        .map_err(|e| build(&e))?;
    let mut topo = convert(&hwloc, SourceKind::HwlocLive);
    topo.record_source(SourceKind::HwlocLive, true, hwloc_version());
    Ok(topo)
}

/// Loads an hwloc XML document, keeping every I/O object it records.
pub(crate) fn load_xml(xml: &str, origin: &str) -> Result<Topology, HwlocError> {
    let hwloc = HwlocTopology::builder()
        .from_xml(xml)
        .map_err(|e| HwlocError::Xml(e.to_string()))?
        .with_io_type_filter(TypeFilter::KeepAll)
        .map_err(|e| HwlocError::Build(e.to_string()))?
        .build()
        .map_err(|e| HwlocError::Xml(e.to_string()))?;
    let mut topo = convert(&hwloc, SourceKind::HwlocXml);
    topo.record_source(SourceKind::HwlocXml, true, origin);
    Ok(topo)
}

/// The hwloc API version this build uses, as `hwloc API 2.8.0`.
fn hwloc_version() -> String {
    let version = hwlocality::hwloc_api_version();
    format!(
        "hwloc API {}.{}.{}",
        version >> 16,
        (version >> 8) & 0xff,
        version & 0xff
    )
}

fn cstr(text: Option<&CStr>) -> Option<String> {
    text.map(|text| text.to_string_lossy().into_owned())
        .filter(|text| !text.is_empty())
}

/// An OS device hwloc found under a PCI device.
#[derive(Debug)]
struct OsDev {
    name: String,
    kind: Option<OSDeviceType>,
    gpu_model: Option<String>,
    /// `NVIDIAUUID` (hwloc's NVML component), the name `CUDA_VISIBLE_DEVICES` may use.
    gpu_uuid: Option<String>,
}

#[derive(Debug, Default)]
struct Walk {
    pci: Vec<PciNode>,
    by_object: HashMap<u64, PciIdx>,
    osdevs: HashMap<PciIdx, Vec<OsDev>>,
    pci_names: HashMap<PciIdx, String>,
    loose_osdevs: Vec<(Locality, OsDev)>,
}

fn object_id(obj: &TopologyObject) -> u64 {
    obj.global_persistent_index()
}

fn locality_of(obj: &TopologyObject) -> Locality {
    let numa_nodes = obj
        .nodeset()
        .map(|set| {
            set.iter_set()
                .filter_map(|idx| u32::try_from(usize::from(idx)).ok())
                .collect()
        })
        .unwrap_or_default();
    let cpus = obj
        .cpuset()
        .map(|set| {
            CpuList::from_indices(
                set.iter_set()
                    .filter_map(|idx| u32::try_from(usize::from(idx)).ok()),
            )
        })
        .unwrap_or_default();
    Locality { numa_nodes, cpus }
}

/// Builds the model; `source` is what every GPU and NIC found here is attributed to.
fn convert(hwloc: &HwlocTopology, source: SourceKind) -> Topology {
    let root = hwloc.root_object();
    let mut topo = Topology {
        hostname: cstr(root.info("HostName")),
        arch: cstr(root.info("Architecture")),
        cpu_vendor: hwloc
            .objects_with_type(ObjectType::Package)
            .find_map(|package| cstr(package.info("CPUVendor"))),
        ..Topology::default()
    };
    for numa in hwloc.objects_with_type(ObjectType::NUMANode) {
        let memory_bytes = match numa.attributes() {
            Some(ObjectAttributes::NUMANode(attrs)) => attrs.local_memory().map(|m| m.get()),
            _ => None,
        };
        topo.numa_nodes.push(NumaNode {
            os_index: numa
                .os_index()
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(0),
            cpus: locality_of(numa).cpus,
            memory_bytes,
        });
    }
    topo.numa_nodes.sort_by_key(|node| node.os_index);

    let mut walk = Walk::default();
    let mut stack = vec![root];
    while let Some(obj) = stack.pop() {
        let locality = locality_of(obj);
        for io in obj.io_children() {
            walk_io(&mut walk, io, None, 0, &locality);
        }
        stack.extend(obj.normal_children());
    }
    topo.pci = walk.pci;

    collect_devices(
        &mut topo,
        source,
        &walk.osdevs,
        &walk.pci_names,
        walk.loose_osdevs,
    );
    add_nvlinks(&mut topo, hwloc, &walk.by_object);
    topo
}

fn walk_io(
    walk: &mut Walk,
    obj: &TopologyObject,
    parent: Option<PciIdx>,
    bridge_depth: u32,
    locality: &Locality,
) {
    let mut here = parent;
    let mut depth = bridge_depth;
    match (obj.object_type(), obj.attributes()) {
        (ObjectType::Bridge, Some(ObjectAttributes::Bridge(bridge))) => {
            let (kind, pci) = if bridge.upstream_type() == BridgeType::Host {
                (PciKind::HostBridge, None)
            } else {
                depth += 1;
                let kind = match depth {
                    1 => PciKind::RootPort,
                    d if d % 2 == 0 => PciKind::SwitchUpstream,
                    _ => PciKind::SwitchDownstream,
                };
                let pci = match bridge.upstream_attributes() {
                    Some(UpstreamAttributes::PCI(pci)) => Some(*pci),
                    _ => None,
                };
                (kind, pci)
            };
            here = Some(push_pci(walk, obj, kind, pci.as_ref(), parent, locality));
        }
        (ObjectType::PCIDevice, Some(ObjectAttributes::PCIDevice(pci))) => {
            let pci = *pci;
            here = Some(push_pci(
                walk,
                obj,
                PciKind::Endpoint,
                Some(&pci),
                parent,
                locality,
            ));
        }
        (ObjectType::OSDevice, attrs) => {
            let kind = match attrs {
                Some(ObjectAttributes::OSDevice(osdev)) => Some(osdev.device_type()),
                _ => None,
            };
            let osdev = OsDev {
                name: cstr(obj.name()).unwrap_or_default(),
                kind,
                gpu_model: cstr(obj.info("GPUModel")),
                gpu_uuid: cstr(obj.info("NVIDIAUUID")),
            };
            match parent {
                Some(pci) => walk.osdevs.entry(pci).or_default().push(osdev),
                None => walk.loose_osdevs.push((locality.clone(), osdev)),
            }
        }
        _ => {}
    }
    for child in obj.io_children() {
        walk_io(walk, child, here, depth, locality);
    }
}

fn push_pci(
    walk: &mut Walk,
    obj: &TopologyObject,
    kind: PciKind,
    pci: Option<&hwlocality::object::attributes::PCIDeviceAttributes>,
    parent: Option<PciIdx>,
    locality: &Locality,
) -> PciIdx {
    let idx = walk.pci.len();
    let bandwidth = pci
        .map(|pci| pci.link_speed())
        .filter(|speed| speed.is_finite() && *speed > 0.0);
    walk.pci.push(PciNode {
        kind,
        bus_id: pci.map(|pci| BusId {
            domain: u32::from(pci.domain()),
            bus: pci.bus_id(),
            device: pci.bus_device(),
            function: pci.function(),
        }),
        class: pci.map(|pci| pci.class_id()),
        vendor: pci.map(|pci| pci.vendor_id()),
        device: pci.map(|pci| pci.device_id()),
        link: PciLink {
            speed_gts: None,
            width: None,
            bandwidth_gbs: bandwidth,
        },
        parent,
        locality: locality.clone(),
    });
    walk.by_object.insert(object_id(obj), idx);
    if let Some(name) = cstr(obj.info("PCIDevice")) {
        walk.pci_names.insert(idx, name);
    }
    idx
}

/// Whether an endpoint is a GPU, and whose.
pub(crate) fn gpu_vendor(class: Option<u16>, vendor: Option<u16>) -> Option<GpuVendor> {
    match (vendor?, class?) {
        // NVIDIA data-centre GPUs are 3D controllers; workstation ones are VGA controllers.
        (0x10de, 0x0302 | 0x0300) => Some(GpuVendor::Nvidia),
        // AMD Instinct accelerators are "display controllers" or 3D controllers; Radeon VGA
        // cards are graphics cards, not what a training job is given.
        (0x1002, 0x0380 | 0x0302) => Some(GpuVendor::Amd),
        _ => None,
    }
}

/// PCI vendor ids that tell an RDMA NIC's flavour.
const AMAZON: u16 = 0x1d0f;
const MELLANOX: u16 = 0x15b3;
const BROADCOM: u16 = 0x14e4;
const CHELSIO: u16 = 0x1425;

/// The RDMA flavour as far as the name, PCI ids and class tell (sysfs refines it on a live
/// node). Only what these say for certain is named: an Ethernet-class RDMA NIC is RoCE only
/// from a vendor whose RDMA over Ethernet is RoCE alone (NVIDIA Mellanox, Broadcom); an Intel
/// or QLogic one may do RoCE or iWARP, and stays unknown.
pub(crate) fn guess_nic_kind(
    name: &str,
    ids: Option<(u16, u16)>,
    class: Option<u16>,
    netdevs: &[Netdev],
) -> NicKind {
    let vendor = ids.map(|(vendor, _)| vendor);
    // Amazon's Elastic Fabric Adapter: device ids 0xefa0 to 0xefa3 so far (an Ethernet
    // controller by class; its RDMA device is named rdmapNsM by udev, efa_N by the driver).
    let efa = matches!(ids, Some((AMAZON, device)) if device & 0xfff0 == 0xefa0);
    if efa || name.starts_with("efa") {
        NicKind::Efa
    } else if vendor == Some(CHELSIO) || name.starts_with("iw") || name.starts_with("cxgb") {
        NicKind::Iwarp
    } else if class == Some(0x0207) || netdevs.iter().any(|dev| dev.name.starts_with("ib")) {
        NicKind::InfiniBand
    } else if class == Some(0x0200) && matches!(vendor, Some(MELLANOX | BROADCOM)) {
        NicKind::Roce
    } else {
        NicKind::Unknown
    }
}

fn collect_devices(
    topo: &mut Topology,
    source: SourceKind,
    osdevs: &HashMap<PciIdx, Vec<OsDev>>,
    pci_names: &HashMap<PciIdx, String>,
    loose: Vec<(Locality, OsDev)>,
) {
    let mut gpus: Vec<(BusId, Gpu)> = Vec::new();
    for (idx, node) in topo.pci.iter().enumerate() {
        if node.kind != PciKind::Endpoint {
            continue;
        }
        let devs = osdevs.get(&idx).map(Vec::as_slice).unwrap_or(&[]);
        let Some(bus_id) = node.bus_id else { continue };
        let has_gpu_osdev = devs.iter().any(|dev| {
            matches!(
                dev.kind,
                Some(OSDeviceType::GPU | OSDeviceType::CoProcessor)
            ) && (dev.name.starts_with("rsmi") || dev.name.starts_with("nvml"))
        });
        let vendor = gpu_vendor(node.class, node.vendor).or_else(|| {
            (has_gpu_osdev && node.class.is_some_and(|class| class >> 8 == 0x03)).then_some(
                match node.vendor {
                    Some(0x10de) => GpuVendor::Nvidia,
                    Some(0x1002) => GpuVendor::Amd,
                    _ => GpuVendor::Other,
                },
            )
        });
        if let Some(vendor) = vendor {
            let model = devs
                .iter()
                .find_map(|dev| dev.gpu_model.clone())
                .or_else(|| pci_names.get(&idx).cloned());
            gpus.push((
                bus_id,
                Gpu {
                    index: 0,
                    pci: idx,
                    bus_id,
                    vendor,
                    model,
                    uuid: devs.iter().find_map(|dev| dev.gpu_uuid.clone()),
                    nvlinks: Vec::new(),
                    sources: vec![source],
                },
            ));
            continue;
        }
        let netdevs: Vec<Netdev> = devs
            .iter()
            .filter(|dev| dev.kind == Some(OSDeviceType::Network))
            .map(|dev| Netdev {
                name: dev.name.clone(),
                addresses: Vec::new(),
            })
            .collect();
        let fabrics: Vec<&OsDev> = devs
            .iter()
            .filter(|dev| dev.kind == Some(OSDeviceType::OpenFabrics))
            .collect();
        if fabrics.is_empty() {
            topo.plain_netdevs
                .extend(netdevs.into_iter().map(|dev| dev.name));
            continue;
        }
        for fabric in fabrics {
            topo.nics.push(Nic {
                name: fabric.name.clone(),
                kind: guess_nic_kind(
                    &fabric.name,
                    node.vendor.zip(node.device),
                    node.class,
                    &netdevs,
                ),
                pci: Some(idx),
                locality: node.locality.clone(),
                ports: Vec::new(),
                netdevs: netdevs.clone(),
                sources: vec![source],
            });
        }
    }
    for (locality, dev) in loose {
        match dev.kind {
            Some(OSDeviceType::OpenFabrics) => topo.nics.push(Nic {
                kind: guess_nic_kind(&dev.name, None, None, &[]),
                name: dev.name,
                pci: None,
                locality,
                ports: Vec::new(),
                netdevs: Vec::new(),
                sources: vec![source],
            }),
            Some(OSDeviceType::Network) => topo.plain_netdevs.push(dev.name),
            _ => {}
        }
    }
    gpus.sort_by_key(|(bus_id, _)| *bus_id);
    topo.gpus = gpus
        .into_iter()
        .zip(0u32..)
        .map(|((_, gpu), index)| Gpu { index, ..gpu })
        .collect();
    topo.sort_nics();
    topo.plain_netdevs.sort();
    topo.plain_netdevs.dedup();
}

/// Per-link NVLink bandwidth in MB/s, as hwloc's NVML backend reports it: 20 GB/s for the
/// first generation (P100), 25 GB/s afterwards, 50 GB/s from the fifth (Blackwell).
fn per_link_mbs(bandwidth: u64, model: Option<&str>) -> u64 {
    let blackwell = model.is_some_and(|model| {
        ["B100", "B200", "B300", "GB200", "GB300"]
            .iter()
            .any(|tag| model.contains(tag))
    });
    if blackwell && bandwidth % 50_000 == 0 {
        50_000
    } else if bandwidth % 25_000 != 0 && bandwidth % 20_000 == 0 {
        20_000
    } else {
        25_000
    }
}

fn add_nvlinks(topo: &mut Topology, hwloc: &HwlocTopology, by_object: &HashMap<u64, PciIdx>) {
    let Ok(matrices) = hwloc.distances_with_name("NVLinkBandwidth") else {
        return;
    };
    let pci_of = |obj: &TopologyObject| -> Option<PciIdx> {
        std::iter::once(obj)
            .chain(obj.ancestors())
            .find_map(|o| by_object.get(&object_id(o)).copied())
    };
    for matrix in matrices {
        let objects: Vec<Option<&TopologyObject>> = matrix.objects().collect();
        for ((from, to), bandwidth) in matrix.enumerate_distances() {
            if from == to || bandwidth == 0 {
                continue;
            }
            let (Some(Some(src)), Some(Some(dst))) = (objects.get(from), objects.get(to)) else {
                continue;
            };
            let Some(src_gpu) =
                pci_of(src).and_then(|pci| topo.gpus.iter().position(|gpu| gpu.pci == pci))
            else {
                continue;
            };
            let peer = if dst.object_type() == ObjectType::Package {
                NvLinkPeer::Cpu(
                    dst.os_index()
                        .and_then(|i| u32::try_from(i).ok())
                        .unwrap_or(0),
                )
            } else {
                let Some(dst_pci) = pci_of(dst) else { continue };
                match topo.gpus.iter().find(|gpu| gpu.pci == dst_pci) {
                    Some(gpu) => NvLinkPeer::Gpu(gpu.index),
                    None => NvLinkPeer::NvSwitch(topo.pci[dst_pci].bus_id),
                }
            };
            let gpu = &mut topo.gpus[src_gpu];
            let per_link = per_link_mbs(bandwidth, gpu.model.as_deref());
            let links = u32::try_from(bandwidth.div_ceil(per_link)).unwrap_or(u32::MAX);
            match gpu.nvlinks.iter_mut().find(|link| link.peer == peer) {
                // Several OS devices of one GPU (cuda0, nvml0) can each carry the matrix.
                Some(link) => link.links = link.links.max(links),
                None => gpu.nvlinks.push(NvLink { peer, links }),
            }
        }
    }
    for gpu in &mut topo.gpus {
        gpu.nvlinks.sort_by_key(|link| link.peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nic_kind_is_named_only_when_its_ids_class_or_name_say_so() {
        let ethernet = Some(0x0200);
        // Amazon EFA by its ids, whatever its class or udev name says.
        assert_eq!(
            guess_nic_kind("rdmap16s27", Some((AMAZON, 0xefa1)), ethernet, &[]),
            NicKind::Efa
        );
        assert_eq!(guess_nic_kind("efa_0", None, None, &[]), NicKind::Efa);
        // An Amazon ENA (plain Ethernet, 0xec20) is no EFA.
        assert_eq!(
            guess_nic_kind("rdmap0", Some((AMAZON, 0xec20)), ethernet, &[]),
            NicKind::Unknown
        );
        assert_eq!(
            guess_nic_kind("mlx5_0", Some((MELLANOX, 0x101d)), Some(0x0207), &[]),
            NicKind::InfiniBand
        );
        assert_eq!(
            guess_nic_kind("mlx5_2", Some((MELLANOX, 0x101d)), ethernet, &[]),
            NicKind::Roce
        );
        assert_eq!(
            guess_nic_kind("bnxt_re0", Some((BROADCOM, 0x1750)), ethernet, &[]),
            NicKind::Roce
        );
        assert_eq!(
            guess_nic_kind("cxgb4_0", Some((CHELSIO, 0x6410)), ethernet, &[]),
            NicKind::Iwarp
        );
        // Intel's irdma does RoCE or iWARP: an Ethernet-class Intel NIC is not guessed.
        assert_eq!(
            guess_nic_kind("irdma0", Some((0x8086, 0x1592)), ethernet, &[]),
            NicKind::Unknown
        );
        let ib = [Netdev {
            name: "ib0".into(),
            addresses: Vec::new(),
        }];
        assert_eq!(guess_nic_kind("qib0", None, None, &ib), NicKind::InfiniBand);
    }
}
