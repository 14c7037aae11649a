//! Helpers shared by the topology test binaries: fixture lookup and checks used on every file.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use cohort_topology::{Device, PathClass, Topology};

/// The project's own fixtures, always present.
pub fn own_fixture(name: &str) -> Topology {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test_data")
        .join(name);
    Topology::from_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// The folder of real machines' topology files, or `None` (with the reason printed).
pub fn real_fixture_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/topologies");
    if dir.is_dir() {
        Some(dir)
    } else {
        skipped(&format!(
            "{} is absent (third-party topology files are kept beside the checkout, never in it)",
            dir.display()
        ));
        None
    }
}

/// Says a check was skipped, on the real stderr (not the test harness's captured output), so
/// the line shows even when the test passes.
pub fn skipped(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {reason}");
}

/// A real machine's topology file, or `None` (with the reason printed).
pub fn real_fixture(name: &str) -> Option<Topology> {
    let path = real_fixture_dir()?.join(name);
    Some(Topology::from_file(&path).unwrap_or_else(|e| panic!("{e}")))
}

/// How many (GPU, NIC) pairs are at this class.
pub fn gpu_nic_pairs_at(topo: &Topology, class: PathClass) -> usize {
    (0..topo.gpus.len())
        .flat_map(|gpu| (0..topo.nics.len()).map(move |nic| (gpu, nic)))
        .filter(|&(gpu, nic)| topo.path_class(Device::Gpu(gpu), Device::Nic(nic)) == class)
        .count()
}

/// The matrix and the assignment, as `cohort topo` prints them (without the sources, whose
/// paths depend on where the test runs).
pub fn render_all(topo: &Topology) -> String {
    let assignment = topo.assign_nics(None).unwrap();
    format!(
        "{}\n{}",
        topo.render_matrix(),
        topo.render_assignment(&assignment)
    )
}

/// Exports to NCCL's format, imports the result, and checks every PCI path class survived.
/// NCCL's format has no host bridges, so `NODE` comes back as `PHB` (NCCL's own reading), and
/// NVLink is left for NCCL to read from NVML, so GPU pairs are compared only over PCI.
pub fn round_trip_through_nccl(topo: &Topology) {
    let xml = cohort_topology::to_nccl_xml(topo);
    let back = Topology::from_xml_str(&xml, "exported").unwrap_or_else(|e| panic!("{e}\n{xml}"));
    assert_eq!(back.gpus.len(), topo.gpus.len(), "{xml}");
    assert_eq!(back.nics.len(), topo.nics.len(), "{xml}");
    let devices = |t: &Topology| -> Vec<Device> {
        (0..t.gpus.len())
            .map(Device::Gpu)
            .chain((0..t.nics.len()).map(Device::Nic))
            .collect()
    };
    let normal = |class: PathClass| match class {
        PathClass::Node => PathClass::Phb,
        other => other,
    };
    for (i, &a) in devices(topo).iter().enumerate() {
        for (j, &b) in devices(topo).iter().enumerate() {
            if i == j {
                continue;
            }
            let original = topo.path_class(a, b);
            if matches!(original, PathClass::NvLink(_)) {
                continue;
            }
            assert_eq!(
                normal(back.path_class(a, b)),
                normal(original),
                "{a:?} - {b:?} after export:\n{xml}"
            );
        }
    }
}
