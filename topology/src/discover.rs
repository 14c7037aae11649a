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

/// The network interface of the running system that holds `ip` (`lo` for 127.0.0.1), for
/// `NCCL_SOCKET_IFNAME`.
pub fn interface_of(ip: std::net::IpAddr) -> Option<String> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifaddr| {
        let address = ifaddr.address?;
        let held = match ip {
            std::net::IpAddr::V4(v4) => address.as_sockaddr_in().is_some_and(|a| a.ip() == v4),
            std::net::IpAddr::V6(v6) => address.as_sockaddr_in6().is_some_and(|a| a.ip() == v6),
        };
        held.then_some(ifaddr.interface_name)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_loopback_address_is_on_the_loopback_interface() {
        assert_eq!(
            super::interface_of([127, 0, 0, 1].into()).as_deref(),
            Some("lo")
        );
        assert_eq!(super::interface_of([192, 0, 2, 1].into()), None);
    }
}
