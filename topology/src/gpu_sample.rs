//! Samples of a GPU's use, for the daemon's accounting: utilisation, memory, power,
//! temperature, throttle reasons, uncorrected ECC errors and Xid errors. [`GpuSampler`] is how
//! the daemon reaches them: [`NvmlSampler`] reads NVML on a node with NVIDIA's driver;
//! [`ScriptedSampler`] replays samples written down in advance, for tests and machines without
//! a GPU, and says so in its name.

use std::collections::BTreeMap;

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::{EventSet, Nvml};

pub use cohort_proto::daemon::GpuSample;

/// Reads samples of a node's GPUs, named by PCI bus id (`0000:17:00.0`), as the topology
/// names them.
pub trait GpuSampler: Send {
    /// Starts a round of samples: returns the Xid errors (bus id, Xid) of the previous round
    /// that no sample claimed (GPUs no step was using), so that none is blamed on a later step.
    fn begin_round(&mut self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// One sample of the GPU at `bus_id`; `in_use` says whether a running step holds it
    /// (NVML reads the GPU either way; a script describes GPUs while steps hold them).
    fn sample(&mut self, bus_id: &str, in_use: bool) -> Result<GpuSample, String>;
}

/// Samples through NVML (`libnvidia-ml.so.1`, loaded at run time).
pub struct NvmlSampler {
    nvml: &'static Nvml,
    /// Xid events, one set per GPU that offers them, drained at each sample.
    events: Vec<EventSet<'static>>,
    /// Xids drained at the start of this round, not yet handed out, by bus id.
    pending: BTreeMap<String, Vec<u64>>,
}

impl std::fmt::Debug for NvmlSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSampler")
            .field("xid_event_sets", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// The throttle reasons worth telling a sysadmin (idleness and clock settings are not).
const THROTTLE_NAMES: [(ThrottleReasons, &str); 6] = [
    (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
    (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
    (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
    (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
    (
        ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
        "hw_power_brake_slowdown",
    ),
    (ThrottleReasons::SYNC_BOOST, "sync_boost"),
];

impl NvmlSampler {
    /// Loads NVML and registers for every GPU's Xid errors. The library stays loaded for the
    /// life of the process (one sampler per daemon).
    pub fn new() -> Result<NvmlSampler, String> {
        let nvml: &'static Nvml = Box::leak(Box::new(
            Nvml::init().map_err(|e| format!("libnvidia-ml.so.1 not usable: {e}"))?,
        ));
        let count = nvml.device_count().unwrap_or(0);
        let events = (0..count)
            .filter_map(|index| {
                let device = nvml.device_by_index(index).ok()?;
                let set = nvml.create_event_set().ok()?;
                // A GPU without Xid events (an old or virtual one) is sampled all the same.
                device
                    .register_events(EventTypes::CRITICAL_XID_ERROR, set)
                    .ok()
            })
            .collect();
        Ok(NvmlSampler {
            nvml,
            events,
            pending: BTreeMap::new(),
        })
    }

    /// Moves every Xid event NVML holds into `pending`.
    fn drain_xids(&mut self) {
        for set in &self.events {
            while let Ok(event) = set.wait(0) {
                let bus_id = event
                    .device
                    .pci_info()
                    .map(|info| info.bus_id.to_lowercase())
                    .unwrap_or_default();
                let xid = match event.event_data {
                    Some(XidError::Value(xid)) => xid,
                    _ => 0,
                };
                self.pending.entry(bus_id).or_default().push(xid);
            }
        }
    }
}

impl GpuSampler for NvmlSampler {
    fn begin_round(&mut self) -> Vec<(String, u64)> {
        let unclaimed = std::mem::take(&mut self.pending)
            .into_iter()
            .flat_map(|(bus_id, xids)| xids.into_iter().map(move |xid| (bus_id.clone(), xid)))
            .collect();
        self.drain_xids();
        unclaimed
    }

    fn sample(&mut self, bus_id: &str, _in_use: bool) -> Result<GpuSample, String> {
        let device = self
            .nvml
            .device_by_pci_bus_id(bus_id)
            .map_err(|e| format!("NVML has no GPU at {bus_id}: {e}"))?;
        let util = device
            .utilization_rates()
            .map_err(|e| format!("GPU {bus_id}: utilisation: {e}"))?
            .gpu;
        let memory = device
            .memory_info()
            .map_err(|e| format!("GPU {bus_id}: memory: {e}"))?;
        let throttle = device
            .current_throttle_reasons()
            .map(|reasons| {
                THROTTLE_NAMES
                    .iter()
                    .filter(|(flag, _)| reasons.contains(*flag))
                    .map(|(_, name)| (*name).to_owned())
                    .collect()
            })
            .unwrap_or_default();
        // NVML names bus ids in upper case with an 8-digit domain; the topology in lower case.
        let xids = self
            .pending
            .iter()
            .find(|(id, _)| id.ends_with(&bus_id.to_lowercase()))
            .map(|(id, _)| id.clone())
            .and_then(|id| self.pending.remove(&id))
            .unwrap_or_default();
        Ok(GpuSample {
            util,
            memory_used: memory.used,
            memory_total: memory.total,
            power_mw: device.power_usage().ok(),
            temperature_c: device.temperature(TemperatureSensor::Gpu).ok(),
            throttle,
            ecc_uncorrected: device
                .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
                .ok(),
            xids,
        })
    }
}

/// A stand-in for NVML on machines without a GPU: replays, for each GPU, the samples a test
/// (or a demonstration) wrote down, one per call while a step holds the GPU, repeating the
/// last one when they run out. A GPU no step holds reads idle (utilisation 0, no memory in
/// use) and its script waits. A GPU without samples is an error, as NVML's would be.
#[derive(Debug, Clone, Default)]
pub struct ScriptedSampler {
    script: BTreeMap<String, Vec<GpuSample>>,
    taken: BTreeMap<String, usize>,
}

impl ScriptedSampler {
    /// Samples per bus id, in the order they are handed out.
    pub fn new(script: BTreeMap<String, Vec<GpuSample>>) -> ScriptedSampler {
        ScriptedSampler {
            script,
            taken: BTreeMap::new(),
        }
    }
}

impl GpuSampler for ScriptedSampler {
    fn sample(&mut self, bus_id: &str, in_use: bool) -> Result<GpuSample, String> {
        let samples = self
            .script
            .get(bus_id)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("the script has no samples of GPU {bus_id}"))?;
        if !in_use {
            return Ok(GpuSample {
                memory_total: samples[0].memory_total,
                ..GpuSample::default()
            });
        }
        let taken = self.taken.entry(bus_id.to_owned()).or_insert(0);
        let sample = samples[(*taken).min(samples.len() - 1)].clone();
        *taken += 1;
        // An Xid happens once: a repeated last sample does not repeat it.
        Ok(if *taken > samples.len() {
            GpuSample {
                xids: Vec::new(),
                ..sample
            }
        } else {
            sample
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_is_replayed_in_order_then_holds_its_last_sample() {
        let busy = GpuSample {
            util: 90,
            xids: vec![79],
            ..GpuSample::default()
        };
        let idle = GpuSample::default();
        let mut sampler = ScriptedSampler::new(BTreeMap::from([(
            "0000:17:00.0".to_owned(),
            vec![idle.clone(), busy.clone()],
        )]));
        // Unused, the GPU reads idle and the script waits for a step.
        let unused = sampler.sample("0000:17:00.0", false).unwrap();
        assert_eq!((unused.util, unused.xids.len()), (0, 0));
        assert_eq!(sampler.sample("0000:17:00.0", true).unwrap(), idle);
        assert_eq!(sampler.sample("0000:17:00.0", true).unwrap(), busy);
        let held = sampler.sample("0000:17:00.0", true).unwrap();
        assert_eq!((held.util, held.xids), (90, vec![]));
        assert!(sampler
            .sample("0000:18:00.0", true)
            .unwrap_err()
            .contains("no samples of GPU 0000:18:00.0"));
    }

    #[test]
    fn nvml_is_refused_with_its_reason_where_there_is_no_driver() {
        // This machine may have no NVIDIA driver: the sampler then says why it cannot start.
        match NvmlSampler::new() {
            Ok(_) => eprintln!("NVML loaded: this machine has NVIDIA's driver"),
            Err(e) => assert!(e.contains("libnvidia-ml.so.1 not usable"), "{e}"),
        }
    }
}
