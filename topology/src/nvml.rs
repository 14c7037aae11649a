//! NVIDIA's management library: GPU names, UUIDs and NVLink connections on a live node.
//!
//! `libnvidia-ml.so.1` is loaded at run time, so a node without the NVIDIA driver still gets a
//! topology (GPUs then come from PCI data alone, and the sources list says NVML was
//! unavailable and why). NVML is not thread-safe for every call: the caller keeps it on one
//! thread, which is the case here since discovery is one synchronous call.

use nvml_wrapper::Nvml;

use crate::model::{BusId, NvLink, NvLinkPeer, SourceKind, Topology};

/// The most NVLinks a GPU has (`NVML_NVLINK_MAX_LINKS` in nvml.h, 18 since Hopper).
const MAX_LINKS: u32 = 18;

impl Topology {
    /// Adds what NVML knows; records NVML as unavailable (with the reason) when it does not
    /// load or initialise.
    pub fn apply_nvml(&mut self) {
        let nvml = match Nvml::init() {
            Ok(nvml) => nvml,
            Err(e) => {
                self.record_source(
                    SourceKind::Nvml,
                    false,
                    format!("libnvidia-ml.so.1 not usable: {e}"),
                );
                return;
            }
        };
        let count = match nvml.device_count() {
            Ok(count) => count,
            Err(e) => {
                self.record_source(SourceKind::Nvml, false, format!("cannot count GPUs: {e}"));
                return;
            }
        };
        let mut links_by_gpu: Vec<(BusId, Vec<BusId>)> = Vec::new();
        for index in 0..count {
            let Ok(device) = nvml.device_by_index(index) else {
                self.notes.push(format!(
                    "NVML could not open GPU {index}; its details are missing"
                ));
                continue;
            };
            let Some(bus_id) = device
                .pci_info()
                .ok()
                .and_then(|info| info.bus_id.parse::<BusId>().ok())
            else {
                continue;
            };
            let Some(gpu) = self.gpus.iter_mut().find(|gpu| gpu.bus_id == bus_id) else {
                self.notes.push(format!(
                    "NVML reports GPU {bus_id} that PCI discovery did not find"
                ));
                continue;
            };
            gpu.model = device.name().ok().or(gpu.model.take());
            gpu.uuid = device.uuid().ok();
            if !gpu.sources.contains(&SourceKind::Nvml) {
                gpu.sources.push(SourceKind::Nvml);
            }
            let mut remotes = Vec::new();
            for link in 0..MAX_LINKS {
                let wrapper = device.link_wrapper_for(link);
                if wrapper.is_active().unwrap_or(false) {
                    if let Some(remote) = wrapper
                        .remote_pci_info()
                        .ok()
                        .and_then(|info| info.bus_id.parse::<BusId>().ok())
                    {
                        remotes.push(remote);
                    }
                }
            }
            links_by_gpu.push((bus_id, remotes));
        }
        for (bus_id, remotes) in links_by_gpu {
            let mut links: Vec<NvLink> = Vec::new();
            for remote in remotes {
                let peer = match self.gpus.iter().find(|gpu| gpu.bus_id == remote) {
                    Some(gpu) => NvLinkPeer::Gpu(gpu.index),
                    None => NvLinkPeer::NvSwitch(Some(remote)),
                };
                match links.iter_mut().find(|link| link.peer == peer) {
                    Some(link) => link.links += 1,
                    None => links.push(NvLink { peer, links: 1 }),
                }
            }
            links.sort_by_key(|link| link.peer);
            if let Some(gpu) = self.gpus.iter_mut().find(|gpu| gpu.bus_id == bus_id) {
                if !links.is_empty() {
                    gpu.nvlinks = links;
                }
            }
        }
        let version = nvml.sys_driver_version().map_or_else(
            |_| "driver version unknown".to_owned(),
            |v| format!("driver {v}"),
        );
        self.record_source(SourceKind::Nvml, true, format!("{count} GPUs, {version}"));
    }
}
