//! GPU accounting: the GPUs of the steps running on this node, sampled every few seconds
//! (through a `cohort_topology::gpu_sample::GpuSampler`: NVML, or a script on machines without
//! GPUs), aggregated per step and GPU for `cohort status`, with flags a sysadmin acts on: a GPU
//! allocated but idle for longer than the threshold, and new uncorrected ECC or Xid errors.
//! The aggregation is pure (samples and times in, lines and flags out); `app.rs` runs the
//! sampling loop.

use std::collections::{BTreeMap, BTreeSet};

use cohort_topology::gpu_sample::GpuSample;

use crate::config::Accounting;
use crate::gang::StepKey;

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What one GPU of one step has shown so far.
#[derive(Debug, Clone, Default, PartialEq)]
struct GpuAccount {
    bus_id: String,
    samples: u64,
    util_sum: u64,
    last: Option<GpuSample>,
    memory_max: u64,
    power_sum_mw: u64,
    power_samples: u64,
    temperature_max: Option<u32>,
    throttle: BTreeSet<String>,
    ecc_first: Option<u64>,
    /// The last uncorrected ECC count read (a sample without one leaves it).
    ecc_last: Option<u64>,
    xids: Vec<u64>,
    /// Since when (seconds) it has been below the idle threshold, while it is.
    idle_since: Option<u64>,
    /// Whether the current idle stretch was flagged.
    idle_flagged: bool,
    /// The last sample's error, if it failed.
    error: Option<String>,
}

/// A step's GPUs on this node.
#[derive(Debug, Clone, Default)]
struct StepAccount {
    uid: u32,
    gpus: BTreeMap<u32, GpuAccount>,
}

/// Something to tell a sysadmin, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flag {
    /// A GPU allocated to the step has been idle this long.
    Idle {
        key: StepKey,
        gpu: u32,
        seconds: u64,
    },
    /// New uncorrected ECC errors.
    Ecc { key: StepKey, gpu: u32, new: u64 },
    /// An Xid error.
    Xid { key: StepKey, gpu: u32, xid: u64 },
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = |(job, step, attempt): &StepKey| format!("{job}.{step} attempt {attempt}");
        match self {
            Flag::Idle { key, gpu, seconds } => write!(
                f,
                "step {}: GPU {gpu} allocated but idle for {seconds} s",
                step(key)
            ),
            Flag::Ecc { key, gpu, new } => write!(
                f,
                "step {}: GPU {gpu} has {new} new uncorrected ECC error(s)",
                step(key)
            ),
            Flag::Xid { key, gpu, xid } => {
                write!(f, "step {}: GPU {gpu} reported Xid {xid}", step(key))
            }
        }
    }
}

/// Every running step's GPU accounts.
#[derive(Debug, Clone)]
pub(crate) struct Accounts {
    settings: Accounting,
    steps: BTreeMap<StepKey, StepAccount>,
}

impl Accounts {
    pub(crate) fn new(settings: Accounting) -> Accounts {
        Accounts {
            settings,
            steps: BTreeMap::new(),
        }
    }

    /// Forgets steps no longer running (`running` lists those that are).
    pub(crate) fn retain(&mut self, running: &[StepKey]) {
        self.steps.retain(|key, _| running.contains(key));
    }

    /// Adds one sample (or the error that stood for it) of GPU `gpu` (at `bus_id`) of step
    /// `key`, taken at `now` (seconds); returns what is newly worth flagging.
    pub(crate) fn record(
        &mut self,
        key: StepKey,
        uid: u32,
        gpu: u32,
        bus_id: &str,
        sample: Result<GpuSample, String>,
        now: u64,
    ) -> Vec<Flag> {
        let step = self.steps.entry(key).or_default();
        step.uid = uid;
        let account = step.gpus.entry(gpu).or_insert_with(|| GpuAccount {
            bus_id: bus_id.to_owned(),
            ..GpuAccount::default()
        });
        let sample = match sample {
            Ok(sample) => sample,
            Err(e) => {
                account.error = Some(e);
                return Vec::new();
            }
        };
        let mut flags = Vec::new();
        account.error = None;
        account.samples += 1;
        account.util_sum += u64::from(sample.util);
        account.memory_max = account.memory_max.max(sample.memory_used);
        if let Some(mw) = sample.power_mw {
            account.power_sum_mw += u64::from(mw);
            account.power_samples += 1;
        }
        account.temperature_max = account.temperature_max.max(sample.temperature_c);
        account.throttle.extend(sample.throttle.iter().cloned());
        if let Some(ecc) = sample.ecc_uncorrected {
            let before = account
                .ecc_last
                .unwrap_or(*account.ecc_first.get_or_insert(ecc));
            account.ecc_last = Some(ecc);
            if ecc > before {
                flags.push(Flag::Ecc {
                    key,
                    gpu,
                    new: ecc - before,
                });
            }
        }
        for &xid in &sample.xids {
            account.xids.push(xid);
            flags.push(Flag::Xid { key, gpu, xid });
        }
        if sample.util < self.settings.idle_below {
            let since = *account.idle_since.get_or_insert(now);
            let idle = now.saturating_sub(since);
            if idle >= self.settings.idle_after && !account.idle_flagged {
                account.idle_flagged = true;
                flags.push(Flag::Idle {
                    key,
                    gpu,
                    seconds: idle,
                });
            }
        } else {
            account.idle_since = None;
            account.idle_flagged = false;
        }
        account.last = Some(sample);
        flags
    }

    /// One line per GPU of each step `uid` may see (`None`: every step), for `cohort status`.
    pub(crate) fn lines(&self, uid: Option<u32>, now: u64) -> Vec<String> {
        let mut lines = Vec::new();
        for ((job, step, attempt), account) in &self.steps {
            if uid.is_some_and(|uid| uid != account.uid) {
                continue;
            }
            for (gpu, a) in &account.gpus {
                let mut words = vec![format!(
                    "{job}.{step} attempt {attempt} GPU {gpu} ({})",
                    a.bus_id
                )];
                if let Some(last) = &a.last {
                    #[allow(clippy::cast_precision_loss)]
                    let mean = a.util_sum as f64 / a.samples.max(1) as f64;
                    let gib = |bytes: u64| {
                        #[allow(clippy::cast_precision_loss)]
                        let g = bytes as f64 / f64::from(1u32 << 30);
                        g
                    };
                    words.push(format!(
                        "util {}% now, {mean:.0}% mean of {} sample(s)",
                        last.util, a.samples
                    ));
                    words.push(format!(
                        "memory {:.1} of {:.1} GiB (peak {:.1})",
                        gib(last.memory_used),
                        gib(last.memory_total),
                        gib(a.memory_max)
                    ));
                    if a.power_samples > 0 {
                        words.push(format!(
                            "{:.0} W mean",
                            a.power_sum_mw as f64 / a.power_samples as f64 / 1000.0
                        ));
                    }
                    if let Some(t) = a.temperature_max {
                        words.push(format!("{t} C peak"));
                    }
                    if !a.throttle.is_empty() {
                        let reasons: Vec<&str> = a.throttle.iter().map(String::as_str).collect();
                        words.push(format!("throttled: {}", reasons.join(",")));
                    }
                }
                if let Some(since) = a.idle_since {
                    let idle = now.saturating_sub(since);
                    if idle >= self.settings.idle_after {
                        words.push(format!("IDLE for {idle} s"));
                    }
                }
                let ecc = a
                    .ecc_last
                    .zip(a.ecc_first)
                    .map_or(0, |(last, first)| last.saturating_sub(first));
                if ecc > 0 {
                    words.push(format!("ECC ERRORS +{ecc}"));
                }
                if !a.xids.is_empty() {
                    let xids: Vec<String> = a.xids.iter().map(u64::to_string).collect();
                    words.push(format!("XID {}", xids.join(",")));
                }
                if let Some(e) = &a.error {
                    words.push(format!("cannot sample: {e}"));
                }
                lines.push(words.join("; "));
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Accounting {
        Accounting {
            interval: 5,
            idle_below: 5,
            idle_after: 60,
            scripted_gpus: None,
        }
    }

    fn sample(util: u32) -> GpuSample {
        GpuSample {
            util,
            memory_used: 10 << 30,
            memory_total: 80 << 30,
            power_mw: Some(300_000),
            temperature_c: Some(60),
            ..GpuSample::default()
        }
    }

    const KEY: StepKey = (12, 0, 0);

    #[test]
    fn a_gpu_idle_past_the_threshold_is_flagged_once_per_idle_stretch() {
        let mut accounts = Accounts::new(settings());
        let mut flags = Vec::new();
        for t in (0..=120).step_by(5) {
            let util = if (30..50).contains(&t) { 95 } else { 0 };
            flags.extend(accounts.record(KEY, 1000, 0, "0000:17:00.0", Ok(sample(util)), t));
        }
        // Idle from 0 to 30 (30 s: not yet), busy to 50, idle from 50: flagged at 110.
        assert_eq!(
            flags,
            vec![Flag::Idle {
                key: KEY,
                gpu: 0,
                seconds: 60
            }]
        );
        let lines = accounts.lines(None, 120);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("12.0 attempt 0 GPU 0 (0000:17:00.0); util 0% now"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("IDLE for 70 s"), "{}", lines[0]);
        assert!(lines[0].contains("memory 10.0 of 80.0 GiB (peak 10.0); 300 W mean; 60 C peak"));
        assert_eq!(
            flags[0].to_string(),
            "step 12.0 attempt 0: GPU 0 allocated but idle for 60 s"
        );
    }

    #[test]
    fn new_ecc_and_xid_errors_are_flagged_and_shown_and_other_users_see_nothing() {
        let mut accounts = Accounts::new(settings());
        let with = |ecc: u64, xids: Vec<u64>| GpuSample {
            ecc_uncorrected: Some(ecc),
            xids,
            throttle: vec!["hw_thermal_slowdown".into()],
            ..sample(90)
        };
        // Errors from before the step are not its own.
        assert!(accounts
            .record(KEY, 1000, 3, "b", Ok(with(4, vec![])), 0)
            .is_empty());
        let flags = accounts.record(KEY, 1000, 3, "b", Ok(with(6, vec![79])), 5);
        assert_eq!(
            flags,
            vec![
                Flag::Ecc {
                    key: KEY,
                    gpu: 3,
                    new: 2
                },
                Flag::Xid {
                    key: KEY,
                    gpu: 3,
                    xid: 79
                }
            ]
        );
        // A sample without the count (NVML failing for a moment) does not count them again.
        let without = GpuSample {
            ecc_uncorrected: None,
            ..with(6, vec![])
        };
        assert!(accounts
            .record(KEY, 1000, 3, "b", Ok(without), 6)
            .is_empty());
        assert!(accounts
            .record(KEY, 1000, 3, "b", Ok(with(6, vec![])), 7)
            .is_empty());
        let line = &accounts.lines(Some(1000), 10)[0];
        assert!(line.contains("ECC ERRORS +2; XID 79"), "{line}");
        assert!(line.contains("throttled: hw_thermal_slowdown"), "{line}");
        assert!(accounts.lines(Some(1001), 10).is_empty());
        // A failed sample is shown, and the step is forgotten once it stops running.
        accounts.record(KEY, 1000, 3, "b", Err("GPU is lost".into()), 10);
        assert!(accounts.lines(None, 10)[0].ends_with("cannot sample: GPU is lost"));
        accounts.retain(&[]);
        assert!(accounts.lines(None, 10).is_empty());
    }
}
