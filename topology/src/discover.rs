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
        let found = interface_addresses();
        if found.is_empty() {
            return;
        }
        for nic in &mut self.nics {
            for dev in &mut nic.netdevs {
                dev.addresses = found
                    .iter()
                    .filter(|(name, _)| name == &dev.name)
                    .map(|(_, addr)| addr.to_string())
                    .collect();
            }
        }
    }
}

/// Every IPv4 and IPv6 address of the running system, with its interface's name.
fn interface_addresses() -> Vec<(String, std::net::IpAddr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|addr| {
            let storage = addr.address?;
            let ip: std::net::IpAddr = if let Some(v4) = storage.as_sockaddr_in() {
                v4.ip().into()
            } else {
                storage.as_sockaddr_in6()?.ip().into()
            };
            Some((addr.interface_name, ip))
        })
        .collect()
}

/// The network interface of the running system that holds `ip` (`lo` for 127.0.0.1), for
/// `NCCL_SOCKET_IFNAME`.
pub fn interface_of(ip: std::net::IpAddr) -> Option<String> {
    interface_addresses()
        .into_iter()
        .find_map(|(name, held)| (held == ip).then_some(name))
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
