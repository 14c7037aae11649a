//! The environment a task gets from the step's plan.

use cohort_proto::daemon::StepPlan;

use crate::args::Bind;

/// The variables that list the GPUs a step may use, in the order a GPU's name is looked for:
/// NVIDIA's, then AMD's (ROCm's runtime, then HIP's).
pub const DEVICE_VARS: [&str; 3] = [
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
];

/// What a step was granted on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Granted {
    /// The GPUs' indices, in the order of the device list (empty when `ids` names them).
    pub gpus: Vec<u32>,
    /// The device list's names, when they are not indices and Slurm gave no indices beside
    /// them (UUIDs, MIG instances): the daemon finds their GPUs.
    pub ids: Vec<String>,
    /// Every device variable the step has, with its entries, to narrow for each task.
    pub lists: Vec<(String, Vec<String>)>,
}

/// Reads the step's GPUs from its environment (`get`): the device variables, and Slurm's
/// GPU indices (`SLURM_STEP_GPUS`, else `SLURM_JOB_GPUS`), which name the GPUs when the list
/// holds UUIDs or indices renumbered inside a device cgroup.
pub fn granted(get: impl Fn(&str) -> Option<String>) -> Granted {
    let lists: Vec<(String, Vec<String>)> = DEVICE_VARS
        .iter()
        .filter_map(|&var| {
            let entries: Vec<String> = get(var)?
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect();
            (!entries.is_empty()).then(|| (var.to_owned(), entries))
        })
        .collect();
    let indices = |text: &str| -> Option<Vec<u32>> {
        text.split(',')
            .filter(|e| !e.trim().is_empty())
            .map(|e| e.trim().parse::<u32>().ok())
            .collect()
    };
    let slurm = get("SLURM_STEP_GPUS")
        .or_else(|| get("SLURM_JOB_GPUS"))
        .and_then(|text| indices(&text));
    let Some((_, names)) = lists.first() else {
        return Granted {
            gpus: slurm.unwrap_or_default(),
            ids: Vec::new(),
            lists,
        };
    };
    // Slurm's indices of MIG instances are its own, not the GPUs': a MIG list is resolved by
    // its names.
    let mig = names.iter().any(|name| name.starts_with("MIG-"));
    if let Some(gpus) = slurm.filter(|gpus| gpus.len() == names.len() && !mig) {
        return Granted {
            gpus,
            ids: Vec::new(),
            lists,
        };
    }
    match indices(&names.join(",")) {
        Some(gpus) => Granted {
            gpus,
            ids: Vec::new(),
            lists,
        },
        None => Granted {
            gpus: Vec::new(),
            ids: names.clone(),
            lists,
        },
    }
}

/// The device variables narrowed to the task's own GPU: each list's entry at the rank's
/// slot, in the form the list gave it; a list shorter than the slot is left as it is. On an AMD
/// GPU, `ROCR_VISIBLE_DEVICES` narrows what the runtime sees, and `HIP_VISIBLE_DEVICES` and
/// `CUDA_VISIBLE_DEVICES` then index the devices it left: the task's one GPU is their `0`.
pub fn narrowed(
    lists: &[(String, Vec<String>)],
    slot: Option<u32>,
    amd: bool,
) -> Vec<(String, String)> {
    let Some(slot) = slot else {
        return Vec::new();
    };
    let rocr = amd && lists.iter().any(|(var, _)| var == "ROCR_VISIBLE_DEVICES");
    lists
        .iter()
        .filter_map(|(var, entries)| {
            let entry = entries.get(slot as usize)?;
            if rocr && var != "ROCR_VISIBLE_DEVICES" {
                Some((var.clone(), "0".to_owned()))
            } else {
                Some((var.clone(), entry.clone()))
            }
        })
        .collect()
}

/// `(name, value)` pairs for the task of global rank `rank`, or an error when the plan does
/// not have it: `cohort_proto::env::rank_env`, the same builder as `cohort run`'s, and, unless
/// `bind` is `none`, the step's device variables (`devices`, from [`granted`]) narrowed to the
/// task's own GPU.
pub fn task_env(
    step: &StepPlan,
    plan_path: &str,
    rank: u32,
    bind: Bind,
    devices: &[(String, Vec<String>)],
) -> Result<Vec<(String, String)>, String> {
    let launch = cohort_proto::env::Launch {
        plan_path,
        store: &step.store,
        secret: &step.secret,
        // The device variables are narrowed from the step's own lists, below.
        own_gpu: false,
    };
    let mut env: Vec<(String, String)> = cohort_proto::env::rank_env(&step.plan, rank, &launch)
        .map_err(|e| format!("the step's plan: {e}"))?
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    if matches!(bind, Bind::All | Bind::Gpu) {
        let me = step
            .plan
            .rank(rank)
            .ok_or_else(|| format!("rank {rank} is not in this node's plan"))?;
        env.extend(narrowed(
            devices,
            me.device_slot,
            me.gpu_vendor.as_deref() == Some("amd"),
        ));
    }
    Ok(env)
}

/// NCCL's hints for the task of global rank `rank` (`cohort_proto::env::nccl_env`): set only
/// where the task's environment has none.
pub fn nccl_hints(step: &StepPlan, rank: u32) -> Result<Vec<(&'static str, String)>, String> {
    cohort_proto::env::nccl_env(&step.plan, rank).map_err(|e| format!("the step's plan: {e}"))
}
