//! The progress engine: moves one outgoing and one incoming message at the same time over any
//! links, under a deadline, watching for aborts and dead peers.
//!
//! Waiting spins briefly (latency), then yields, then sleeps or polls the sockets in short
//! slices (so oversubscribed ranks give their core to the peer they wait for). Every 100 ms of
//! waiting it asks the links whether their peers are alive, so a killed rank is reported within
//! a fraction of a second on shared memory and within seconds over TCP, never at the deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::CommError;
use crate::link::Link;

/// A peer rank and the link to it.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) rank: u32,
    pub(crate) host: String,
    pub(crate) link: Box<dyn Link>,
}

/// What one operation runs under.
#[derive(Debug)]
pub(crate) struct OpCtx<'a> {
    pub(crate) op: &'static str,
    pub(crate) start: Instant,
    pub(crate) deadline: Instant,
    pub(crate) abort: &'a AtomicBool,
    /// Busy-wait rounds before yielding: many when every rank has a core, few when ranks
    /// outnumber cores and spinning would only delay the peer being waited for.
    pub(crate) spins: u32,
}

/// An incoming message: from which peer, how many bytes, in what unit, and where they go.
pub(crate) struct Incoming<'s> {
    pub(crate) from: usize,
    pub(crate) len: usize,
    pub(crate) unit: usize,
    pub(crate) sink: Sink<'s>,
}

/// Where received bytes go.
pub(crate) enum Sink<'s> {
    /// Straight into this buffer (of exactly the message's length).
    Copy(&'s mut [u8]),
    /// Through this function, which consumes whole units and returns how many bytes it took.
    With(&'s mut dyn FnMut(&[u8]) -> usize),
}

/// Busy-wait rounds when every local rank has a core of its own.
pub(crate) const SPINS: u32 = 2_000;
/// Busy-wait rounds when local ranks outnumber cores.
pub(crate) const SPINS_OVERSUBSCRIBED: u32 = 20;
const YIELDS: u32 = 200;
const LIVENESS_EVERY: Duration = Duration::from_millis(100);

/// Adds to a `PeerGone` error every other peer that is gone too: when one rank dies, its
/// neighbours stop with errors and their sockets close as well, so the first failure a rank
/// notices may be a neighbour's, not the dead rank's. Naming all of them names the dead one.
fn with_others_gone(peers: &mut [Option<Peer>], error: CommError) -> CommError {
    let CommError::PeerGone { rank, host, detail } = error else {
        return error;
    };
    let others: Vec<String> = peers
        .iter_mut()
        .flatten()
        .filter(|peer| peer.rank != rank)
        .filter_map(|peer| {
            peer.link
                .peer_alive()
                .err()
                .map(|why| format!("rank {} on {} ({why})", peer.rank, peer.host))
        })
        .collect();
    let detail = if others.is_empty() {
        detail
    } else {
        format!("{detail}; also gone: {}", others.join(", "))
    };
    CommError::PeerGone { rank, host, detail }
}

fn gone(peer: &Peer, detail: impl Into<String>) -> CommError {
    CommError::PeerGone {
        rank: peer.rank,
        host: peer.host.clone(),
        detail: detail.into(),
    }
}

/// Sends `outgoing` (to a peer index) while receiving `incoming`, both optional; returns when
/// both are complete.
pub(crate) fn exchange(
    peers: &mut [Option<Peer>],
    ctx: &OpCtx<'_>,
    outgoing: Option<(usize, &[u8], usize)>,
    incoming: Option<Incoming<'_>>,
) -> Result<(), CommError> {
    progress(peers, ctx, outgoing, incoming).map_err(|e| with_others_gone(peers, e))
}

fn progress(
    peers: &mut [Option<Peer>],
    ctx: &OpCtx<'_>,
    outgoing: Option<(usize, &[u8], usize)>,
    mut incoming: Option<Incoming<'_>>,
) -> Result<(), CommError> {
    let mut sent = 0usize;
    let mut received = 0usize;
    let send_len = outgoing.map_or(0, |(_, data, _)| data.len());
    let recv_len = incoming.as_ref().map_or(0, |inc| inc.len);
    let mut idle_rounds = 0u32;
    let mut last_liveness = Instant::now();
    loop {
        let mut progressed = false;
        if let Some((to, data, unit)) = outgoing {
            if sent < send_len {
                let peer = peer_mut(peers, to)?;
                let n = peer
                    .link
                    .try_send(&data[sent..], unit)
                    .map_err(|e| gone(peer, format!("sending to it failed: {e}")))?;
                sent += n;
                progressed |= n > 0;
                if sent == send_len {
                    peer.link.end_send();
                }
            }
        }
        if let Some(inc) = incoming.as_mut() {
            if received < inc.len {
                let want = inc.len - received;
                let peer = peer_mut(peers, inc.from)?;
                let n = match &mut inc.sink {
                    Sink::Copy(dst) => peer.link.try_recv_direct(&mut dst[received..]),
                    Sink::With(sink) => peer.link.try_recv(inc.unit, &mut |bytes: &[u8]| {
                        let take = bytes.len().min(want);
                        sink(&bytes[..take])
                    }),
                }
                .map_err(|e| gone(peer, format!("receiving from it failed: {e}")))?;
                received += n;
                progressed |= n > 0;
                if received == inc.len {
                    peer.link.end_recv();
                }
            }
        }
        if sent == send_len && received == recv_len {
            // Zero-length messages still mark their boundaries.
            if send_len == 0 {
                if let Some((to, _, _)) = outgoing {
                    peer_mut(peers, to)?.link.end_send();
                }
            }
            if recv_len == 0 {
                if let Some(inc) = incoming.as_ref() {
                    peer_mut(peers, inc.from)?.link.end_recv();
                }
            }
            return Ok(());
        }
        if progressed {
            idle_rounds = 0;
            continue;
        }
        idle_rounds = idle_rounds.saturating_add(1);
        if ctx.abort.load(Ordering::Relaxed) {
            return Err(CommError::Aborted);
        }
        if idle_rounds < ctx.spins {
            std::hint::spin_loop();
            continue;
        }
        let now = Instant::now();
        if now.duration_since(last_liveness) >= LIVENESS_EVERY {
            last_liveness = now;
            for index in [
                outgoing.map(|(to, _, _)| to),
                incoming.as_ref().map(|i| i.from),
            ]
            .into_iter()
            .flatten()
            {
                let peer = peer_mut(peers, index)?;
                if let Err(detail) = peer.link.peer_alive() {
                    return Err(gone(peer, detail));
                }
            }
            if now >= ctx.deadline {
                // Blame the side we are waiting on: the receive if it is unfinished.
                let waiting_on = if received < recv_len {
                    incoming.as_ref().map(|i| i.from)
                } else {
                    outgoing.map(|(to, _, _)| to)
                };
                let peer = peer_mut(peers, waiting_on.unwrap_or(0))?;
                return Err(CommError::Timeout {
                    op: ctx.op,
                    rank: peer.rank,
                    host: peer.host.clone(),
                    elapsed: now.duration_since(ctx.start),
                    culprit: None,
                });
            }
        }
        if idle_rounds < ctx.spins + YIELDS {
            std::thread::yield_now();
        } else {
            wait_a_little(
                peers,
                outgoing.map(|(to, _, _)| to),
                incoming.as_ref().map(|i| i.from),
            );
        }
    }
}

fn peer_mut(peers: &mut [Option<Peer>], index: usize) -> Result<&mut Peer, CommError> {
    peers
        .get_mut(index)
        .and_then(Option::as_mut)
        .ok_or_else(|| CommError::Invalid(format!("no link to rank {index}")))
}

/// Blocks briefly: on the sockets involved when there are any, else a short sleep.
fn wait_a_little(peers: &[Option<Peer>], to: Option<usize>, from: Option<usize>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let fd_of = |index: Option<usize>, writing: bool| {
        index
            .and_then(|i| peers.get(i))
            .and_then(Option::as_ref)
            .and_then(|peer| peer.link.poll_fd(writing))
    };
    let mut fds: Vec<PollFd<'_>> = [
        fd_of(to, true).map(|fd| PollFd::new(fd, PollFlags::POLLOUT)),
        fd_of(from, false).map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if fds.is_empty() {
        std::thread::sleep(Duration::from_micros(50));
        return;
    }
    let _ = poll(&mut fds, PollTimeout::from(10u8));
}
