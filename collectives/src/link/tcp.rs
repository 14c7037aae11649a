//! TCP links: a non-blocking socket with keepalive and a user timeout short enough that a dead
//! host is noticed within seconds, and a receive buffer aligned for any element type.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use super::Link;

/// Receive buffer size, in u64 words (1 MiB): fewer, larger reads; a reduction of 1 MiB still
/// runs from cache. (32 KiB reads and writes measured 1.8-1.9x Open MPI's TCP busbw at 32 and
/// 64 MiB, 1 MiB ones 2.1-2.3x, on a 2-core machine over loopback.)
const BUFFER_WORDS: usize = 128 * 1024;

/// The most bytes one send call hands the kernel: bounded so that this rank reads between
/// writes and both directions of a full-duplex exchange progress together.
const WRITE_CHUNK: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct TcpLink {
    stream: TcpStream,
    /// Received bytes not yet consumed, in `buffer[start..filled]` (byte offsets). Kept as
    /// u64 words so any element type can be viewed in place.
    buffer: Vec<u64>,
    start: usize,
    filled: usize,
    /// The peer closed its side; what is buffered can still be consumed.
    closed: bool,
}

impl TcpLink {
    pub(crate) fn new(stream: TcpStream) -> std::io::Result<TcpLink> {
        stream.set_nodelay(true)?;
        watch_peer_host(&stream)?;
        let socket = socket2::SockRef::from(&stream);
        // Room for several writes in flight (the kernel caps it at net.core.[wr]mem_max).
        let _ = socket.set_send_buffer_size(4 << 20);
        let _ = socket.set_recv_buffer_size(4 << 20);
        stream.set_nonblocking(true)?;
        Ok(TcpLink {
            stream,
            buffer: vec![0; BUFFER_WORDS],
            start: 0,
            filled: 0,
            closed: false,
        })
    }
}

/// Makes a peer host that vanishes (power, network) show on `stream` in about four seconds:
/// by keepalive when idle, by the user timeout when data is unacknowledged.
pub(crate) fn watch_peer_host(stream: &TcpStream) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(2))
        .with_interval(Duration::from_secs(1))
        .with_retries(2);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(Duration::from_secs(4)))
}

fn closed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the connection was closed (the process exited or was killed)",
    )
}

/// Whether the process at the other end of `stream` still holds it: a pending socket error or
/// the end of the stream (seen by a peek, before any unread bytes are consumed) says it is
/// gone, and why.
pub(crate) fn stream_alive(stream: &TcpStream) -> Result<(), String> {
    if let Ok(Some(e)) | Err(e) = stream.take_error() {
        return Err(e.to_string());
    }
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(0) => Err("its connection was closed".into()),
        Ok(_) => Ok(()),
        Err(e) if would_block(&e) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

impl Link for TcpLink {
    fn try_send(&mut self, data: &[u8], _unit: usize) -> std::io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // Bounded writes keep this rank reading between them, so both directions of a
        // full-duplex exchange progress together.
        let chunk = &data[..data.len().min(WRITE_CHUNK)];
        match self.stream.write(chunk) {
            Ok(n) => Ok(n),
            Err(e) if would_block(&e) => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn try_recv(
        &mut self,
        unit: usize,
        sink: &mut dyn FnMut(&[u8]) -> usize,
    ) -> std::io::Result<usize> {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.buffer);
        if self.filled < bytes.len() && !self.closed {
            match self.stream.read(&mut bytes[self.filled..]) {
                // A peer that finished its part may close before we read all it sent.
                Ok(0) => self.closed = true,
                Ok(n) => self.filled += n,
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let whole = (self.filled - self.start) / unit * unit;
        if whole == 0 {
            if self.closed {
                return Err(closed());
            }
            return Ok(0);
        }
        // `start` is always a multiple of `unit` within a message, and the buffer is 8-aligned.
        let consumed = sink(&bytes[self.start..self.start + whole]);
        self.start += consumed;
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
        } else if self.start > bytes.len() / 2 {
            // Keep the unread tail at an aligned place for the next element type.
            let tail = self.filled - self.start;
            let offset = self.start % 8;
            bytes.copy_within(self.start..self.filled, offset);
            self.start = offset;
            self.filled = offset + tail;
        }
        Ok(consumed)
    }

    fn try_recv_direct(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        // Buffered bytes first, then straight from the socket into the destination.
        let buffered = self.filled - self.start;
        if buffered > 0 {
            let n = buffered.min(dst.len());
            let bytes: &[u8] = bytemuck::cast_slice(&self.buffer);
            dst[..n].copy_from_slice(&bytes[self.start..self.start + n]);
            self.start += n;
            if self.start == self.filled {
                self.start = 0;
                self.filled = 0;
            }
            return Ok(n);
        }
        if dst.is_empty() {
            return Ok(0);
        }
        if self.closed {
            return Err(closed());
        }
        match self.stream.read(dst) {
            Ok(0) => {
                self.closed = true;
                Err(closed())
            }
            Ok(n) => Ok(n),
            Err(e) if would_block(&e) => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn end_send(&mut self) {}

    fn end_recv(&mut self) {
        // Messages follow each other in the byte stream; realign leftover bytes of the next
        // message so typed views stay aligned.
        if self.start % 8 != 0 {
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.buffer);
            let tail = self.filled - self.start;
            bytes.copy_within(self.start..self.filled, 0);
            self.start = 0;
            self.filled = tail;
        }
    }

    fn poll_fd(&self, _writing: bool) -> Option<BorrowedFd<'_>> {
        Some(self.stream.as_fd())
    }

    fn peer_alive(&mut self) -> Result<(), String> {
        // Death shows up on the socket itself: a pending error, or the end of the stream.
        if self.closed {
            return Err("its connection was closed".into());
        }
        stream_alive(&self.stream)
    }

    fn kind(&self) -> &'static str {
        "tcp"
    }
}

/// Bytes of a message carried by one stream before the next stream takes over.
const STRIPE: usize = 1 << 20;

/// One peer over several TCP connections: each message is cut into stripes of [`STRIPE`]
/// bytes dealt round-robin to the streams, so several connections (and the NIC queues and
/// cores behind them) carry it at once. Both sides count positions from the message's start,
/// so they agree on which stream carries which bytes; each stream keeps its own order.
#[derive(Debug)]
pub(crate) struct StripedLink {
    streams: Vec<TcpLink>,
    /// Bytes of the current outgoing and incoming messages so far.
    sent: usize,
    received: usize,
}

impl StripedLink {
    /// A link over `streams`, in the order both sides numbered them; at least one.
    pub(crate) fn new(streams: Vec<TcpLink>) -> StripedLink {
        assert!(!streams.is_empty(), "a striped link needs a stream");
        StripedLink {
            streams,
            sent: 0,
            received: 0,
        }
    }

    fn stream_at(&self, position: usize) -> usize {
        (position / STRIPE) % self.streams.len()
    }
}

/// Bytes left in the stripe that `position` falls in.
fn left_in_stripe(position: usize) -> usize {
    STRIPE - position % STRIPE
}

impl Link for StripedLink {
    fn try_send(&mut self, data: &[u8], unit: usize) -> std::io::Result<usize> {
        // Up to one stripe per stream per call, in order: a full stream stops the round.
        let mut total = 0;
        for _ in 0..self.streams.len() {
            if total == data.len() {
                break;
            }
            let index = self.stream_at(self.sent);
            let room = left_in_stripe(self.sent).min(data.len() - total);
            let n = self.streams[index].try_send(&data[total..total + room], unit)?;
            self.sent += n;
            total += n;
            if n < room {
                break;
            }
        }
        Ok(total)
    }

    fn try_recv(
        &mut self,
        unit: usize,
        sink: &mut dyn FnMut(&[u8]) -> usize,
    ) -> std::io::Result<usize> {
        // One stripe per call: the caller bounds each call's bytes to what its message still
        // lacks, so the next stripe waits for the next call.
        let index = self.stream_at(self.received);
        // Stripes hold whole units: STRIPE is a multiple of every element size.
        let left = left_in_stripe(self.received);
        let n = self.streams[index].try_recv(unit, &mut |bytes: &[u8]| {
            sink(&bytes[..bytes.len().min(left)])
        })?;
        self.received += n;
        Ok(n)
    }

    fn try_recv_direct(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        let mut total = 0;
        for _ in 0..self.streams.len() {
            if total == dst.len() {
                break;
            }
            let index = self.stream_at(self.received);
            let room = left_in_stripe(self.received).min(dst.len() - total);
            let n = self.streams[index].try_recv_direct(&mut dst[total..total + room])?;
            self.received += n;
            total += n;
            if n < room {
                break;
            }
        }
        Ok(total)
    }

    fn end_send(&mut self) {
        for stream in &mut self.streams {
            stream.end_send();
        }
        self.sent = 0;
    }

    fn end_recv(&mut self) {
        for stream in &mut self.streams {
            stream.end_recv();
        }
        self.received = 0;
    }

    fn poll_fd(&self, writing: bool) -> Option<BorrowedFd<'_>> {
        let position = if writing { self.sent } else { self.received };
        self.streams[self.stream_at(position)].poll_fd(writing)
    }

    fn peer_alive(&mut self) -> Result<(), String> {
        self.streams.iter_mut().try_for_each(TcpLink::peer_alive)
    }

    fn kind(&self) -> &'static str {
        "tcp"
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Instant;

    use super::*;

    const MIB: usize = 1 << 20;

    /// Two connected sockets over loopback.
    fn sockets() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    fn links() -> (TcpLink, TcpLink) {
        let (a, b) = sockets();
        (TcpLink::new(a).unwrap(), TcpLink::new(b).unwrap())
    }

    /// `len` bytes that differ with `seed` and repeat only every 251 bytes.
    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len)
            .map(|i| u8::try_from((i * 13 + seed) % 251).unwrap())
            .collect()
    }

    /// Runs `step` until it says it is done; fails the test after 60 s.
    fn until(mut step: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !step() {
            assert!(Instant::now() < deadline, "no progress for 60 s");
            std::thread::yield_now();
        }
    }

    fn send_all(link: &mut impl Link, data: &[u8]) {
        let mut sent = 0;
        until(|| {
            sent += link.try_send(&data[sent..], 1).unwrap();
            sent == data.len()
        });
        link.end_send();
    }

    fn recv_direct(link: &mut impl Link, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut got = 0;
        until(|| {
            got += link.try_recv_direct(&mut out[got..]).unwrap();
            got == len
        });
        link.end_recv();
        out
    }

    /// Receives `len` bytes through the sink, checking that every offer is whole `unit`s
    /// at an address aligned for them.
    fn recv_units(link: &mut impl Link, len: usize, unit: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        until(|| {
            let want = len - out.len();
            link.try_recv(unit, &mut |bytes: &[u8]| {
                assert_eq!(bytes.len() % unit, 0, "{} bytes offered", bytes.len());
                assert_eq!(bytes.as_ptr().addr() % unit, 0, "misaligned offer");
                let take = bytes.len().min(want);
                out.extend_from_slice(&bytes[..take]);
                take
            })
            .unwrap();
            out.len() == len
        });
        link.end_recv();
        out
    }

    /// Which of `streams` carries byte `position` of a message: stripes of 1 MiB dealt in
    /// turn from the message's first byte.
    fn stream_of(position: usize, streams: usize) -> usize {
        (position / MIB) % streams
    }

    /// The bytes each stream carries for `messages` sent one after the other.
    fn per_stream(messages: &[&[u8]], streams: usize) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new(); streams];
        for message in messages {
            for (position, byte) in message.iter().enumerate() {
                out[stream_of(position, streams)].push(*byte);
            }
        }
        out
    }

    #[test]
    fn a_message_of_several_megabytes_arrives_intact() {
        let (mut a, mut b) = links();
        let message = pattern(5 * MIB + 123, 1);
        let received = std::thread::scope(|s| {
            s.spawn(|| send_all(&mut a, &message));
            recv_direct(&mut b, message.len())
        });
        assert!(received == message);
    }

    #[test]
    fn both_directions_progress_at_once() {
        let (mut a, mut b) = links();
        let from_a = pattern(6 * MIB + 5, 2);
        let from_b = pattern(4 * MIB + 9, 3);
        // Each side alternates sending and receiving in one thread, as a rank does.
        let side = |link: &mut TcpLink, out: &[u8], in_len: usize| {
            let mut sent = 0;
            let mut received = vec![0u8; in_len];
            let mut got = 0;
            until(|| {
                if sent < out.len() {
                    sent += link.try_send(&out[sent..], 1).unwrap();
                }
                if got < in_len {
                    got += link.try_recv_direct(&mut received[got..]).unwrap();
                }
                sent == out.len() && got == in_len
            });
            received
        };
        let (at_b, at_a) = std::thread::scope(|s| {
            let at_b = s.spawn(|| side(&mut b, &from_b, from_a.len()));
            let at_a = side(&mut a, &from_a, from_b.len());
            (at_b.join().unwrap(), at_a)
        });
        assert!(at_b == from_a);
        assert!(at_a == from_b);
    }

    #[test]
    fn typed_receives_are_offered_whole_aligned_elements() {
        let (mut a, mut b) = links();
        let values: Vec<f64> = (0..(3 * MIB / 8 + 7))
            .map(|i| i as f64 * 0.5 - 3.0)
            .collect();
        let message: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let received = std::thread::scope(|s| {
            s.spawn(|| send_all(&mut a, &message));
            recv_units(&mut b, message.len(), 8)
        });
        let decoded: Vec<f64> = received
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(decoded, values);
    }

    #[test]
    fn a_partial_element_waits_for_its_remaining_bytes() {
        let (mut raw, b) = sockets();
        let mut b = TcpLink::new(b).unwrap();
        let bytes: Vec<u8> = (1..=16).collect();
        raw.write_all(&bytes[..13]).unwrap();
        let mut offered = Vec::new();
        let take = |link: &mut TcpLink, offered: &mut Vec<Vec<u8>>| {
            link.try_recv(8, &mut |chunk: &[u8]| {
                offered.push(chunk.to_vec());
                chunk.len()
            })
            .unwrap()
        };
        until(|| take(&mut b, &mut offered) > 0);
        assert_eq!(offered, [bytes[..8].to_vec()]);
        // Five bytes wait: no offer however often it is asked.
        for _ in 0..50 {
            assert_eq!(take(&mut b, &mut offered), 0);
            std::thread::sleep(Duration::from_millis(1));
        }
        raw.write_all(&bytes[13..]).unwrap();
        until(|| take(&mut b, &mut offered) > 0);
        assert_eq!(offered, [bytes[..8].to_vec(), bytes[8..].to_vec()]);
    }

    #[test]
    fn a_message_after_an_odd_length_one_is_offered_aligned() {
        let (mut raw, b) = sockets();
        let first = [9u8, 8, 7, 6, 5];
        let second = [1.5f64, -2.25];
        let mut both = first.to_vec();
        both.extend(second.iter().flat_map(|v| v.to_le_bytes()));
        raw.write_all(&both).unwrap();
        // Both messages are in the socket before the link reads: one read takes them.
        let mut peeked = [0u8; 21];
        until(|| b.peek(&mut peeked).unwrap() == both.len());
        let mut b = TcpLink::new(b).unwrap();
        assert_eq!(recv_units(&mut b, 5, 1), first);
        let bytes = recv_units(&mut b, 16, 8);
        let values: Vec<f64> = bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(values, second);
    }

    #[test]
    fn a_closed_peer_is_detected_after_its_last_bytes_are_read() {
        let (mut raw, b) = sockets();
        let mut b = TcpLink::new(b).unwrap();
        assert_eq!(b.peer_alive(), Ok(()));
        raw.write_all(b"last words").unwrap();
        drop(raw);
        assert_eq!(recv_units(&mut b, 10, 1), b"last words");
        let mut error = None;
        until(|| {
            match b.try_recv(1, &mut |bytes: &[u8]| bytes.len()) {
                Ok(n) => assert_eq!(n, 0),
                Err(e) => error = Some(e),
            }
            error.is_some()
        });
        assert_eq!(error.unwrap().kind(), std::io::ErrorKind::UnexpectedEof);
        let why = b.peer_alive().unwrap_err();
        assert!(why.contains("closed"), "{why}");
    }

    #[test]
    fn a_direct_receive_from_a_closed_peer_fails() {
        let (raw, b) = sockets();
        let mut b = TcpLink::new(b).unwrap();
        drop(raw);
        let mut dst = [0u8; 4];
        let mut error = None;
        until(|| {
            match b.try_recv_direct(&mut dst) {
                Ok(n) => assert_eq!(n, 0),
                Err(e) => error = Some(e),
            }
            error.is_some()
        });
        assert_eq!(error.unwrap().kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(b.peer_alive().is_err());
    }

    #[test]
    fn a_silent_connected_peer_is_alive() {
        let (_raw, b) = sockets();
        let mut b = TcpLink::new(b).unwrap();
        for _ in 0..3 {
            assert_eq!(b.peer_alive(), Ok(()));
            assert_eq!(b.try_recv_direct(&mut [0u8; 8]).unwrap(), 0);
        }
        assert_eq!(b.kind(), "tcp");
    }

    #[test]
    fn sending_to_a_closed_peer_fails() {
        let (mut a, b) = links();
        drop(b);
        let data = vec![0u8; MIB];
        let mut error = None;
        until(|| {
            if let Err(e) = a.try_send(&data, 1) {
                error = Some(e);
            }
            error.is_some()
        });
        let kind = error.unwrap().kind();
        assert!(
            matches!(
                kind,
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{kind:?}"
        );
        assert!(a.peer_alive().is_err());
    }

    fn striped_pair(streams: usize) -> (StripedLink, StripedLink) {
        let (near, far): (Vec<TcpLink>, Vec<TcpLink>) = (0..streams).map(|_| links()).unzip();
        (StripedLink::new(near), StripedLink::new(far))
    }

    #[test]
    fn striped_messages_arrive_intact_in_both_directions() {
        let (mut a, mut b) = striped_pair(3);
        let first = pattern(7 * MIB + 5, 4);
        let second = pattern(MIB + MIB / 2, 5);
        let reply = pattern(2 * MIB + 8, 6);
        let (at_b, at_a) = std::thread::scope(|s| {
            let at_b = s.spawn(|| {
                let one = recv_direct(&mut b, first.len());
                let two = recv_units(&mut b, second.len(), 4);
                send_all(&mut b, &reply);
                (one, two)
            });
            send_all(&mut a, &first);
            send_all(&mut a, &second);
            let at_a = recv_units(&mut a, reply.len(), 8);
            (at_b.join().unwrap(), at_a)
        });
        assert!(at_b.0 == first);
        assert!(at_b.1 == second);
        assert!(at_a == reply);
    }

    #[test]
    fn each_stream_carries_the_stripes_counted_from_each_messages_start() {
        let (near, far): (Vec<TcpLink>, Vec<TcpStream>) = (0..3)
            .map(|_| {
                let (a, b) = sockets();
                (TcpLink::new(a).unwrap(), b)
            })
            .unzip();
        let mut sender = StripedLink::new(near);
        let first = pattern(2 * MIB + MIB / 2, 7);
        let second = pattern(MIB + MIB / 2 + 1, 8);
        let expected = per_stream(&[&first, &second], 3);
        // Hand count: stream 0 gets 1 MiB of each message, stream 1 the second MiB of the
        // first and the rest of the second, stream 2 the last half MiB of the first.
        let lengths: Vec<usize> = expected.iter().map(Vec::len).collect();
        assert_eq!(lengths, [2 * MIB, MIB + MIB / 2 + 1, MIB / 2]);
        let carried: Vec<Vec<u8>> = std::thread::scope(|s| {
            let readers: Vec<_> = far
                .into_iter()
                .map(|mut stream| {
                    s.spawn(move || {
                        let mut all = Vec::new();
                        stream.read_to_end(&mut all).unwrap();
                        all
                    })
                })
                .collect();
            send_all(&mut sender, &first);
            send_all(&mut sender, &second);
            drop(sender);
            readers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for (index, (got, want)) in carried.iter().zip(&expected).enumerate() {
            assert!(
                got == want,
                "stream {index}: {} bytes, {} expected",
                got.len(),
                want.len()
            );
        }
    }

    #[test]
    fn a_striped_receiver_reassembles_stripes_written_to_each_stream() {
        let (near, far): (Vec<TcpStream>, Vec<TcpLink>) = (0..3)
            .map(|_| {
                let (a, b) = sockets();
                (a, TcpLink::new(b).unwrap())
            })
            .unzip();
        let mut receiver = StripedLink::new(far);
        let first = pattern(4 * MIB + 3, 9);
        let second = pattern(2 * MIB + 16, 10);
        let parts = per_stream(&[&first, &second], 3);
        let (one, two) = std::thread::scope(|s| {
            // Each stream written by its own writer, last stream first.
            for (mut stream, part) in near.into_iter().zip(&parts).rev() {
                s.spawn(move || stream.write_all(part).unwrap());
            }
            let one = recv_direct(&mut receiver, first.len());
            let two = recv_units(&mut receiver, second.len(), 8);
            (one, two)
        });
        assert!(one == first);
        assert!(two == second);
    }

    #[test]
    fn a_striped_link_is_gone_when_any_of_its_streams_closes() {
        let (near, mut far): (Vec<TcpLink>, Vec<TcpStream>) = (0..3)
            .map(|_| {
                let (a, b) = sockets();
                (TcpLink::new(a).unwrap(), b)
            })
            .unzip();
        let mut link = StripedLink::new(near);
        assert_eq!(link.peer_alive(), Ok(()));
        drop(far.remove(1));
        let mut why = None;
        until(|| {
            why = link.peer_alive().err();
            why.is_some()
        });
        assert!(why.unwrap().contains("closed"));
        assert_eq!(link.kind(), "tcp");
    }
}
