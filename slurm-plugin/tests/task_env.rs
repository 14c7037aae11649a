//! The environment a task gets from a step plan.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use cohort_proto::daemon::StepPlan;
use cohort_proto::plan::{Plan, RankPlan, PLAN_FORMAT, PLAN_VERSION};
use spank_cohort::args::Bind;
use spank_cohort::env::{granted, task_env, Granted};

fn step() -> StepPlan {
    let rank = |rank: u32, host: &str, local_rank: u32| RankPlan {
        rank,
        host: host.into(),
        local_rank,
        gpu: Some(local_rank),
        device_slot: Some(local_rank),
        nics: vec![format!("mlx5_{local_rank}")],
        address: "10.0.0.1".into(),
        cpus: "0-3".into(),
        ..RankPlan::default()
    };
    StepPlan {
        generation: 0,
        plan: Plan {
            format: PLAN_FORMAT.into(),
            version: PLAN_VERSION,
            ranks: vec![rank(0, "n1", 0), rank(1, "n1", 1), rank(2, "n2", 0)],
            rings: vec![vec![0, 1, 2]],
            world_size: None,
        },
        secret: "s".repeat(64),
        store: "10.0.0.1:40000".into(),
    }
}

fn lists(cuda: &str) -> Vec<(String, Vec<String>)> {
    vec![(
        "CUDA_VISIBLE_DEVICES".to_owned(),
        cuda.split(',').map(str::to_owned).collect(),
    )]
}

#[test]
fn a_task_gets_its_rank_gpu_nic_and_the_torch_variables() {
    let env = task_env(&step(), "/tmp/p.json", 1, Bind::All, &lists("0,1")).unwrap();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("COHORT_RANK"), Some("1"));
    assert_eq!(get("COHORT_WORLD_SIZE"), Some("3"));
    assert_eq!(get("COHORT_LOCAL_RANK"), Some("1"));
    assert_eq!(get("COHORT_LOCAL_WORLD_SIZE"), Some("2"));
    assert_eq!(get("COHORT_STORE"), Some("10.0.0.1:40000"));
    assert_eq!(get("COHORT_PLAN"), Some("/tmp/p.json"));
    assert_eq!(get("COHORT_NIC"), Some("mlx5_1"));
    assert_eq!(get("CUDA_VISIBLE_DEVICES"), Some("1"));
    assert_eq!(get("RANK"), Some("1"));
    assert_eq!(get("MASTER_ADDR"), Some("10.0.0.1"));
    assert_eq!(get("MASTER_PORT"), Some("40001"));
    let unbound = task_env(&step(), "/tmp/p.json", 1, Bind::None, &lists("0,1")).unwrap();
    assert!(!unbound.iter().any(|(n, _)| n == "CUDA_VISIBLE_DEVICES"));
    assert!(task_env(&step(), "/tmp/p.json", 7, Bind::All, &[]).is_err());
}

#[test]
fn device_lists_are_narrowed_in_the_form_slurm_gave_them() {
    // UUIDs and an AMD list beside them: each variable gets the task's own entry.
    let devices = vec![
        (
            "CUDA_VISIBLE_DEVICES".to_owned(),
            vec!["GPU-aaaa".to_owned(), "GPU-bbbb".to_owned()],
        ),
        (
            "ROCR_VISIBLE_DEVICES".to_owned(),
            vec!["4".to_owned(), "5".to_owned()],
        ),
    ];
    let env = task_env(&step(), "/p", 1, Bind::Gpu, &devices).unwrap();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("CUDA_VISIBLE_DEVICES"), Some("GPU-bbbb"));
    assert_eq!(get("ROCR_VISIBLE_DEVICES"), Some("5"));
    // On an AMD GPU, ROCR_VISIBLE_DEVICES narrows what the runtime sees; the other lists then
    // index among what it left.
    let mut amd = step();
    for rank in &mut amd.plan.ranks {
        rank.gpu_vendor = Some("amd".into());
    }
    let env = task_env(&amd, "/p", 1, Bind::All, &devices).unwrap();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("ROCR_VISIBLE_DEVICES"), Some("5"));
    assert_eq!(get("CUDA_VISIBLE_DEVICES"), Some("0"));
    // A list too short for the task's slot is left as Slurm set it.
    let short = task_env(&step(), "/p", 1, Bind::All, &lists("GPU-aaaa")).unwrap();
    assert!(!short.iter().any(|(n, _)| n == "CUDA_VISIBLE_DEVICES"));
}

#[test]
fn the_granted_gpus_come_from_indices_slurm_indices_or_names() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    assert_eq!(granted(env(&[])), Granted::default());
    // Plain indices.
    let g = granted(env(&[("CUDA_VISIBLE_DEVICES", "2,3")]));
    assert_eq!((g.gpus, g.ids), (vec![2, 3], Vec::<String>::new()));
    // Renumbered inside a device cgroup: Slurm's own indices name the GPUs; the list narrows.
    let g = granted(env(&[
        ("CUDA_VISIBLE_DEVICES", "0,1"),
        ("SLURM_STEP_GPUS", "2,3"),
    ]));
    assert_eq!(g.gpus, vec![2, 3]);
    assert_eq!(g.lists, lists("0,1"));
    // A MIG list with Slurm's indices beside it: Slurm's are MIG indices; the names decide.
    let g = granted(env(&[
        ("CUDA_VISIBLE_DEVICES", "MIG-GPU-aaaa/1/0"),
        ("SLURM_STEP_GPUS", "0"),
    ]));
    assert_eq!(g.ids, ["MIG-GPU-aaaa/1/0"]);
    // UUIDs and MIG instances: the daemon finds their GPUs.
    let g = granted(env(&[(
        "CUDA_VISIBLE_DEVICES",
        "GPU-aaaa,MIG-GPU-bbbb/1/0",
    )]));
    assert_eq!(g.gpus, Vec::<u32>::new());
    assert_eq!(g.ids, ["GPU-aaaa", "MIG-GPU-bbbb/1/0"]);
    // AMD: ROCR_VISIBLE_DEVICES alone.
    let g = granted(env(&[("ROCR_VISIBLE_DEVICES", "1")]));
    assert_eq!(g.gpus, vec![1]);
    assert_eq!(g.lists[0].0, "ROCR_VISIBLE_DEVICES");
    // Slurm's indices of another length than the list are not the list's.
    let g = granted(env(&[
        ("CUDA_VISIBLE_DEVICES", "GPU-aaaa"),
        ("SLURM_JOB_GPUS", "0,1"),
    ]));
    assert_eq!(g.ids, ["GPU-aaaa"]);
}
