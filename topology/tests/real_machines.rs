//! Real machines' topology files (third-party data in `../shared/fixtures/topologies`, beside
//! the checkout; see PROVENANCE.md there): snapshots of what `cohort topo` prints, and the
//! public facts about each machine. Skipped, with the reason printed, where the folder is absent.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

mod common;

use cohort_topology::model::NicKind;
use cohort_topology::{Device, PathClass, Topology};
use expect_test::expect_file;

use common::{gpu_nic_pairs_at, real_fixture, render_all, round_trip_through_nccl};

#[test]
fn juwels_booster_has_four_gpu_nic_pairs_at_pix() {
    let Some(topo) = real_fixture("juwels-booster_4xA100_4xHDR.hwloc.xml") else {
        return;
    };
    assert_eq!(topo.gpus.len(), 4);
    assert_eq!(topo.nics.len(), 4);
    assert_eq!(topo.numa_nodes.len(), 8);
    assert_eq!(gpu_nic_pairs_at(&topo, PathClass::Pix), 4);
    let assignment = topo.assign_nics(None).unwrap();
    let mut primaries: Vec<usize> = assignment.iter().map(|a| a.nics[0]).collect();
    assert!(assignment
        .iter()
        .all(|a| a.path == Some(PathClass::Pix) && a.nics.len() == 1));
    primaries.sort_unstable();
    primaries.dedup();
    assert_eq!(primaries.len(), 4, "every GPU has its own HCA");
    assert!(topo
        .nics
        .iter()
        .all(|nic| nic.kind.as_str() == "infiniband"));
    assert!(topo.doctor().is_empty(), "{:?}", topo.doctor());
    expect_file!["snapshots/juwels-booster.txt"].assert_eq(&render_all(&topo));
    round_trip_through_nccl(&topo);
}

#[test]
fn azure_ndv5_has_eight_gpu_nic_pairs_at_pix() {
    let Some(topo) = real_fixture("azure-ndv5_8xH100_8xNDR.nccl.xml") else {
        return;
    };
    assert_eq!(topo.gpus.len(), 8);
    assert_eq!(topo.nics.len(), 8);
    assert_eq!(gpu_nic_pairs_at(&topo, PathClass::Pix), 8);
    let assignment = topo.assign_nics(None).unwrap();
    assert!(assignment.iter().all(|a| a.path == Some(PathClass::Pix)));
    assert!(topo.doctor().is_empty(), "{:?}", topo.doctor());
    expect_file!["snapshots/azure-ndv5.txt"].assert_eq(&render_all(&topo));
    round_trip_through_nccl(&topo);
}

#[test]
fn dgx2_connects_every_gpu_pair_with_six_nvlinks() {
    let Some(topo) = real_fixture("dgx2_16xV100.hwloc.xml") else {
        return;
    };
    assert_eq!(topo.gpus.len(), 16);
    for a in 0..16 {
        for b in 0..16 {
            if a != b {
                assert_eq!(
                    topo.path_class(Device::Gpu(a), Device::Gpu(b)),
                    PathClass::NvLink(6),
                    "GPU{a} - GPU{b}"
                );
            }
        }
    }
    assert!(topo.nics.is_empty(), "the file has its NICs trimmed");
    assert_eq!(
        topo.gpus[0].model.as_deref(),
        Some("Tesla V100-SXM3-32GB-H")
    );
    assert!(topo.doctor().is_empty(), "{:?}", topo.doctor());
    expect_file!["snapshots/dgx2.txt"].assert_eq(&render_all(&topo));
    round_trip_through_nccl(&topo);
}

#[test]
fn power8_pairs_gpus_by_nvlink_within_a_socket() {
    let Some(topo) = real_fixture("power8_4xP100.hwloc.xml") else {
        return;
    };
    assert_eq!(topo.gpus.len(), 4);
    let class = |a, b| topo.path_class(Device::Gpu(a), Device::Gpu(b));
    assert_eq!(class(0, 1), PathClass::NvLink(2));
    assert_eq!(class(2, 3), PathClass::NvLink(2));
    assert_eq!(class(0, 2), PathClass::Sys);
    assert_eq!(class(1, 3), PathClass::Sys);
    expect_file!["snapshots/power8.txt"].assert_eq(&render_all(&topo));
    round_trip_through_nccl(&topo);
}

#[test]
fn supermicro_x9_has_three_nvidia_gpus_and_one_hca() {
    let Some(topo) = real_fixture("supermicro-x9_2s_3gpu_1ib.hwloc.xml") else {
        return;
    };
    // The Radeon and the BMC's Matrox are graphics functions, not training GPUs.
    assert_eq!(topo.gpus.len(), 3);
    assert!(topo.gpus.iter().all(|gpu| gpu.vendor.as_str() == "nvidia"));
    assert_eq!(topo.nics.len(), 1);
    assert_eq!(topo.nics[0].name, "mlx5_0");
    assert_eq!(topo.nics[0].netdevs[0].name, "ib0");
    assert_eq!(topo.plain_netdevs, ["eth0", "eth1"]);
    let findings = topo.doctor();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].subject, "GPU0");
    assert!(findings[0].problem.contains("SYS"), "{findings:?}");
    expect_file!["snapshots/supermicro-x9.txt"].assert_eq(&render_all(&topo));
    round_trip_through_nccl(&topo);
}

#[test]
fn every_real_machine_loads_within_a_sane_model() {
    let Some(dir) = common::real_fixture_dir() else {
        return;
    };
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("xml") {
            continue;
        }
        let topo = Topology::from_file(&path).unwrap();
        // Every device's parent precedes it, so walks up the tree terminate.
        for (idx, node) in topo.pci.iter().enumerate() {
            assert!(
                node.parent.is_none_or(|parent| parent < idx),
                "{}",
                path.display()
            );
        }
        let json = topo
            .to_doc(&topo.assign_nics(None).unwrap())
            .to_json_pretty();
        let back = cohort_proto::topology::TopologyDoc::from_json(json.as_bytes()).unwrap();
        assert_eq!(back.gpus.len(), topo.gpus.len());
    }
}

/// NCCL's hints on every real machine: each GPU's `NCCL_IB_HCA` entries are its assigned NICs
/// that NCCL drives over verbs, with a port each, and no bare-metal machine (its GPUs behind
/// root ports or switches) is taken for a virtualised one.
#[test]
fn every_real_machine_gives_each_gpu_its_hcas_and_none_looks_virtualised() {
    let expected = [
        ("juwels-booster_4xA100_4xHDR.hwloc.xml", 4, false),
        ("azure-ndv5_8xH100_8xNDR.nccl.xml", 8, false),
        // DGX-2's file has no RDMA devices (hwloc ran without the verbs stack).
        ("dgx2_16xV100.hwloc.xml", 0, false),
        ("power8_4xP100.hwloc.xml", 0, false),
        ("supermicro-x9_2s_3gpu_1ib.hwloc.xml", 3, false),
    ];
    for (file, gpus_with_hcas, virtualised) in expected {
        let Some(topo) = real_fixture(file) else {
            return;
        };
        assert_eq!(topo.pci_virtualised(), virtualised, "{file}");
        let plan = topo
            .local_plan(&cohort_topology::LocalPlanOptions {
                n_ranks: u32::try_from(topo.gpus.len()).unwrap(),
                gpus: None,
                host: "h".into(),
                address: "10.0.0.1".into(),
            })
            .unwrap();
        let mut with = 0;
        for rank in &plan.ranks {
            let verbs: Vec<&String> = rank
                .nics
                .iter()
                .filter(|name| {
                    topo.nics.iter().any(|nic| {
                        nic.name == **name
                            && matches!(nic.kind, NicKind::InfiniBand | NicKind::Roce)
                    })
                })
                .collect();
            assert_eq!(rank.hcas.len(), verbs.len(), "{file}: {rank:?}");
            for (hca, nic) in rank.hcas.iter().zip(verbs) {
                let (name, port) = hca.split_once(':').unwrap();
                assert_eq!(name, nic, "{file}");
                assert!(port.parse::<u32>().is_ok_and(|p| p >= 1), "{file}: {hca}");
            }
            with += usize::from(!rank.hcas.is_empty());
        }
        assert_eq!(with, gpus_with_hcas, "{file}: {:?}", plan.ranks);
    }
}

#[test]
fn dgx2_gpus_carry_their_uuids_and_are_found_by_them() {
    let Some(topo) = real_fixture("dgx2_16xV100.hwloc.xml") else {
        return;
    };
    assert!(topo
        .gpus
        .iter()
        .all(|gpu| gpu.uuid.as_deref().is_some_and(|u| u.starts_with("GPU-"))));
    for gpu in &topo.gpus {
        let uuid = gpu.uuid.clone().unwrap();
        assert_eq!(topo.gpu_named(&uuid), Ok(gpu.index));
        // CUDA accepts a prefix that names one GPU alone; an old-style MIG name, its GPU's.
        assert_eq!(topo.gpu_named(&uuid[..20]), Ok(gpu.index));
        assert_eq!(topo.gpu_named(&format!("MIG-{uuid}/1/0")), Ok(gpu.index));
    }
    assert!(topo
        .gpu_named("GPU-")
        .unwrap_err()
        .contains("names 16 GPUs"));
    assert!(topo
        .gpu_named("GPU-00000000")
        .unwrap_err()
        .contains("none of this node's GPUs"));
    assert_eq!(topo.gpu_named("15"), Ok(15));
    assert!(topo.gpu_named("16").unwrap_err().contains("no GPU 16"));
    assert!(topo.gpu_named("nvidia0").unwrap_err().contains("neither"));
}
