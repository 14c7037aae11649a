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

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::link::shm::{create_inbound, ring_path, ShmLink};
    use crate::link::tcp::TcpLink;

    /// Two connected sockets over loopback.
    fn sockets() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    fn tcp_pair() -> (Box<dyn Link>, Box<dyn Link>) {
        let (a, b) = sockets();
        (
            Box::new(TcpLink::new(a).unwrap()),
            Box::new(TcpLink::new(b).unwrap()),
        )
    }

    /// `peers[index]` is the link to `rank` on `host`; the other places are empty.
    fn peers_with(index: usize, rank: u32, host: &str, link: Box<dyn Link>) -> Vec<Option<Peer>> {
        let mut peers: Vec<Option<Peer>> = (0..=index).map(|_| None).collect();
        peers[index] = Some(Peer {
            rank,
            host: host.into(),
            link,
        });
        peers
    }

    fn ctx(abort: &AtomicBool, timeout: Duration) -> OpCtx<'_> {
        let start = Instant::now();
        OpCtx {
            op: "test exchange",
            start,
            deadline: start + timeout,
            abort,
            spins: SPINS_OVERSUBSCRIBED,
        }
    }

    /// `len` bytes that differ with `seed` and repeat only every 251 bytes.
    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len)
            .map(|i| u8::try_from((i * 7 + seed) % 251).unwrap())
            .collect()
    }

    /// Sends `mine` to peer `to` while receiving `theirs_len` bytes from it, as one rank.
    /// Both sides of a swap at once (left is rank 0, whose peer is index 1; right is rank 1,
    /// whose peer is index 0): returns what right got, then what left got.
    fn swap_both(
        left: &mut [Option<Peer>],
        right: &mut [Option<Peer>],
        from_left: &[u8],
        from_right: &[u8],
    ) -> (Vec<u8>, Vec<u8>) {
        std::thread::scope(|s| {
            let right_side = s.spawn(|| swap(right, 0, from_right, from_left.len()));
            let got_left = swap(left, 1, from_left, from_right.len());
            (right_side.join().unwrap(), got_left)
        })
    }

    fn swap(peers: &mut [Option<Peer>], to: usize, mine: &[u8], theirs_len: usize) -> Vec<u8> {
        let abort = AtomicBool::new(false);
        let mut received = vec![0u8; theirs_len];
        exchange(
            peers,
            &ctx(&abort, Duration::from_secs(60)),
            Some((to, mine, 1)),
            Some(Incoming {
                from: to,
                len: theirs_len,
                unit: 1,
                sink: Sink::Copy(&mut received),
            }),
        )
        .unwrap();
        received
    }

    #[test]
    fn exchange_sends_and_receives_at_once_over_tcp() {
        let (a, b) = tcp_pair();
        let mut left = peers_with(1, 1, "node-b", a);
        let mut right = peers_with(0, 0, "node-a", b);
        // Larger than both sides' socket buffers together, so neither send can finish
        // before the other side receives.
        let from_left = pattern(9 << 20, 1);
        let from_right = pattern((6 << 20) + 13, 2);
        let (got_right, got_left) = swap_both(&mut left, &mut right, &from_left, &from_right);
        assert!(got_right == from_left);
        assert!(got_left == from_right);
    }

    #[test]
    fn exchange_sends_and_receives_at_once_over_shared_memory() {
        let dir = tempfile::tempdir().unwrap();
        let a_to_b = ring_path(dir.path(), "engine", 0, 1);
        let b_to_a = ring_path(dir.path(), "engine", 1, 0);
        create_inbound(&a_to_b).unwrap();
        create_inbound(&b_to_a).unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let a = ShmLink::open(&a_to_b, &b_to_a, me).unwrap();
        let b = ShmLink::open(&b_to_a, &a_to_b, me).unwrap();
        let mut left = peers_with(1, 1, "here", Box::new(a));
        let mut right = peers_with(0, 0, "here", Box::new(b));
        // Several times the ring's size each way.
        let from_left = pattern((3 << 20) + 8, 3);
        let from_right = pattern((5 << 20) + 16, 4);
        let (got_right, got_left) = swap_both(&mut left, &mut right, &from_left, &from_right);
        assert!(got_right == from_left);
        assert!(got_left == from_right);
    }

    #[test]
    fn a_sink_is_offered_whole_elements_and_reduces_in_place() {
        let (a, b) = tcp_pair();
        let mut sender = peers_with(1, 1, "node-b", a);
        let mut receiver = peers_with(0, 0, "node-a", b);
        let n = 700_000usize;
        let values: Vec<u32> = (0..n).map(|i| u32::try_from(i * 3 + 1).unwrap()).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut acc: Vec<u32> = (0..n).map(|i| u32::try_from(i).unwrap()).collect();
        let mut offered_badly = 0usize;
        std::thread::scope(|s| {
            s.spawn(|| {
                let abort = AtomicBool::new(false);
                exchange(
                    &mut sender,
                    &ctx(&abort, Duration::from_secs(60)),
                    Some((1, &bytes, 4)),
                    None,
                )
                .unwrap();
            });
            let abort = AtomicBool::new(false);
            let mut at = 0usize;
            let mut add = |chunk: &[u8]| {
                if chunk.len() % 4 != 0 {
                    offered_badly += 1;
                }
                for word in chunk.chunks_exact(4) {
                    acc[at] = acc[at].wrapping_add(u32::from_le_bytes(word.try_into().unwrap()));
                    at += 1;
                }
                chunk.len() / 4 * 4
            };
            exchange(
                &mut receiver,
                &ctx(&abort, Duration::from_secs(60)),
                None,
                Some(Incoming {
                    from: 0,
                    len: bytes.len(),
                    unit: 4,
                    sink: Sink::With(&mut add),
                }),
            )
            .unwrap();
        });
        assert_eq!(offered_badly, 0);
        // acc[i] = i + (3i + 1) = 4i + 1.
        for (i, v) in acc.iter().enumerate() {
            assert_eq!(*v, u32::try_from(4 * i + 1).unwrap(), "element {i}");
        }
    }

    #[test]
    fn consecutive_messages_keep_their_boundaries() {
        let (a, b) = tcp_pair();
        let mut sender = peers_with(1, 1, "node-b", a);
        let mut receiver = peers_with(0, 0, "node-a", b);
        let messages = [
            pattern(5, 1),
            pattern((1 << 20) + 3, 2),
            Vec::new(),
            pattern(8, 3),
        ];
        let received = std::thread::scope(|s| {
            s.spawn(|| {
                let abort = AtomicBool::new(false);
                for message in &messages {
                    exchange(
                        &mut sender,
                        &ctx(&abort, Duration::from_secs(60)),
                        Some((1, message, 1)),
                        None,
                    )
                    .unwrap();
                }
            });
            let abort = AtomicBool::new(false);
            let mut received = Vec::new();
            for message in &messages {
                let mut buffer = vec![0u8; message.len()];
                exchange(
                    &mut receiver,
                    &ctx(&abort, Duration::from_secs(60)),
                    None,
                    Some(Incoming {
                        from: 0,
                        len: message.len(),
                        unit: 1,
                        sink: Sink::Copy(&mut buffer),
                    }),
                )
                .unwrap();
                received.push(buffer);
            }
            received
        });
        assert!(received == messages);
    }

    #[test]
    fn the_deadline_on_a_silent_peer_names_its_rank_and_host() {
        let (a, _silent) = tcp_pair();
        let mut peers = peers_with(1, 5, "node-f", a);
        let abort = AtomicBool::new(false);
        let mut buffer = vec![0u8; 16];
        let started = Instant::now();
        let err = exchange(
            &mut peers,
            &ctx(&abort, Duration::from_millis(300)),
            None,
            Some(Incoming {
                from: 1,
                len: 16,
                unit: 1,
                sink: Sink::Copy(&mut buffer),
            }),
        )
        .unwrap_err();
        let waited = started.elapsed();
        let CommError::Timeout {
            op,
            rank,
            host,
            elapsed,
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!((*op, *rank, host.as_str()), ("test exchange", 5, "node-f"));
        assert!(*elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(waited < Duration::from_secs(20), "{waited:?}");
        let message = err.to_string();
        assert!(message.contains("rank 5 on node-f"), "{message}");
        assert!(message.contains("test exchange timed out"), "{message}");
    }

    #[test]
    fn a_send_that_cannot_finish_times_out_naming_the_receiver() {
        let (a, _not_reading) = tcp_pair();
        let (c, d) = tcp_pair();
        let mut peers: Vec<Option<Peer>> = vec![
            None,
            Some(Peer {
                rank: 3,
                host: "node-d".into(),
                link: a,
            }),
            Some(Peer {
                rank: 4,
                host: "node-e".into(),
                link: c,
            }),
        ];
        let mut other = peers_with(0, 0, "node-a", d);
        let abort = AtomicBool::new(false);
        // Far more than the socket buffers hold.
        let big = vec![7u8; 64 << 20];
        let err = std::thread::scope(|s| {
            // The receive from rank 4 completes; the send to rank 3 never can.
            s.spawn(|| {
                let abort = AtomicBool::new(false);
                exchange(
                    &mut other,
                    &ctx(&abort, Duration::from_secs(60)),
                    Some((0, b"done", 1)),
                    None,
                )
                .unwrap();
            });
            let mut buffer = [0u8; 4];
            exchange(
                &mut peers,
                &ctx(&abort, Duration::from_millis(300)),
                Some((1, &big, 1)),
                Some(Incoming {
                    from: 2,
                    len: 4,
                    unit: 1,
                    sink: Sink::Copy(&mut buffer),
                }),
            )
            .unwrap_err()
        });
        assert!(
            matches!(&err, CommError::Timeout { rank: 3, host, .. } if host == "node-d"),
            "{err:?}"
        );
    }

    #[test]
    fn the_abort_flag_stops_a_wait_long_before_the_deadline() {
        let (a, _silent) = tcp_pair();
        let mut peers = peers_with(1, 1, "node-b", a);
        let abort = AtomicBool::new(false);
        let started = Instant::now();
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                abort.store(true, Ordering::Relaxed);
            });
            let mut buffer = vec![0u8; 16];
            exchange(
                &mut peers,
                &ctx(&abort, Duration::from_secs(600)),
                None,
                Some(Incoming {
                    from: 1,
                    len: 16,
                    unit: 1,
                    sink: Sink::Copy(&mut buffer),
                }),
            )
        });
        assert!(matches!(result, Err(CommError::Aborted)), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn a_closed_peer_is_gone_and_every_other_gone_peer_is_named() {
        let (a, a_far) = tcp_pair();
        let (b, b_far) = tcp_pair();
        let (c, _c_far) = tcp_pair();
        let mut peers: Vec<Option<Peer>> = vec![
            None,
            Some(Peer {
                rank: 1,
                host: "node-b".into(),
                link: a,
            }),
            Some(Peer {
                rank: 2,
                host: "node-c".into(),
                link: b,
            }),
            Some(Peer {
                rank: 3,
                host: "node-d".into(),
                link: c,
            }),
        ];
        drop(a_far);
        drop(b_far);
        let abort = AtomicBool::new(false);
        let mut buffer = vec![0u8; 16];
        let err = exchange(
            &mut peers,
            &ctx(&abort, Duration::from_secs(600)),
            None,
            Some(Incoming {
                from: 1,
                len: 16,
                unit: 1,
                sink: Sink::Copy(&mut buffer),
            }),
        )
        .unwrap_err();
        let CommError::PeerGone { rank, host, detail } = &err else {
            panic!("{err:?}");
        };
        assert_eq!((*rank, host.as_str()), (1, "node-b"));
        assert!(detail.contains("also gone: rank 2 on node-c"), "{detail}");
        assert!(!detail.contains("rank 3"), "{detail}");
        assert!(
            err.to_string().contains("rank 1 on node-b is gone"),
            "{err}"
        );
    }

    #[test]
    fn sending_to_a_closed_peer_reports_it_gone() {
        let (a, far) = tcp_pair();
        let mut peers = peers_with(2, 2, "node-c", a);
        drop(far);
        let abort = AtomicBool::new(false);
        let big = vec![1u8; 32 << 20];
        let err = exchange(
            &mut peers,
            &ctx(&abort, Duration::from_secs(600)),
            Some((2, &big, 1)),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(&err, CommError::PeerGone { rank: 2, host, .. } if host == "node-c"),
            "{err:?}"
        );
    }

    #[test]
    fn empty_messages_complete_at_once_and_leave_the_link_in_step() {
        let (a, b) = tcp_pair();
        let mut left = peers_with(1, 1, "node-b", a);
        let mut right = peers_with(0, 0, "node-a", b);
        assert!(swap(&mut left, 1, &[], 0).is_empty());
        assert!(swap(&mut right, 0, &[], 0).is_empty());
        let (got_right, got_left) = swap_both(&mut left, &mut right, b"ping", b"pong");
        assert_eq!(got_right, b"ping");
        assert_eq!(got_left, b"pong");
    }

    #[test]
    fn an_exchange_with_a_rank_without_a_link_is_invalid() {
        let (a, _b) = tcp_pair();
        let mut peers = peers_with(1, 1, "node-b", a);
        let abort = AtomicBool::new(false);
        let err = exchange(
            &mut peers,
            &ctx(&abort, Duration::from_secs(5)),
            Some((3, b"data", 1)),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(&err, CommError::Invalid(text) if text.contains("no link to rank 3")),
            "{err:?}"
        );
    }
}
