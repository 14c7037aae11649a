//! The rendezvous store's listening socket, handed down by the launcher (spank_cohort in
//! slurmstepd, or `cohort run`) as an inherited file descriptor named by `COHORT_STORE_FD`.
//!
//! The launcher binds the store's port before the plan is made and keeps it bound until rank
//! 0 runs, so there is no moment when the port is free for another process to take. Taking an
//! inherited descriptor is the one unsafe operation here: the process must own it.

#![allow(unsafe_code)]

use std::net::TcpListener;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::CommError;

/// Whether this process already took the inherited descriptor (it may be taken once).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes the inherited listening socket `fd` for the store at `store` (`host:port`), checking
/// that it is a TCP socket listening on that port.
pub(crate) fn store_listener(fd: i32, store: &str) -> Result<TcpListener, CommError> {
    let invalid = |problem: String| CommError::Invalid(format!("COHORT_STORE_FD={fd}: {problem}"));
    let port: u16 = store
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| invalid(format!("the store address {store:?} has no port")))?;
    if fd <= 2 {
        return Err(invalid("not an inherited descriptor".into()));
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(invalid(
            "already taken by another communicator of this process".into(),
        ));
    }
    // The descriptor must be open before it is owned: fstat through /proc names it without
    // touching it.
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_err(|e| invalid(format!("not open in this process ({e})")))?;
    if !target.to_string_lossy().starts_with("socket:") {
        return Err(invalid(format!("{} is not a socket", target.display())));
    }
    // SAFETY: the descriptor is open (checked above) and refers to a socket; the launcher
    // passed it to this process for the store alone, and `TAKEN` makes this the only owner in
    // the process, so it is closed exactly once, when the listener is dropped.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    match listener.local_addr() {
        Ok(address) if address.port() == port => {}
        Ok(address) => {
            return Err(invalid(format!(
                "it listens on port {}, the store's address is {store}",
                address.port()
            )))
        }
        Err(e) => return Err(invalid(format!("not a TCP socket ({e})"))),
    }
    listener
        .set_nonblocking(false)
        .map_err(|e| CommError::io("the inherited store socket", e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    /// One test, because the descriptor may be taken once per process.
    #[test]
    fn an_inherited_listener_is_checked_then_taken_once() {
        assert!(store_listener(1, "127.0.0.1:1")
            .unwrap_err()
            .to_string()
            .contains("not an inherited descriptor"));
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let not_socket = file.into_raw_fd();
        TAKEN.store(false, Ordering::SeqCst);
        let err = store_listener(not_socket, "127.0.0.1:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a socket"), "{err}");
        let bound = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = bound.local_addr().unwrap().port();
        let fd = bound.into_raw_fd();
        TAKEN.store(false, Ordering::SeqCst);
        let err = store_listener(fd, &format!("127.0.0.1:{}", port.wrapping_add(1)))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("listens on port {port}")), "{err}");
        // (That listener was taken and dropped with the error; bind a fresh one.)
        let bound = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = bound.local_addr().unwrap().port();
        let fd = bound.into_raw_fd();
        TAKEN.store(false, Ordering::SeqCst);
        let listener = store_listener(fd, &format!("127.0.0.1:{port}")).unwrap();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
        let err = store_listener(fd, &format!("127.0.0.1:{port}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("already taken"), "{err}");
    }
}
