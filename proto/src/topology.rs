//! The topology document: one node's GPUs, NICs, PCI tree and NUMA layout as JSON.
//!
//! `cohort topo --json` prints it and `cohort topo --from FILE.json` reads it back. Readers
//! accept unknown fields so that a newer writer within the same major version stays readable;
//! a document whose `format` or major `version` differs is refused with [`DocError`].

use serde::{Deserialize, Serialize};

/// The value of [`TopologyDoc::format`]: tells a Cohort topology document from other JSON.
pub const TOPOLOGY_FORMAT: &str = "cohort.topology";

/// The major version this crate writes and reads. Additive changes keep it; anything else
/// bumps it.
pub const TOPOLOGY_VERSION: u32 = 1;

/// Why a topology document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// The bytes are not JSON, or not shaped like a topology document.
    #[error("not a valid topology document: {0}")]
    Json(#[from] serde_json::Error),
    /// The document names another format.
    #[error("format is {found:?}, expected {TOPOLOGY_FORMAT:?}")]
    Format {
        /// The format string found in the document.
        found: String,
    },
    /// The document has a major version this build does not read.
    #[error("topology document version {found} is not supported (this build reads version {TOPOLOGY_VERSION})")]
    Version {
        /// The version found in the document.
        found: u32,
    },
}

/// One node's topology, with the path classes and GPU -> NIC assignment computed from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyDoc {
    /// Always [`TOPOLOGY_FORMAT`].
    pub format: String,
    /// Always [`TOPOLOGY_VERSION`] when written by this crate.
    pub version: u32,
    /// Host name, where the source recorded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// CPU architecture (for example `x86_64`), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Every source that was tried, in the order it was applied, and what came of it.
    pub sources: Vec<SourceDoc>,
    /// NUMA nodes with their CPUs and memory.
    pub numa_nodes: Vec<NumaNodeDoc>,
    /// The PCI tree as a flat list; `parent` refers to `id` of another entry.
    pub pci: Vec<PciDoc>,
    /// GPUs, ordered by index.
    pub gpus: Vec<GpuDoc>,
    /// RDMA-capable NICs, ordered by name.
    pub nics: Vec<NicDoc>,
    /// Path classes between every pair of GPUs and NICs.
    pub paths: PathMatrixDoc,
    /// The GPU -> NIC assignment for all GPUs (or the subset that was asked for).
    pub assignment: Vec<AssignmentDoc>,
    /// Things discovery noticed that a user should know (missing libraries, odd data).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl TopologyDoc {
    /// Parses a document, checking its format and major version.
    pub fn from_json(bytes: &[u8]) -> Result<TopologyDoc, DocError> {
        #[derive(Deserialize)]
        struct Header {
            format: String,
            version: u32,
        }
        let header: Header = serde_json::from_slice(bytes)?;
        if header.format != TOPOLOGY_FORMAT {
            return Err(DocError::Format {
                found: header.format,
            });
        }
        if header.version != TOPOLOGY_VERSION {
            return Err(DocError::Version {
                found: header.version,
            });
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Serialises the document as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> String {
        // A tree of plain structs, strings and numbers (no maps with non-string keys, no
        // non-finite floats) cannot fail to serialise.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// One source of facts and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceDoc {
    /// `hwloc-live`, `hwloc-xml`, `nccl-xml`, `cohort-json`, `nvml` or `sysfs`.
    pub kind: String,
    /// `used` or `unavailable`.
    pub status: String,
    /// A file path, library version, or the reason it was unavailable.
    pub detail: String,
}

/// A NUMA node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumaNodeDoc {
    /// The operating system's index of the node.
    pub os_index: u32,
    /// Its CPUs as a Linux list (`0-15,32-47`).
    pub cpus: String,
    /// Local memory in bytes, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// One PCI object: a host bridge, a bridge (switch port or root port) or an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PciDoc {
    /// Index of this entry in [`TopologyDoc::pci`].
    pub id: usize,
    /// Index of the parent entry; none for host bridges (and top-level entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<usize>,
    /// `host-bridge`, `bridge` or `endpoint`.
    pub kind: String,
    /// Bus id `dddd:bb:dd.f`; host bridges have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_id: Option<String>,
    /// PCI class code (`0x0302` is a 3D controller, `0x0207` an InfiniBand controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<u16>,
    /// PCI vendor id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<u16>,
    /// PCI device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<u16>,
    /// Link speed per lane in GT/s, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_speed_gts: Option<f32>,
    /// Link width in lanes, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_width: Option<u16>,
    /// Link bandwidth in GB/s, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_bandwidth_gbs: Option<f32>,
    /// NUMA nodes the object is local to (set on top-level entries; children inherit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numa_nodes: Vec<u32>,
}

/// A GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuDoc {
    /// Index in PCI bus order, as `nvidia-smi` and `CUDA_DEVICE_ORDER=PCI_BUS_ID` number them.
    pub index: u32,
    /// PCI bus id.
    pub bus_id: String,
    /// `nvidia`, `amd` or `other`.
    pub vendor: String,
    /// Model name, where a source gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// UUID, from NVML only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// NUMA nodes the GPU is local to.
    pub numa_nodes: Vec<u32>,
    /// CPUs local to the GPU as a Linux list.
    pub cpus: String,
    /// NVLink connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nvlinks: Vec<NvLinkDoc>,
    /// Sources that contributed facts about this GPU.
    pub sources: Vec<String>,
}

/// NVLink connections from one GPU to one peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NvLinkDoc {
    /// `gpu`, `nvswitch` or `cpu`.
    pub peer_kind: String,
    /// GPU index, NVSwitch bus id or CPU package index.
    pub peer: String,
    /// Number of links.
    pub links: u32,
}

/// An RDMA-capable NIC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NicDoc {
    /// Device name (`mlx5_0`, `efa_0`); sources without names give `nic<N>`.
    pub name: String,
    /// `infiniband`, `roce`, `efa`, `iwarp` or `unknown`.
    pub kind: String,
    /// PCI bus id, where the NIC is a PCI device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_id: Option<String>,
    /// NUMA nodes the NIC is local to.
    pub numa_nodes: Vec<u32>,
    /// Ports, where a source gave them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortDoc>,
    /// Network interfaces of the NIC with their addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub netdevs: Vec<NetdevDoc>,
    /// Sources that contributed facts about this NIC.
    pub sources: Vec<String>,
}

/// One port of an RDMA NIC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortDoc {
    /// Port number (from 1).
    pub number: u32,
    /// `active`, `down`, `init`, `armed` or `unknown`.
    pub state: String,
    /// Rate in Gb/s, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_gbps: Option<f64>,
    /// `InfiniBand` or `Ethernet`, as the kernel reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_layer: Option<String>,
}

/// A network interface and its addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetdevDoc {
    /// Interface name (`ib0`, `eth2`).
    pub name: String,
    /// IPv4 and IPv6 addresses, where known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// Path classes between every pair of devices, as `nvidia-smi topo -m` prints them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathMatrixDoc {
    /// Row and column labels: `GPU0`.., then `NIC0`...
    pub labels: Vec<String>,
    /// `classes[i][j]` is the path class from `labels[i]` to `labels[j]` (`X` on the diagonal).
    pub classes: Vec<Vec<String>>,
}

/// The NICs assigned to one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentDoc {
    /// GPU index.
    pub gpu: u32,
    /// NIC names, first the primary; more than one when several are equally close (rails).
    pub nics: Vec<String>,
    /// The path class between the GPU and its NICs.
    pub path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> TopologyDoc {
        TopologyDoc {
            format: TOPOLOGY_FORMAT.into(),
            version: TOPOLOGY_VERSION,
            hostname: Some("n1".into()),
            arch: None,
            sources: vec![],
            numa_nodes: vec![],
            pci: vec![],
            gpus: vec![],
            nics: vec![],
            paths: PathMatrixDoc {
                labels: vec![],
                classes: vec![],
            },
            assignment: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let doc = minimal();
        let mut value: serde_json::Value = serde_json::from_str(&doc.to_json_pretty()).unwrap();
        value["added_later"] = serde_json::json!(42);
        let back = TopologyDoc::from_json(value.to_string().as_bytes()).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn refuses_other_formats_and_versions() {
        let mut value = serde_json::to_value(minimal()).unwrap();
        value["version"] = serde_json::json!(2);
        let err = TopologyDoc::from_json(value.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, DocError::Version { found: 2 }), "{err}");
        value["format"] = serde_json::json!("other");
        let err = TopologyDoc::from_json(value.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, DocError::Format { .. }), "{err}");
    }
}
