//! The topology snapshot: discovered off the runtime's threads (hwloc and NVML are blocking
//! FFI), published as an immutable `Arc` through a `watch` channel, rediscovered on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cohort_proto::topology::TopologyDoc;
use cohort_topology::{LiveOptions, Topology};

use crate::config::TopologySource;

/// One discovery's result, shared read-only.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) topology: Arc<Topology>,
    pub(crate) doc: TopologyDoc,
    pub(crate) summary: String,
    pub(crate) source: String,
    pub(crate) discovered_at: u64,
    /// The topology in NCCL's format, exported for the steps' `NCCL_TOPO_FILE` when it came
    /// from a file or its PCI tree is virtualised (NCCL would otherwise read a different or a
    /// flattened tree).
    pub(crate) nccl_topo: Option<PathBuf>,
}

/// Checks that a topology file loads (for `--check-config`).
pub(crate) fn check_source(source: &TopologySource) -> Result<(), String> {
    match source {
        TopologySource::Live => Ok(()),
        TopologySource::File(path) => Topology::from_file(path)
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

/// The file each snapshot's NCCL topology is exported to, in `dir` (replaced whole).
const NCCL_TOPO_FILE: &str = "nccl-topo.xml";

/// Writes `topo` in NCCL's format to `dir/nccl-topo.xml` (readable by every user: the steps'
/// tasks run as their users), replacing the previous snapshot's whole.
fn export_nccl(topo: &Topology, dir: &Path) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(NCCL_TOPO_FILE);
    let tmp = dir.join(format!(".{NCCL_TOPO_FILE}.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    file.write_all(cohort_topology::to_nccl_xml(topo).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Discovers the topology (blocking: call it through `spawn_blocking`); exports it for NCCL
/// into `export_dir` when NCCL should not probe the tree itself.
pub(crate) fn discover(
    source: &TopologySource,
    export_dir: Option<&Path>,
) -> Result<Snapshot, String> {
    let (topo, source_text) = match source {
        TopologySource::Live => (
            Topology::discover(&LiveOptions {
                nvml: true,
                ..LiveOptions::default()
            })
            .map_err(|e| e.to_string())?,
            "live".to_owned(),
        ),
        TopologySource::File(path) => (
            Topology::from_file(path).map_err(|e| e.to_string())?,
            path.display().to_string(),
        ),
    };
    let assignment = topo.assign_nics(None).map_err(|e| e.to_string())?;
    let from_file = matches!(source, TopologySource::File(_));
    let nccl_topo = match export_dir {
        Some(dir) if from_file || topo.pci_virtualised() => match export_nccl(&topo, dir) {
            Ok(path) => Some(path),
            Err(e) => {
                tracing::warn!(
                    "cannot export the topology for NCCL into {}: {e}; steps get no NCCL_TOPO_FILE",
                    dir.display()
                );
                None
            }
        },
        _ => None,
    };
    let summary = format!(
        "{} NUMA node(s), {} GPU(s), {} RDMA NIC(s)",
        topo.numa_nodes.len(),
        topo.gpus.len(),
        topo.nics.len()
    );
    Ok(Snapshot {
        doc: topo.to_doc(&assignment),
        topology: Arc::new(topo),
        summary,
        source: source_text,
        discovered_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        nccl_topo,
    })
}

/// Discovers on a blocking thread.
pub(crate) async fn discover_async(
    source: TopologySource,
    export_dir: Option<PathBuf>,
) -> Result<Arc<Snapshot>, String> {
    tokio::task::spawn_blocking(move || discover(&source, export_dir.as_deref()))
        .await
        .map_err(|e| format!("discovery thread failed: {e}"))?
        .map(Arc::new)
}
