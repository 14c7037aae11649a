//! The environment a task gets from the step's plan.

use cohort_proto::daemon::StepPlan;

use crate::args::Bind;

/// `(name, value)` pairs for the task of global rank `rank`, or an error when the plan does
/// not have it: `cohort_proto::env::rank_env`, the same builder as `cohort run`'s.
pub fn task_env(
    step: &StepPlan,
    plan_path: &str,
    rank: u32,
    bind: Bind,
) -> Result<Vec<(String, String)>, String> {
    let launch = cohort_proto::env::Launch {
        plan_path,
        store: &step.store,
        secret: &step.secret,
        own_gpu: matches!(bind, Bind::All | Bind::Gpu),
    };
    Ok(cohort_proto::env::rank_env(&step.plan, rank, &launch)
        .map_err(|e| format!("the step's plan: {e}"))?
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect())
}

/// NCCL's hints for the task of global rank `rank` (`cohort_proto::env::nccl_env`): set only
/// where the task's environment has none.
pub fn nccl_hints(step: &StepPlan, rank: u32) -> Result<Vec<(&'static str, String)>, String> {
    cohort_proto::env::nccl_env(&step.plan, rank).map_err(|e| format!("the step's plan: {e}"))
}
