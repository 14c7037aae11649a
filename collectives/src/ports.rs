//! The rendezvous ports of a job's rank 0, chosen by the launcher (the SPANK plugin on rank 0's
//! node, `cohort run`): Cohort's store port, bound and handed to rank 0, and the next one,
//! torch's `MASTER_PORT` (see `cohort_proto::env::rank_env`), held so that nothing else takes it
//! before rank 0's `init_process_group` binds it.
//!
//! torch's TCPStore binds `MASTER_PORT` itself and takes no inherited socket, so the next
//! port is held by a socket bound with `SO_REUSEADDR` that never listens. Linux then gives
//! the port to no outgoing connection's source port and to no bind of an ephemeral port (the
//! collisions of many jobs on one node), nor to a bind without `SO_REUSEADDR`, yet lets
//! TCPStore, which binds with `SO_REUSEADDR`, listen on it. A program that binds exactly that
//! port with `SO_REUSEADDR` can still take it, as it could without the hold.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

use socket2::{Domain, Socket, Type};

/// How many store ports to try before giving up on finding one whose next port is free.
const TRIES: usize = 64;

/// Rank 0's two rendezvous ports, held.
#[derive(Debug)]
pub struct StorePorts {
    /// Cohort's store, listening (handed to rank 0 as `COHORT_STORE_FD`).
    pub store: TcpListener,
    /// The store's port.
    pub port: u16,
    /// `MASTER_PORT` (the store's port + 1), bound and not listening: keep it open for as long
    /// as rank 0 may start torch's TCPStore.
    pub master: PortHold,
}

/// A port held by a bound socket that does not listen; dropping it frees the port.
#[derive(Debug)]
pub struct PortHold {
    _socket: Socket,
}

/// Binds the store's socket on `ip` (any free port) and holds the next port on every
/// address. Fails, saying why, when no free port has a free successor.
pub fn reserve(ip: Ipv4Addr) -> Result<StorePorts, String> {
    let mut last = String::from("no port was tried");
    for _ in 0..TRIES {
        let store = TcpListener::bind((ip, 0))
            .map_err(|e| format!("binding the rendezvous store's socket on {ip}: {e}"))?;
        let port = store
            .local_addr()
            .map_err(|e| format!("the rendezvous store's socket: {e}"))?
            .port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        match hold(next) {
            Ok(master) => {
                return Ok(StorePorts {
                    store,
                    port,
                    master: PortHold { _socket: master },
                })
            }
            Err(e) => last = format!("port {next}: {e}"),
        }
    }
    Err(format!(
        "no port for the rendezvous store whose next port is free for MASTER_PORT ({last})"
    ))
}

/// A socket bound to `port` on every IPv4 address, with `SO_REUSEADDR`, not listening.
fn hold(port: u16) -> std::io::Result<Socket> {
    // socket2 opens it close-on-exec: no rank inherits it.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(ip: Ipv4Addr, port: u16, reuse: bool) -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.set_reuse_address(reuse)?;
        socket.bind(&SocketAddrV4::new(ip, port).into())?;
        Ok(socket)
    }

    #[test]
    fn the_next_port_is_refused_to_others_and_open_to_a_reusing_listener() {
        let ports = reserve(Ipv4Addr::LOCALHOST).unwrap();
        let next = ports.port + 1;
        // Another bind of MASTER_PORT without SO_REUSEADDR fails...
        for ip in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST] {
            let err = socket(ip, next, false).err().unwrap();
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{ip}: {err}");
        }
        // ...while a listener that binds it as torch's TCPStore does (SO_REUSEADDR) serves it.
        let listener = socket(Ipv4Addr::UNSPECIFIED, next, true).unwrap();
        listener.listen(4).unwrap();
        let listener = TcpListener::from(listener);
        let client = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, next)).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
        // The store itself listens.
        std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, ports.port)).unwrap();
    }

    #[test]
    fn a_released_reservation_frees_the_port() {
        let ports = reserve(Ipv4Addr::LOCALHOST).unwrap();
        let next = ports.port + 1;
        drop(ports);
        socket(Ipv4Addr::LOCALHOST, next, false).unwrap();
    }
}
