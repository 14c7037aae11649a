//! The project's own fixtures (in `test_data/`, written by hand and described in
//! `test_data/README.md`), a captured sysfs tree, small inline topologies for the assignment
//! rules, and discovery of the machine the tests run on.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use cohort_proto::topology::TopologyDoc;
use cohort_topology::model::{NicKind, PortState, SourceKind};
use cohort_topology::{AssignError, Device, LiveOptions, PathClass, SysfsRoot, Topology};
use expect_test::expect_file;

use common::{gpu_nic_pairs_at, own_fixture, render_all, round_trip_through_nccl};

fn names(topo: &Topology, nics: &[usize]) -> Vec<String> {
    nics.iter()
        .map(|&nic| topo.nics[nic].name.clone())
        .collect()
}

#[test]
fn hgx_server_spreads_gpus_over_the_nics_of_their_switch() {
    let topo = own_fixture("hgx-2s-8gpu-8nic.nccl.xml");
    assert_eq!((topo.gpus.len(), topo.nics.len()), (8, 8));
    // Two GPUs and two NICs per switch: each GPU sees two NICs at PIX.
    assert_eq!(gpu_nic_pairs_at(&topo, PathClass::Pix), 16);
    assert_eq!(
        topo.path_class(Device::Gpu(0), Device::Gpu(7)),
        PathClass::NvLink(12)
    );
    let all = topo.assign_nics(None).unwrap();
    let primaries: Vec<String> = all
        .iter()
        .map(|a| topo.nics[a.nics[0]].name.clone())
        .collect();
    assert_eq!(
        primaries,
        ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_7"]
    );
    assert!(all.iter().all(|a| a.nics.len() == 1));
    // A job granted one GPU per switch gets both of the switch's NICs as rails.
    let subset = topo.assign_nics(Some(&[0, 5])).unwrap();
    assert_eq!(names(&topo, &subset[0].nics), ["mlx5_0", "mlx5_1"]);
    assert_eq!(names(&topo, &subset[1].nics), ["mlx5_4", "mlx5_5"]);
    // Two GPUs of one switch share nothing.
    let pair = topo.assign_nics(Some(&[1, 0])).unwrap();
    assert_eq!(pair[0].gpu, 1);
    assert_eq!(names(&topo, &pair[0].nics), ["mlx5_0"]);
    assert_eq!(names(&topo, &pair[1].nics), ["mlx5_1"]);
    assert!(topo.doctor().is_empty(), "{:?}", topo.doctor());
    expect_file!["snapshots/own-hgx-2s-8gpu-8nic.txt"].assert_eq(&render_all(&topo));
    round_trip_through_nccl(&topo);
}

#[test]
fn rails_node_gives_two_hcas_to_one_gpu_and_tells_host_bridges_apart() {
    let topo = own_fixture("1s-2gpu-rails-roce.hwloc.xml");
    assert_eq!(topo.hostname.as_deref(), Some("rails-node"));
    assert_eq!(topo.cpu_vendor.as_deref(), Some("AuthenticAMD"));
    assert_eq!(
        topo.path_class(Device::Gpu(0), Device::Gpu(1)),
        PathClass::Node
    );
    let assignment = topo.assign_nics(None).unwrap();
    assert_eq!(names(&topo, &assignment[0].nics), ["mlx5_0", "mlx5_1"]);
    assert_eq!(assignment[0].path, Some(PathClass::Pix));
    assert_eq!(names(&topo, &assignment[1].nics), ["mlx5_2"]);
    assert_eq!(assignment[1].path, Some(PathClass::Phb));
    assert_eq!(topo.nics[2].kind, NicKind::Roce);
    assert_eq!(topo.nics[0].kind, NicKind::InfiniBand);
    assert_eq!(topo.plain_netdevs, ["eth0"]);
    assert_eq!(topo.gpus[0].model.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    // Every fact is attributed to the source it came from.
    assert!(topo
        .gpus
        .iter()
        .all(|gpu| gpu.sources == [SourceKind::HwlocXml]));
    assert!(topo
        .nics
        .iter()
        .all(|nic| nic.sources == [SourceKind::HwlocXml]));
    assert!(topo.doctor().is_empty(), "{:?}", topo.doctor());
    expect_file!["snapshots/own-1s-2gpu-rails-roce.txt"].assert_eq(&render_all(&topo));
    round_trip_through_nccl(&topo);
}

/// `test_data/sysfs/rails-node` is a hand-written tree that follows the kernel's layout for the
/// rails node above: mlx5_0 active at 400 Gb/s, mlx5_1 active at only 200 Gb/s, mlx5_2 (RoCE)
/// down.
#[test]
fn sysfs_replay_adds_port_state_rate_and_link_layer() {
    let mut topo = own_fixture("1s-2gpu-rails-roce.hwloc.xml");
    let root = SysfsRoot(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/sysfs/rails-node"),
    );
    let devices = root.rdma_devices();
    assert_eq!(devices.len(), 3);
    assert_eq!(
        devices[0].bus_id.map(|b| b.to_string()).as_deref(),
        Some("0000:04:00.0")
    );
    assert_eq!(devices[2].netdevs, ["eth2"]);
    topo.apply_sysfs(&root);
    let port = |nic: usize| topo.nics[nic].ports[0].clone();
    assert_eq!(port(0).state, PortState::Active);
    assert_eq!(port(0).rate_gbps, Some(400.0));
    assert_eq!(port(0).link_layer.as_deref(), Some("InfiniBand"));
    assert_eq!(port(1).rate_gbps, Some(200.0));
    assert_eq!(port(2).state, PortState::Down);
    assert_eq!(topo.nics[2].kind, NicKind::Roce);
    assert!(topo.nics[0].sources.iter().any(|s| s.as_str() == "sysfs"));
    let link = |nic: usize| topo.pci[topo.nics[nic].pci.unwrap()].link;
    assert_eq!((link(0).speed_gts, link(0).width), (Some(32.0), Some(16)));
    assert_eq!((link(2).speed_gts, link(2).width), (Some(16.0), Some(8)));
    assert!(cohort_topology::to_nccl_xml(&topo).contains(
        r#"busid="0000:42:00.0" class="0x020000" vendor="0x15b3" device="0x101d" link_speed="16.0 GT/s PCIe" link_width="8""#
    ));
    let findings: Vec<(String, String)> = topo
        .doctor()
        .into_iter()
        .map(|f| (f.subject, f.problem))
        .collect();
    assert_eq!(
        findings,
        [
            (
                "mlx5_1".to_owned(),
                "runs at 200 Gb/s while its siblings run at 400 Gb/s".to_owned()
            ),
            ("mlx5_2".to_owned(), "port 1 is down".to_owned()),
        ]
    );
    // The faster HCA stays GPU0's primary; the slower one is still a rail.
    let assignment = topo.assign_nics(None).unwrap();
    assert_eq!(names(&topo, &assignment[0].nics), ["mlx5_0", "mlx5_1"]);
}

#[test]
fn this_machine_is_discovered_without_error() {
    let topo = Topology::discover(&LiveOptions {
        sysfs_root: SysfsRoot::default(),
        nvml: true,
    })
    .unwrap();
    assert!(!topo.numa_nodes.is_empty());
    assert!(topo.numa_nodes.iter().all(|node| !node.cpus.is_empty()));
    assert_eq!(topo.sources[0].kind.as_str(), "hwloc-live");
    assert!(topo.sources.iter().any(|s| s.kind.as_str() == "nvml"));
    eprintln!(
        "this machine: {} NUMA node(s), {} GPU(s), {} RDMA NIC(s); sources: {:?}",
        topo.numa_nodes.len(),
        topo.gpus.len(),
        topo.nics.len(),
        topo.sources
    );
    // Whatever was found plans and serialises.
    let assignment = topo.assign_nics(None).unwrap();
    let json = topo.to_doc(&assignment).to_json_pretty();
    TopologyDoc::from_json(json.as_bytes()).unwrap();
}

#[test]
fn unknown_or_repeated_gpus_are_refused() {
    let topo = own_fixture("hgx-2s-8gpu-8nic.nccl.xml");
    let err = topo.assign_nics(Some(&[0, 8])).unwrap_err();
    assert_eq!(err, AssignError::UnknownGpu { index: 8, count: 8 });
    assert_eq!(
        err.to_string(),
        "GPU 8 does not exist (this node has GPUs 0-7)"
    );
    assert_eq!(
        topo.assign_nics(Some(&[2, 2])).unwrap_err(),
        AssignError::Duplicate(2)
    );
}

fn inline(xml: &str) -> Topology {
    Topology::from_xml_str(xml, "inline").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn nested_switches_are_pxb() {
    let topo = inline(
        r#"<system version="1"><cpu numaid="0" affinity="0000000f">
             <pci busid="0000:01:00.0" class="0x060400">
               <pci busid="0000:02:00.0" class="0x060400">
                 <pci busid="0000:03:00.0" class="0x030200"/>
               </pci>
               <pci busid="0000:04:00.0" class="0x060400">
                 <pci busid="0000:05:00.0" class="0x020700"/>
               </pci>
               <pci busid="0000:06:00.0" class="0x030200"/>
             </pci>
           </cpu></system>"#,
    );
    assert_eq!(
        topo.path_class(Device::Gpu(0), Device::Nic(0)),
        PathClass::Pxb
    );
    assert_eq!(
        topo.path_class(Device::Gpu(1), Device::Nic(0)),
        PathClass::Pxb
    );
    assert_eq!(
        topo.path_class(Device::Gpu(0), Device::Gpu(1)),
        PathClass::Pxb
    );
}

#[test]
fn equally_close_nics_are_ordered_by_rate_then_name() {
    let topo = inline(
        r#"<system version="1"><cpu numaid="0" affinity="0000000f">
             <pci busid="0000:01:00.0" class="0x060400">
               <pci busid="0000:02:00.0" class="0x030200"/>
               <pci busid="0000:03:00.0" class="0x020700"><nic><net name="mlx5_0" speed="200000" port="1"/></nic></pci>
               <pci busid="0000:04:00.0" class="0x020700"><nic><net name="mlx5_1" speed="400000" port="1"/></nic></pci>
             </pci>
           </cpu></system>"#,
    );
    let assignment = topo.assign_nics(None).unwrap();
    assert_eq!(names(&topo, &assignment[0].nics), ["mlx5_1", "mlx5_0"]);
}

#[test]
fn more_gpus_than_nics_share_them_evenly_and_uneven_sharing_is_reported() {
    let even = inline(
        r#"<system version="1"><cpu numaid="0" affinity="0000000f">
             <pci busid="0000:01:00.0" class="0x060400">
               <pci busid="0000:02:00.0" class="0x030200"/><pci busid="0000:03:00.0" class="0x030200"/>
               <pci busid="0000:04:00.0" class="0x030200"/><pci busid="0000:05:00.0" class="0x030200"/>
               <pci busid="0000:06:00.0" class="0x020700"/><pci busid="0000:07:00.0" class="0x020700"/>
             </pci>
           </cpu></system>"#,
    );
    let assignment = even.assign_nics(None).unwrap();
    let primaries: Vec<usize> = assignment.iter().map(|a| a.nics[0]).collect();
    assert_eq!(primaries, [0, 1, 0, 1]);
    assert!(even.doctor().is_empty());

    let uneven = inline(
        r#"<system version="1">
             <cpu numaid="0" affinity="0000000f">
               <pci busid="0000:02:00.0" class="0x030200"/><pci busid="0000:03:00.0" class="0x030200"/>
               <pci busid="0000:04:00.0" class="0x030200"/>
               <pci busid="0000:06:00.0" class="0x020700"/>
             </cpu>
             <cpu numaid="1" affinity="000000f0">
               <pci busid="0000:86:00.0" class="0x020700"/><pci busid="0000:87:00.0" class="0x020700"/>
             </cpu>
           </system>"#,
    );
    let problems: Vec<String> = uneven.doctor().into_iter().map(|f| f.problem).collect();
    assert_eq!(
        problems,
        ["NICs are shared unevenly: nic0 serves 3 GPU(s), nic1 serves 0"]
    );
}

#[test]
fn asymmetric_nvlinks_and_far_nics_are_reported() {
    let topo = inline(
        r#"<system version="1">
             <cpu numaid="0" affinity="0000000f">
               <pci busid="0000:02:00.0" class="0x030200"><gpu><nvlink target="0000:03:00.0" count="4"/></gpu></pci>
               <pci busid="0000:03:00.0" class="0x030200"><gpu><nvlink target="0000:02:00.0" count="4"/><nvlink target="0000:04:00.0" count="4"/></gpu></pci>
               <pci busid="0000:04:00.0" class="0x030200"><gpu><nvlink target="0000:03:00.0" count="4"/></gpu></pci>
             </cpu>
             <cpu numaid="1" affinity="000000f0">
               <pci busid="0000:86:00.0" class="0x020700"/>
             </cpu>
           </system>"#,
    );
    let findings: Vec<(String, String)> = topo
        .doctor()
        .into_iter()
        .map(|f| (f.subject, f.problem))
        .collect();
    assert!(findings.contains(&(
        "GPU0".into(),
        "has 4 NVLinks to GPUs and NVSwitches, others have 8".into()
    )));
    assert!(findings.contains(&(
        "GPU1".into(),
        "its closest RDMA NIC (nic0) is SYS away".into()
    )));
    assert_eq!(findings.len(), 5, "{findings:?}");
}

#[test]
fn a_cloud_vm_shows_efa_adapters_and_a_virtualised_pci_tree() {
    let topo = own_fixture("cloud-vm-8gpu-4efa.nccl.xml");
    assert_eq!((topo.gpus.len(), topo.nics.len()), (8, 4));
    // Amazon's vendor and device ids, not the Ethernet class, tell the adapter's kind.
    assert!(topo.nics.iter().all(|nic| nic.kind == NicKind::Efa));
    assert!(topo.pci_virtualised());
    // Every GPU sees every NIC of its socket alike: the hidden switches leave nothing closer.
    assert_eq!(gpu_nic_pairs_at(&topo, PathClass::Phb), 16);
    // NCCL reaches EFA through its own plugin, not verbs: no NCCL_IB_HCA.
    assert!(topo.hcas(&["rdmap20s0".to_owned()]).is_empty());
    expect_file!["snapshots/own-cloud-vm-8gpu-4efa.txt"].assert_eq(&render_all(&topo));
    round_trip_through_nccl(&topo);
}

#[test]
fn nccl_hcas_name_each_verbs_nic_with_its_active_port_and_switched_trees_are_not_virtual() {
    let hgx = own_fixture("hgx-2s-8gpu-8nic.nccl.xml");
    assert!(!hgx.pci_virtualised());
    assert_eq!(
        hgx.hcas(&["mlx5_0".to_owned(), "mlx5_1".to_owned(), "nope".to_owned()]),
        ["mlx5_0:1", "mlx5_1:1"]
    );
    // The rails node with its sysfs: mlx5_2 (RoCE) is down, still named (its only port).
    let mut rails = own_fixture("1s-2gpu-rails-roce.hwloc.xml");
    rails.apply_sysfs(&SysfsRoot(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/sysfs/rails-node"),
    ));
    assert_eq!(
        rails.hcas(&["mlx5_2".to_owned(), "mlx5_0".to_owned()]),
        ["mlx5_2:1", "mlx5_0:1"]
    );
    assert!(
        !rails.pci_virtualised(),
        "its GPUs are behind a switch and a root port"
    );
    // An address a NIC's interface holds names that interface; one it does not, none.
    let nic = rails.nics.iter_mut().find(|n| n.name == "mlx5_0").unwrap();
    let dev = nic
        .netdevs
        .first_mut()
        .expect("sysfs names mlx5_0's interface");
    dev.addresses = vec!["10.1.0.5".into()];
    let name = dev.name.clone();
    assert_eq!(rails.interface_with("10.1.0.5"), Some(name));
    assert_eq!(rails.interface_with("10.9.9.9"), None);
}
