//! Discovery of the running node: hwloc, then sysfs for RDMA ports, then NVML, then the
//! addresses of the network interfaces found.

use crate::hwloc::HwlocError;
use crate::model::Topology;
use crate::sysfs::SysfsRoot;

/// Why the running node could not be discovered.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// hwloc failed to read the machine.
    #[error("discovering this machine: {0}")]
    Hwloc(#[from] HwlocError),
}

/// What live discovery reads.
#[derive(Debug, Clone, Default)]
pub struct LiveOptions {
    /// Root for sysfs reads (`/` on a real node).
    pub sysfs_root: SysfsRoot,
    /// Whether to try NVML.
    pub nvml: bool,
}

impl Topology {
    /// Discovers the running machine. Only hwloc failing is an error; a missing NVML or RDMA
    /// stack removes facts and is recorded in the sources list.
    pub fn discover(options: &LiveOptions) -> Result<Topology, DiscoverError> {
        let mut topo = crate::hwloc::discover_live()?;
        topo.apply_sysfs(&options.sysfs_root);
        if options.nvml {
            topo.apply_nvml();
        }
        topo.apply_interface_addresses();
        Ok(topo)
    }

    /// Fills in the addresses of the NICs' network interfaces from the running system.
    pub fn apply_interface_addresses(&mut self) {
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return;
        };
        let mut found: Vec<(String, String)> = Vec::new();
        for addr in addrs {
            let Some(storage) = addr.address else {
                continue;
            };
            let text = if let Some(v4) = storage.as_sockaddr_in() {
                v4.ip().to_string()
            } else if let Some(v6) = storage.as_sockaddr_in6() {
                v6.ip().to_string()
            } else {
                continue;
            };
            found.push((addr.interface_name, text));
        }
        for nic in &mut self.nics {
            for dev in &mut nic.netdevs {
                dev.addresses = found
                    .iter()
                    .filter(|(name, _)| name == &dev.name)
                    .map(|(_, addr)| addr.clone())
                    .collect();
            }
        }
    }
}
