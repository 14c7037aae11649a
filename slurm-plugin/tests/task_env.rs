//! The environment a task gets from a step plan.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use cohort_proto::daemon::StepPlan;
use cohort_proto::plan::{Plan, RankPlan, PLAN_FORMAT, PLAN_VERSION};
use spank_cohort::args::Bind;
use spank_cohort::env::task_env;

fn step() -> StepPlan {
    let rank = |rank: u32, host: &str, local_rank: u32| RankPlan {
        rank,
        host: host.into(),
        local_rank,
        gpu: Some(local_rank),
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
        },
        secret: "s".repeat(64),
        store: "10.0.0.1:40000".into(),
    }
}

#[test]
fn a_task_gets_its_rank_gpu_nic_and_the_torch_variables() {
    let env = task_env(&step(), "/tmp/p.json", 1, Bind::All).unwrap();
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
    let unbound = task_env(&step(), "/tmp/p.json", 1, Bind::None).unwrap();
    assert!(!unbound.iter().any(|(n, _)| n == "CUDA_VISIBLE_DEVICES"));
    assert!(task_env(&step(), "/tmp/p.json", 7, Bind::All).is_err());
}
