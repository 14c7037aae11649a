//! What clients may make the daemon hold: open local connections in all and per user (root's
//! connections are counted in the total only, so no user can crowd out the plugin), and open
//! peer connections. A connection over a limit is told so and closed at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cohort_proto::daemon::ErrorCode;
use tokio::net::UnixStream;

use crate::config::Limits;

/// Peer connections open at once: a leader of the largest step hears from every other node at
/// its start, plus what unauthenticated callers hold during their handshake's few seconds.
pub(crate) const MAX_PEER_CONNECTIONS: usize = 16384;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_uid: HashMap<u32, usize>,
    peers: usize,
}

/// Counts open connections against the limits; a [`Ticket`] is held for each.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub(crate) struct Ticket {
    counts: Arc<Mutex<Counts>>,
    holder: Holder,
}

/// Whose place a ticket holds.
#[derive(Debug, Clone, Copy)]
enum Holder {
    /// A daemon's connection on the peer port.
    Peer,
    /// A local connection of this uid (`u32::MAX` when unknown).
    Local(u32),
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        match self.holder {
            Holder::Peer => counts.peers = counts.peers.saturating_sub(1),
            Holder::Local(uid) => {
                counts.total = counts.total.saturating_sub(1);
                if let Some(n) = counts.by_uid.get_mut(&uid) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        counts.by_uid.remove(&uid);
                    }
                }
            }
        }
    }
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Admission {
        Admission {
            limits,
            counts: Arc::default(),
        }
    }

    /// Admits a local connection from `uid` (`None`: unknown, counted as one more user), or
    /// says which limit it would pass.
    pub(crate) fn admit(&self, uid: Option<u32>) -> Result<Ticket, String> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.limits.max_connections {
            return Err(format!(
                "cohortd has {} connections open, its limit (limits.max_connections); try again",
                counts.total
            ));
        }
        let user = uid.unwrap_or(u32::MAX);
        if user != 0 {
            let open = counts.by_uid.get(&user).copied().unwrap_or(0);
            if open >= self.limits.max_connections_per_user {
                return Err(format!(
                    "uid {user} has {open} connections to cohortd open, the limit for one user \
                     (limits.max_connections_per_user); close some"
                ));
            }
            *counts.by_uid.entry(user).or_insert(0) += 1;
        }
        counts.total += 1;
        Ok(Ticket {
            counts: Arc::clone(&self.counts),
            holder: Holder::Local(user),
        })
    }

    /// Admits a peer connection, unless [`MAX_PEER_CONNECTIONS`] are open.
    pub(crate) fn admit_peer(&self) -> Option<Ticket> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.peers >= MAX_PEER_CONNECTIONS {
            return None;
        }
        counts.peers += 1;
        Some(Ticket {
            counts: Arc::clone(&self.counts),
            holder: Holder::Peer,
        })
    }
}

/// Tells a refused client why, without waiting: the answer is small enough for the socket's
/// buffer, and a client that does not read it loses nothing of anyone else's.
pub(crate) fn refuse(stream: &UnixStream, message: &str) {
    let mut frame = Vec::new();
    let response = crate::api::error(ErrorCode::Busy, message);
    if cohort_proto::frame::write_frame(&mut frame, &response).is_ok() {
        let _ = stream.try_write(&frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(total: usize, per_user: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_user: per_user,
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_user_is_held_to_its_share_and_root_only_to_the_total() {
        let admission = Admission::new(limits(10, 3));
        let user: Vec<Ticket> = (0..3)
            .map(|_| admission.admit(Some(1000)).unwrap())
            .collect();
        let err = admission.admit(Some(1000)).unwrap_err();
        assert!(err.contains("uid 1000 has 3 connections"), "{err}");
        // Another user and unknown callers have shares of their own.
        let other = admission.admit(Some(1001)).unwrap();
        let unknown = admission.admit(None).unwrap();
        // Root may take what is left of the total, and no more.
        let root: Vec<Ticket> = (0..5).map(|_| admission.admit(Some(0)).unwrap()).collect();
        let err = admission.admit(Some(0)).unwrap_err();
        assert!(err.contains("10 connections open"), "{err}");
        drop(user);
        assert!(admission.admit(Some(1000)).is_ok());
        drop((other, unknown, root));
        let counts = admission.counts.lock().unwrap();
        assert_eq!(counts.total, 0);
        assert!(counts.by_uid.is_empty(), "{:?}", counts.by_uid);
    }

    #[test]
    fn peer_connections_are_counted_apart() {
        let admission = Admission::new(limits(1, 1));
        let _local = admission.admit(Some(0)).unwrap();
        let peers: Vec<Ticket> = (0..MAX_PEER_CONNECTIONS)
            .map(|_| admission.admit_peer().unwrap())
            .collect();
        assert!(admission.admit_peer().is_none());
        drop(peers);
        assert!(admission.admit_peer().is_some());
    }
}
