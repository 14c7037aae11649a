//! The topology snapshot: discovered off the runtime's threads (hwloc and NVML are blocking
//! FFI), published as an immutable `Arc` through a `watch` channel, rediscovered on SIGHUP.

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

/// Discovers the topology (blocking: call it through `spawn_blocking`).
pub(crate) fn discover(source: &TopologySource) -> Result<Snapshot, String> {
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
    })
}

/// Discovers on a blocking thread.
pub(crate) async fn discover_async(source: TopologySource) -> Result<Arc<Snapshot>, String> {
    tokio::task::spawn_blocking(move || discover(&source))
        .await
        .map_err(|e| format!("discovery thread failed: {e}"))?
        .map(Arc::new)
}
