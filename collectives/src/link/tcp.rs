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
        if let Ok(Some(e)) | Err(e) = self.stream.take_error() {
            return Err(e.to_string());
        }
        let mut byte = [0u8; 1];
        match self.stream.peek(&mut byte) {
            Ok(0) => Err("its connection was closed".into()),
            Ok(_) => Ok(()),
            Err(e) if would_block(&e) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
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
