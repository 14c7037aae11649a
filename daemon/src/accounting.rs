//! GPU accounting: the node's GPUs, sampled every few seconds (through a
//! `cohort_topology::gpu_sample::GpuSampler`: NVML, or a script on machines without GPUs),
//! aggregated per step and GPU for `cohort status` and `cohort top`, with flags a sysadmin
//! acts on (a GPU allocated but idle for longer than the threshold, new uncorrected ECC or Xid
//! errors), and each step's series, bounded, which the plugin writes into the step's trial as
//! system metrics at its end. The aggregation is pure (samples and times in, lines, flags and
//! series out); `app.rs` runs the sampling loop.

use std::collections::{BTreeMap, BTreeSet};

use cohort_proto::daemon::{GpuPoint, GpuSeries, TopGpu};
use cohort_topology::gpu_sample::GpuSample;

use crate::config::Accounting;
use crate::gang::StepKey;

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Windows a GPU's series keeps; past that, neighbouring windows merge into one twice as
/// wide, so a week-long step keeps a bounded, evenly spaced series.
const SERIES_WINDOWS: usize = 2048;
/// How long (seconds) an ended step's series wait for the plugin to take them.
const ENDED_KEEP: u64 = 600;
/// The most ended steps kept.
const ENDED_MAX: usize = 256;

/// The samples of one window of a series.
#[derive(Debug, Clone, Default, PartialEq)]
struct Window {
    start: u64,
    samples: u32,
    util_sum: f64,
    memory_max: u64,
    power_sum_w: f64,
    power_samples: u32,
    temperature_max: Option<u32>,
}

impl Window {
    fn add(&mut self, sample: &GpuSample) {
        self.samples += 1;
        self.util_sum += f64::from(sample.util);
        self.memory_max = self.memory_max.max(sample.memory_used);
        if let Some(mw) = sample.power_mw {
            self.power_sum_w += f64::from(mw) / 1000.0;
            self.power_samples += 1;
        }
        self.temperature_max = self.temperature_max.max(sample.temperature_c);
    }

    fn merge(&mut self, other: &Window) {
        self.samples += other.samples;
        self.util_sum += other.util_sum;
        self.memory_max = self.memory_max.max(other.memory_max);
        self.power_sum_w += other.power_sum_w;
        self.power_samples += other.power_samples;
        self.temperature_max = self.temperature_max.max(other.temperature_max);
    }

    fn point(&self) -> GpuPoint {
        GpuPoint {
            t: self.start,
            util: self.util_sum / f64::from(self.samples.max(1)),
            memory_used: self.memory_max,
            power_w: (self.power_samples > 0)
                .then(|| self.power_sum_w / f64::from(self.power_samples)),
            temperature_c: self.temperature_max,
        }
    }
}

/// A GPU's samples over a step, in windows of `width` seconds, at most [`SERIES_WINDOWS`].
#[derive(Debug, Clone, Default, PartialEq)]
struct Series {
    width: u64,
    windows: Vec<Window>,
}

impl Series {
    fn add(&mut self, sample: &GpuSample, now: u64, interval: u64) {
        if self.width == 0 {
            self.width = interval.max(1);
        }
        match self.windows.last_mut() {
            Some(last) if now < last.start + self.width => last.add(sample),
            _ => {
                let mut window = Window {
                    start: now,
                    ..Window::default()
                };
                window.add(sample);
                self.windows.push(window);
            }
        }
        if self.windows.len() > SERIES_WINDOWS {
            self.width *= 2;
            let old = std::mem::take(&mut self.windows);
            for pair in old.chunks(2) {
                let mut merged = pair[0].clone();
                if let Some(second) = pair.get(1) {
                    merged.merge(second);
                }
                self.windows.push(merged);
            }
        }
    }
}

/// What one GPU of one step has shown so far.
#[derive(Debug, Clone, Default, PartialEq)]
struct GpuAccount {
    bus_id: String,
    /// Its number within the step (see `GpuSeries::ordinal`).
    ordinal: u32,
    series: Series,
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

/// A GPU of the node, with its latest sample.
#[derive(Debug, Clone)]
struct NodeGpu {
    bus_id: String,
    last: Result<GpuSample, String>,
}

/// Every running step's GPU accounts, the series of recently ended ones, and the latest
/// sample of every GPU of the node.
#[derive(Debug, Clone)]
pub(crate) struct Accounts {
    settings: Accounting,
    steps: BTreeMap<StepKey, StepAccount>,
    /// Steps that ended, with when (seconds), until the plugin took their series.
    ended: BTreeMap<StepKey, (u64, StepAccount)>,
    node: BTreeMap<u32, NodeGpu>,
}

impl Accounts {
    pub(crate) fn new(settings: Accounting) -> Accounts {
        Accounts {
            settings,
            steps: BTreeMap::new(),
            ended: BTreeMap::new(),
            node: BTreeMap::new(),
        }
    }

    /// Moves steps no longer running (`running` lists those that are) to the ended ones,
    /// whose series are kept [`ENDED_KEEP`] seconds for the plugin to take.
    pub(crate) fn retain(&mut self, running: &[StepKey], now: u64) {
        let gone: Vec<StepKey> = self
            .steps
            .keys()
            .filter(|key| !running.contains(key))
            .copied()
            .collect();
        for key in gone {
            if let Some(account) = self.steps.remove(&key) {
                self.ended.insert(key, (now, account));
            }
        }
        self.ended
            .retain(|_, (at, _)| now.saturating_sub(*at) <= ENDED_KEEP);
        while self.ended.len() > ENDED_MAX {
            let oldest = self
                .ended
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(key, _)| *key);
            if let Some(key) = oldest {
                self.ended.remove(&key);
            }
        }
    }

    /// Keeps the latest sample of GPU `gpu` (at `bus_id`), for `cohort top`.
    pub(crate) fn observe(&mut self, gpu: u32, bus_id: &str, sample: &Result<GpuSample, String>) {
        self.node.insert(
            gpu,
            NodeGpu {
                bus_id: bus_id.to_owned(),
                last: sample.clone(),
            },
        );
    }

    /// Adds one sample (or the error that stood for it) of GPU `gpu` (its index on the node
    /// and its number within the step, at `bus_id`) of step `key`, taken at `now` (seconds);
    /// returns what is newly worth flagging.
    pub(crate) fn record(
        &mut self,
        key: StepKey,
        uid: u32,
        (gpu, ordinal): (u32, u32),
        bus_id: &str,
        sample: &Result<GpuSample, String>,
        now: u64,
    ) -> Vec<Flag> {
        let step = self.steps.entry(key).or_default();
        step.uid = uid;
        let account = step.gpus.entry(gpu).or_insert_with(|| GpuAccount {
            bus_id: bus_id.to_owned(),
            ordinal,
            ..GpuAccount::default()
        });
        let sample = match sample {
            Ok(sample) => sample.clone(),
            Err(e) => {
                account.error = Some(e.clone());
                return Vec::new();
            }
        };
        let mut flags = Vec::new();
        account.error = None;
        account.series.add(&sample, now, self.settings.interval);
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

    /// The series of step `key`'s GPUs on this node, running or recently ended, when `uid`
    /// may see the step (`None`: root); empty otherwise.
    pub(crate) fn series(&self, key: StepKey, uid: Option<u32>) -> Vec<GpuSeries> {
        let account = self
            .steps
            .get(&key)
            .or_else(|| self.ended.get(&key).map(|(_, account)| account));
        let Some(account) = account.filter(|a| uid.is_none_or(|uid| uid == a.uid)) else {
            return Vec::new();
        };
        account
            .gpus
            .iter()
            .map(|(gpu, a)| GpuSeries {
                ordinal: a.ordinal,
                gpu: *gpu,
                bus_id: a.bus_id.clone(),
                points: a.series.windows.iter().map(Window::point).collect(),
            })
            .collect()
    }

    /// Every GPU of the node (`gpus`: index, bus id, model) for `cohort top`, with its latest
    /// sample and the running step that holds it; the step and its owner only where `uid`
    /// may see them (`None`: root).
    pub(crate) fn top(
        &self,
        gpus: &[(u32, String, Option<String>)],
        uid: Option<u32>,
        now: u64,
    ) -> Vec<TopGpu> {
        gpus.iter()
            .map(|(index, bus_id, model)| {
                let latest = self.node.get(index).filter(|n| &n.bus_id == bus_id);
                let holder = self
                    .steps
                    .iter()
                    .find_map(|(key, step)| Some((key, step, step.gpus.get(index)?)));
                let visible = holder.filter(|(_, step, _)| uid.is_none_or(|uid| uid == step.uid));
                TopGpu {
                    index: *index,
                    bus_id: bus_id.clone(),
                    model: model.clone(),
                    sample: latest.and_then(|n| n.last.clone().ok()),
                    error: latest.and_then(|n| n.last.clone().err()),
                    in_use: holder.is_some(),
                    step: visible.map(|((job, step, _), _, _)| format!("{job}.{step}")),
                    uid: visible.map(|(_, step, _)| step.uid),
                    idle_seconds: visible.and_then(|(_, _, a)| {
                        let idle = now.saturating_sub(a.idle_since?);
                        (idle >= self.settings.idle_after).then_some(idle)
                    }),
                }
            })
            .collect()
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
            flags.extend(accounts.record(KEY, 1000, (0, 0), "0000:17:00.0", &Ok(sample(util)), t));
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
            .record(KEY, 1000, (3, 0), "b", &Ok(with(4, vec![])), 0)
            .is_empty());
        let flags = accounts.record(KEY, 1000, (3, 0), "b", &Ok(with(6, vec![79])), 5);
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
            .record(KEY, 1000, (3, 0), "b", &Ok(without), 6)
            .is_empty());
        assert!(accounts
            .record(KEY, 1000, (3, 0), "b", &Ok(with(6, vec![])), 7)
            .is_empty());
        let line = &accounts.lines(Some(1000), 10)[0];
        assert!(line.contains("ECC ERRORS +2; XID 79"), "{line}");
        assert!(line.contains("throttled: hw_thermal_slowdown"), "{line}");
        assert!(accounts.lines(Some(1001), 10).is_empty());
        // A failed sample is shown, and the step is forgotten once it stops running.
        accounts.record(KEY, 1000, (3, 0), "b", &Err("GPU is lost".into()), 10);
        assert!(accounts.lines(None, 10)[0].ends_with("cannot sample: GPU is lost"));
        accounts.retain(&[], 10);
        assert!(accounts.lines(None, 10).is_empty());
    }

    #[test]
    fn a_step_s_series_is_bounded_kept_after_its_end_and_shown_to_its_owner_alone() {
        let mut accounts = Accounts::new(settings());
        // Ten times the windows a series keeps, one sample every 5 s.
        let samples = u64::try_from(SERIES_WINDOWS).unwrap() * 10;
        for i in 0..samples {
            let util = if i < samples / 2 { 20 } else { 80 };
            accounts.record(KEY, 1000, (2, 1), "c", &Ok(sample(util)), i * 5);
        }
        let series = accounts.series(KEY, Some(1000));
        assert_eq!(series.len(), 1);
        let (gpu, ordinal) = (series[0].gpu, series[0].ordinal);
        assert_eq!((gpu, ordinal, series[0].bus_id.as_str()), (2, 1, "c"));
        let points = &series[0].points;
        assert!(points.len() <= SERIES_WINDOWS && points.len() > SERIES_WINDOWS / 4);
        // Windows merged evenly: the first half's mean is 20, the second's 80, nothing lost.
        assert_eq!(points[0].t, 0);
        assert!((points[0].util - 20.0).abs() < 1e-9);
        assert!((points[points.len() - 1].util - 80.0).abs() < 1e-9);
        assert!(points.windows(2).all(|w| w[0].t < w[1].t));
        assert_eq!(points[0].power_w, Some(300.0));
        assert_eq!(points[0].temperature_c, Some(60));
        assert!(accounts.series(KEY, Some(1001)).is_empty());
        // Ended, the series waits for the plugin, then goes.
        accounts.retain(&[], samples * 5);
        assert!(accounts.lines(None, samples * 5).is_empty());
        assert_eq!(accounts.series(KEY, None).len(), 1);
        accounts.retain(&[], samples * 5 + ENDED_KEEP + 1);
        assert!(accounts.series(KEY, None).is_empty());
    }

    #[test]
    fn top_shows_every_gpu_and_only_the_asker_s_own_steps() {
        let mut accounts = Accounts::new(settings());
        let gpus = vec![
            (0, "a".to_owned(), Some("A100".to_owned())),
            (1, "b".to_owned(), None),
        ];
        accounts.observe(0, "a", &Ok(sample(0)));
        accounts.observe(1, "b", &Err("GPU is lost".into()));
        accounts.record(KEY, 1000, (0, 0), "a", &Ok(sample(0)), 0);
        accounts.record(KEY, 1000, (0, 0), "a", &Ok(sample(0)), 70);
        let mine = accounts.top(&gpus, Some(1000), 70);
        assert_eq!(mine[0].step.as_deref(), Some("12.0"));
        assert_eq!((mine[0].uid, mine[0].idle_seconds), (Some(1000), Some(70)));
        assert_eq!(mine[0].sample.as_ref().map(|s| s.util), Some(0));
        assert!(!mine[1].in_use && mine[1].error.as_deref() == Some("GPU is lost"));
        let theirs = accounts.top(&gpus, Some(1001), 70);
        assert!(theirs[0].in_use && theirs[0].step.is_none() && theirs[0].uid.is_none());
        assert_eq!(accounts.top(&gpus, None, 70)[0].uid, Some(1000));
    }
}
