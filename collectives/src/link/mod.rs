//! Point-to-point links between two ranks: shared memory on one host, TCP between hosts.
//!
//! Both are driven the same way by the progress engine (`engine.rs`): non-blocking sends of
//! whole elements, receives that hand readable bytes to a sink (which copies or reduces them
//! in place), and a liveness check of the peer. Chunking, flow control and ordering live in the
//! engine and the algorithms, so every transport shares them.

#[cfg(feature = "rdma")]
pub mod rdma;
// Used by the verbs transport; built (and tested) without it too.
#[cfg_attr(not(feature = "rdma"), allow(dead_code))]
pub(crate) mod negotiate;
pub(crate) mod shm;
pub(crate) mod slots;
pub(crate) mod tcp;

use std::os::fd::BorrowedFd;

/// A bidirectional byte link to one peer.
pub(crate) trait Link: Send + std::fmt::Debug {
    /// Copies as much of `data` as fits without blocking, in whole `unit`s; returns the number
    /// of bytes taken.
    fn try_send(&mut self, data: &[u8], unit: usize) -> std::io::Result<usize>;
    /// Offers readable bytes (whole `unit`s, aligned to `unit`) to `sink` once, which returns
    /// how many it consumed; returns that number. (Once: the caller bounds each offer to
    /// what its message still lacks.)
    fn try_recv(
        &mut self,
        unit: usize,
        sink: &mut dyn FnMut(&[u8]) -> usize,
    ) -> std::io::Result<usize>;
    /// Copies readable bytes straight into `dst` (for received data that is only copied);
    /// returns how many.
    fn try_recv_direct(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        self.try_recv(1, &mut |bytes: &[u8]| {
            let n = bytes.len().min(dst.len());
            dst[..n].copy_from_slice(&bytes[..n]);
            n
        })
    }
    /// Marks the end of an outgoing message.
    fn end_send(&mut self);
    /// Marks the end of an incoming message.
    fn end_recv(&mut self);
    /// A descriptor that becomes writable (`writing`) or readable when the link can
    /// progress in that direction, if any.
    fn poll_fd(&self, writing: bool) -> Option<BorrowedFd<'_>>;
    /// `Err` with a reason when the peer is known to be gone.
    fn peer_alive(&mut self) -> Result<(), String>;
    /// `shm` or `tcp`.
    fn kind(&self) -> &'static str;
    /// The kind and, where there is a choice to show, what carries it (an RDMA link's device,
    /// port and GID).
    fn route(&self) -> String {
        self.kind().to_owned()
    }
}

/// The name of the network interface that holds `ip` (the rank's NIC in the plan), if any.
pub(crate) fn interface_of(ip: std::net::IpAddr) -> Option<String> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        let address = a.address?;
        let found = match ip {
            std::net::IpAddr::V4(v4) => address.as_sockaddr_in().is_some_and(|s| s.ip() == v4),
            std::net::IpAddr::V6(v6) => address.as_sockaddr_in6().is_some_and(|s| s.ip() == v6),
        };
        found.then_some(a.interface_name)
    })
}
