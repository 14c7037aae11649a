//! The environment a task gets from the step's plan.

use cohort_proto::daemon::StepPlan;

use crate::args::Bind;

/// `(name, value)` pairs for the task of global rank `rank`, or an error when the plan does
/// not have it.
pub fn task_env(
    step: &StepPlan,
    plan_path: &str,
    rank: u32,
    bind: Bind,
) -> Result<Vec<(String, String)>, String> {
    let ranks = &step.plan.ranks;
    let me = ranks
        .get(rank as usize)
        .ok_or_else(|| format!("rank {rank} is not in the step's plan"))?;
    let world = ranks.len().to_string();
    let local_world = ranks
        .iter()
        .filter(|r| r.host == me.host)
        .count()
        .to_string();
    let (store_host, store_port) = step
        .store
        .rsplit_once(':')
        .ok_or_else(|| format!("rendezvous address {:?} has no port", step.store))?;
    let master_port = store_port
        .parse::<u16>()
        .map_err(|_| format!("rendezvous address {:?} has a bad port", step.store))?
        .wrapping_add(1)
        .max(1024);
    let mut env = vec![
        ("COHORT_RANK", rank.to_string()),
        ("COHORT_WORLD_SIZE", world.clone()),
        ("COHORT_LOCAL_RANK", me.local_rank.to_string()),
        ("COHORT_LOCAL_WORLD_SIZE", local_world.clone()),
        ("COHORT_STORE", step.store.clone()),
        ("COHORT_SECRET", step.secret.clone()),
        ("COHORT_PLAN", plan_path.to_owned()),
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world),
        ("LOCAL_RANK", me.local_rank.to_string()),
        ("LOCAL_WORLD_SIZE", local_world),
        ("MASTER_ADDR", store_host.to_owned()),
        ("MASTER_PORT", master_port.to_string()),
    ];
    if let Some(nic) = me.nics.first() {
        env.push(("COHORT_NIC", nic.clone()));
    }
    if let (Some(gpu), Bind::All | Bind::Gpu) = (me.gpu, bind) {
        env.push(("CUDA_VISIBLE_DEVICES", gpu.to_string()));
    }
    if !me.cpus.is_empty() {
        env.push(("COHORT_CPUS", me.cpus.clone()));
    }
    Ok(env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}
