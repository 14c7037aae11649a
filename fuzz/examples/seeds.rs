//! Writes the seed corpora under `corpus/<target>/` from real messages and files: the
//! requests the SPANK plugin and the CLI send, the peer messages of a gang start, a trial
//! recorded by the catalog's tracker with its index, and the example experiment files.
//!
//! `cargo run --example seeds` (from `fuzz/`); existing seeds of the same name are replaced,
//! others are left alone.

use std::path::{Path, PathBuf};

use cohort_catalog::fuzzing::{Fixture, Slot, METRIC};
use cohort_catalog::index::IndexWrite;
use cohort_catalog::LoadOptions;
use cohort_proto::catalog::{GcRecord, StateRecord, CATALOG_VERSION};
use cohort_proto::daemon::{JoinRequest, Request, StepPlan, TaskExit, API_VERSION};
use cohort_proto::peer::{PeerMsg, Summary};
use cohort_proto::plan::{Plan, RankPlan, PLAN_FORMAT, PLAN_VERSION};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn frame<T: serde::Serialize>(message: &T) -> Vec<u8> {
    let mut out = Vec::new();
    cohort_proto::frame::write_frame(&mut out, message).unwrap();
    out
}

fn frames(requests: &[Request]) -> Vec<u8> {
    requests.iter().flat_map(frame).collect()
}

fn hello() -> Request {
    Request::Hello {
        api_version: API_VERSION,
        client: "spank_cohort 0.1.0".into(),
    }
}

fn join(nodes: &[&str], node_index: u32, ranks: &[u32], world_size: u32) -> Request {
    Request::Join(JoinRequest {
        job_id: 42,
        step_id: 0,
        attempt: 0,
        nodes: nodes.iter().map(|&n| n.to_owned()).collect(),
        node_index,
        ranks: ranks.to_vec(),
        world_size,
        gpus: ranks.iter().map(|r| r % 2).collect(),
        gpu_ids: Vec::new(),
        topology_addr: Some(format!("s1.{}", nodes[node_index as usize])),
        timeout_ms: 2000,
        store_port: None,
        uid: 1000,
    })
}

fn daemon_api() {
    let dir = corpus("daemon_api");
    let exit = |status| {
        Request::TaskExit(TaskExit {
            job_id: 42,
            step_id: 0,
            attempt: 0,
            rank: 1,
            status,
            uid: 1000,
        })
    };
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("hello", frames(&[hello()])),
        (
            "hello-status-topology",
            frames(&[hello(), Request::GetStatus, Request::GetTopology]),
        ),
        (
            "join-one-node",
            frames(&[hello(), join(&["n0"], 0, &[0, 1], 2), Request::GetStatus]),
        ),
        (
            "join-leader-of-two",
            frames(&[hello(), join(&["n0", "n1"], 0, &[0, 1], 4)]),
        ),
        (
            "join-follower",
            frames(&[hello(), join(&["n0", "n1"], 1, &[2, 3], 4)]),
        ),
        (
            "join-then-task-exits",
            frames(&[
                hello(),
                join(&["n0"], 0, &[0, 1], 2),
                exit(0),
                exit(256),
                Request::GetStatus,
            ]),
        ),
        ("exit-of-unknown-step", frames(&[hello(), exit(9)])),
        (
            "version-mismatch",
            frames(&[Request::Hello {
                api_version: API_VERSION + 1,
                client: "cohort 9.0.0".into(),
            }]),
        ),
        ("status-without-hello", frames(&[Request::GetStatus])),
        ("hello-twice", frames(&[hello(), hello()])),
        (
            "malformed",
            [frames(&[hello()]), b"\x01\x00\x00\x00{".to_vec()].concat(),
        ),
        ("huge-frame", b"\xff\xff\xff\x7f{}".to_vec()),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn rank(rank: u32, host: &str, gpu: u32) -> RankPlan {
    RankPlan {
        rank,
        host: host.into(),
        local_rank: gpu,
        gpu: Some(gpu),
        nics: vec![format!("mlx5_{gpu}")],
        address: format!("10.0.0.{}", rank + 1),
        cpus: format!("{}-{}", gpu * 8, gpu * 8 + 7),
        ..RankPlan::default()
    }
}

fn peer_msg() {
    let dir = corpus("peer_msg");
    let summary = PeerMsg::Summary(Summary {
        job_id: 42,
        step_id: 0,
        attempt: 0,
        node: "n1".into(),
        node_index: 1,
        ranks: vec![rank(2, "n1", 0), rank(3, "n1", 1)],
        topology_addr: Some("s1.n1".into()),
        store_port: None,
        timeout_ms: 2000,
    });
    let plan = PeerMsg::Plan(Box::new(StepPlan {
        generation: 0,
        plan: Plan {
            format: PLAN_FORMAT.into(),
            version: PLAN_VERSION,
            ranks: vec![
                rank(0, "n0", 0),
                rank(1, "n0", 1),
                rank(2, "n1", 0),
                rank(3, "n1", 1),
            ],
            rings: vec![vec![0, 1, 2, 3], vec![1, 0, 3, 2]],
            world_size: None,
        },
        secret: "00".repeat(32),
        store: "10.0.0.1:29500".into(),
    }));
    let failed = PeerMsg::TaskFailed {
        job_id: 42,
        step_id: 0,
        attempt: 0,
        rank: 3,
        node: "n1".into(),
        status: 256,
    };
    let abort = PeerMsg::Abort {
        job_id: 42,
        step_id: 0,
        reason: "nodes missing at the deadline (2.0 s): n1".into(),
    };
    let all = [&summary, &plan, &failed, &abort];
    for (name, message) in ["summary", "plan", "task-failed", "abort"].iter().zip(all) {
        std::fs::write(
            dir.join(format!("{name}.json")),
            serde_json::to_vec(message).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("frames"),
        all.iter().flat_map(frame).collect::<Vec<u8>>(),
    )
    .unwrap();
}

fn catalog_readers() {
    let dir = corpus("catalog_readers");
    let fixture = Fixture::new().unwrap();
    // Records name the program that wrote them and the fixture's temporary directory: the
    // seeds carry neutral ones, so they do not depend on where they were made.
    let exe = std::env::current_exe().unwrap().display().to_string();
    let temp = format!(
        "{}/cohort-fuzz-{}-",
        std::env::temp_dir().display(),
        std::process::id()
    );
    let seed = |name: &str, slot: Slot, bytes: &[u8]| {
        let mut data = vec![slot.byte()];
        match slot {
            Slot::Trial | Slot::Records => {
                let text = String::from_utf8_lossy(bytes)
                    .replace(&exe, "/usr/local/bin/train")
                    .replace(&temp, "/shared/run-");
                data.extend_from_slice(text.as_bytes());
            }
            _ => data.extend_from_slice(bytes),
        }
        std::fs::write(dir.join(name), data).unwrap();
    };
    let segment = fixture.file(fixture.segment_name()).unwrap();
    seed("segment", Slot::Segment, segment);
    seed("segment-repaired", Slot::SegmentRepaired, segment);
    seed("state", Slot::State, fixture.file("state.json").unwrap());
    seed("trial", Slot::Trial, fixture.file("trial.json").unwrap());
    let state: StateRecord = serde_json::from_slice(fixture.file("state.json").unwrap()).unwrap();
    let gc = GcRecord {
        format: "cohort.ckpt-gc".into(),
        version: CATALOG_VERSION,
        deleted: vec!["/scratch/ckpt-0005".into()],
        at: 1.7e9,
        writer: state.writer.clone(),
    };
    seed("gc", Slot::Gc, &serde_json::to_vec_pretty(&gc).unwrap());
    let loaded = cohort_catalog::load(
        &fixture.catalog,
        &fixture.experiment,
        LoadOptions {
            use_index: true,
            write: IndexWrite::Always,
        },
    )
    .unwrap();
    assert!(loaded.stats.index_written);
    let index = std::fs::read(fixture.index_path()).unwrap();
    seed("index", Slot::Index, &index);
    // A history cache as `catalog/src/history_cache.rs` lays it out, built from no segments.
    let mut points = Vec::new();
    for step in 0..4i64 {
        points.extend_from_slice(&step.to_le_bytes());
        points.extend_from_slice(&(1.0 / (step as f64 + 1.0)).to_le_bytes());
        points.extend_from_slice(&(1.7e9 + step as f64).to_le_bytes());
    }
    let mut header = 0u32.to_le_bytes().to_vec();
    header.extend_from_slice(&(METRIC.len() as u16).to_le_bytes());
    header.extend_from_slice(METRIC.as_bytes());
    header.extend_from_slice(&4u64.to_le_bytes());
    header.extend_from_slice(&crc32c::crc32c(&points).to_le_bytes());
    let mut cache = b"COHHST01".to_vec();
    cache.extend_from_slice(&(header.len() as u32).to_le_bytes());
    cache.extend_from_slice(&header);
    cache.extend_from_slice(&crc32c::crc32c(&header).to_le_bytes());
    cache.extend_from_slice(&points);
    seed("history-cache", Slot::HistoryCache, &cache);
    let experiment = std::fs::read(fixture.experiment.dir.join("experiment.json")).unwrap();
    seed("record-experiment", Slot::Records, &experiment);
    let summary = serde_json::to_vec(&loaded.trials[0]).unwrap();
    seed("record-summary", Slot::Records, &summary);
    let packed = rmp_serde::to_vec_named(&loaded.trials).unwrap();
    seed("record-summaries-msgpack", Slot::Records, &packed);
}

fn experiment_file() {
    let dir = corpus("experiment_file");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/search");
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let others = [
        (
            "grid.toml",
            r#"name = "grid"
command = ["train", "--fast"]

[searcher]
name = "grid"
metric = "val_loss"
max_length = 10

[hyperparameters]
lr = { type = "log", base = 10.0, minval = -4.0, maxval = -1.0, count = 4 }
layers = { type = "int", minval = 1, maxval = 4, count = 4 }
act = { type = "categorical", vals = ["relu", "gelu"] }
"#,
        ),
        (
            "random-nested.toml",
            r#"name = "random"
description = "groups of hyperparameters"
sbatch = "train.sbatch"

[resources]
nodes = 2
gpus_per_node = 4

[searcher]
name = "random"
metric = "acc"
smaller_is_better = false
max_trials = 8
max_concurrent_trials = 2
max_length = 100
max_restarts = 0
seed = -3

[hyperparameters.optimizer]
lr = { type = "double", minval = 0.0001, maxval = 0.1 }
momentum = { type = "const", val = 0.9 }

[hyperparameters.model]
width = { type = "int", minval = 16, maxval = 512 }
"#,
        ),
        (
            "single.toml",
            r#"name = "single"
command = ["true"]

[searcher]
name = "single"
metric = "loss"
max_length = 1

[hyperparameters]
x = { type = "double", minval = -1.0, maxval = 1.0 }
"#,
        ),
        (
            "asha-conservative.toml",
            r#"name = "asha"
command = ["train"]

[searcher]
name = "asha"
metric = "loss"
max_trials = 40
max_length = 81
divisor = 3
max_rungs = 5
mode = "conservative"

[hyperparameters]
lr = { type = "log", base = 2.0, minval = -10.0, maxval = -1.0 }
"#,
        ),
    ];
    for (name, text) in others {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn main() {
    daemon_api();
    peer_msg();
    catalog_readers();
    experiment_file();
    println!("seeds written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
}
