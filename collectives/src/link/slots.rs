//! The slot protocol of one-sided transports: each side owns a ring of equal receive slots;
//! the sender writes a message's chunks (at most one slot each, never two messages in one
//! slot) into the peer's slots in turn, each write carrying an immediate value with its
//! length, and may only write into a slot the receiver has handed back (credits). The
//! receiver hands slots back in batches, as an immediate of their own.
//!
//! This is how RDMA write with immediate carries data (the NIC writes the slot, the
//! immediate's completion says it is there); the chunking, the credits and the ordering live
//! here, apart from any wire, so that they run and are tested over TCP ([`TcpWire`],
//! `COHORT_TRANSPORT=tcp-slots`) on machines without a verbs device.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};

use super::Link;

/// Immediates with this bit return credits (the count in the low bits); others are a data
/// chunk's length.
const CREDIT: u32 = 1 << 31;

/// What carries the slot protocol: one-sided writes into the peer's slots, each announced by
/// an immediate, delivered in the order they were posted.
pub(crate) trait Wire: Send + std::fmt::Debug {
    /// Starts writing `data` into the peer's slot `slot` with immediate `imm`, or, with empty
    /// `data`, sends the immediate alone. `Ok(false)`: the wire cannot take it now.
    fn try_post(&mut self, slot: usize, data: &[u8], imm: u32) -> std::io::Result<bool>;
    /// Moves posted writes along; the next immediate that arrived, in order.
    fn try_arrival(&mut self) -> std::io::Result<Option<u32>>;
    /// A local slot's bytes (valid once its immediate arrived, until it is handed back).
    fn slot(&self, index: usize) -> &[u8];
    /// A descriptor that becomes ready when the wire can progress, if any.
    fn poll_fd(&self) -> Option<BorrowedFd<'_>>;
    /// `Err` with a reason when the peer is known to be gone.
    fn peer_alive(&mut self) -> Result<(), String>;
    /// The wire's name (`tcp-slots`, `rdma`).
    fn kind(&self) -> &'static str;
    /// The wire's name and what carries it.
    fn route(&self) -> String {
        self.kind().to_owned()
    }
}

/// A [`Link`] over a [`Wire`]: the slot protocol.
#[derive(Debug)]
pub(crate) struct SlotLink<W: Wire> {
    wire: W,
    slots: usize,
    slot_size: usize,
    /// Data chunks posted; the next goes to slot `posted % slots`.
    posted: u64,
    /// Slots of the peer this side may write.
    credits: usize,
    /// Lengths of arrived chunks not yet consumed, oldest first; the oldest is in slot
    /// `consumed % slots`.
    arrived: VecDeque<usize>,
    consumed: u64,
    /// Bytes of the oldest arrived chunk already consumed.
    offset: usize,
    /// Slots consumed and not yet handed back.
    to_return: usize,
}

impl<W: Wire> SlotLink<W> {
    /// A link over `wire`, whose peer has `slots` slots of `slot_size` bytes (a multiple of 8)
    /// as this side has.
    pub(crate) fn new(wire: W, slots: usize, slot_size: usize) -> SlotLink<W> {
        assert!(slots >= 2 && slot_size >= 8 && slot_size % 8 == 0);
        SlotLink {
            wire,
            slots,
            slot_size,
            posted: 0,
            credits: slots,
            arrived: VecDeque::new(),
            consumed: 0,
            offset: 0,
            to_return: 0,
        }
    }

    /// Takes every immediate that arrived: credits back, or chunks to read.
    fn pump(&mut self) -> std::io::Result<()> {
        while let Some(imm) = self.wire.try_arrival()? {
            if imm & CREDIT != 0 {
                self.credits += (imm & !CREDIT) as usize;
                if self.credits > self.slots {
                    return Err(protocol("the peer returned more slots than it was given"));
                }
            } else {
                let len = imm as usize;
                if len > self.slot_size || self.arrived.len() >= self.slots {
                    return Err(protocol("the peer wrote past its credits"));
                }
                self.arrived.push_back(len);
            }
        }
        Ok(())
    }

    /// Hands consumed slots back once half the ring is consumed (or all that is, when the
    /// ring is small), so the sender rarely waits and credits cost few messages.
    fn return_slots(&mut self) -> std::io::Result<()> {
        if self.to_return > 0 && self.to_return * 2 >= self.slots {
            let count = u32::try_from(self.to_return).unwrap_or(u32::MAX >> 1);
            if self.wire.try_post(0, &[], CREDIT | count)? {
                self.to_return = 0;
            }
        }
        Ok(())
    }

    /// Marks `n` more bytes of the oldest chunk consumed.
    fn consume(&mut self, n: usize) {
        self.offset += n;
        if self.arrived.front().is_some_and(|&len| self.offset == len) {
            self.arrived.pop_front();
            self.consumed += 1;
            self.offset = 0;
            self.to_return += 1;
        }
    }

    fn current_slot(&self) -> usize {
        usize::try_from(self.consumed % self.slots as u64).unwrap_or(0)
    }
}

fn protocol(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

impl<W: Wire> Link for SlotLink<W> {
    fn try_send(&mut self, data: &[u8], _unit: usize) -> std::io::Result<usize> {
        self.pump()?;
        self.return_slots()?;
        let mut total = 0;
        while total < data.len() && self.credits > 0 {
            // Slots hold whole elements: the slot size is a multiple of every element size.
            let chunk = &data[total..data.len().min(total + self.slot_size)];
            let slot = usize::try_from(self.posted % self.slots as u64).unwrap_or(0);
            let imm = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            if !self.wire.try_post(slot, chunk, imm)? {
                break;
            }
            self.posted += 1;
            self.credits -= 1;
            total += chunk.len();
        }
        Ok(total)
    }

    fn try_recv(
        &mut self,
        _unit: usize,
        sink: &mut dyn FnMut(&[u8]) -> usize,
    ) -> std::io::Result<usize> {
        self.pump()?;
        let Some(&len) = self.arrived.front() else {
            self.return_slots()?;
            return Ok(0);
        };
        let bytes = &self.wire.slot(self.current_slot())[self.offset..len];
        let n = sink(bytes);
        self.consume(n);
        self.return_slots()?;
        Ok(n)
    }

    fn try_recv_direct(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        self.pump()?;
        let Some(&len) = self.arrived.front() else {
            self.return_slots()?;
            return Ok(0);
        };
        let bytes = &self.wire.slot(self.current_slot())[self.offset..len];
        let n = bytes.len().min(dst.len());
        dst[..n].copy_from_slice(&bytes[..n]);
        self.consume(n);
        self.return_slots()?;
        Ok(n)
    }

    fn end_send(&mut self) {}

    fn end_recv(&mut self) {}

    fn poll_fd(&self, _writing: bool) -> Option<BorrowedFd<'_>> {
        self.wire.poll_fd()
    }

    fn peer_alive(&mut self) -> Result<(), String> {
        self.wire.peer_alive()
    }

    fn kind(&self) -> &'static str {
        self.wire.kind()
    }

    fn route(&self) -> String {
        self.wire.route()
    }
}

/// The slot protocol's wire over a TCP connection: each post is a frame (immediate, length,
/// bytes) written into the peer's slot on arrival. It stands in for RDMA where there is no
/// verbs device, so the protocol above runs in tests everywhere.
#[derive(Debug)]
pub(crate) struct TcpWire {
    stream: TcpStream,
    /// Local slots, as u64 words so any element type can be viewed in place.
    slots: Vec<Vec<u64>>,
    slot_size: usize,
    /// Frames posted and not yet written, from `out_start`.
    out: Vec<u8>,
    out_start: usize,
    /// The frame being read: its header bytes so far, then its payload into its slot.
    header: [u8; 8],
    header_len: usize,
    payload: Option<(usize, usize, usize)>, // (slot, length, received)
    /// Data frames received; the next goes to slot `data_frames % slots`.
    data_frames: u64,
    arrivals: VecDeque<u32>,
    closed: bool,
}

impl TcpWire {
    pub(crate) fn new(
        stream: TcpStream,
        slots: usize,
        slot_size: usize,
    ) -> std::io::Result<TcpWire> {
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(TcpWire {
            stream,
            slots: (0..slots).map(|_| vec![0u64; slot_size / 8]).collect(),
            slot_size,
            out: Vec::new(),
            out_start: 0,
            header: [0; 8],
            header_len: 0,
            payload: None,
            data_frames: 0,
            arrivals: VecDeque::new(),
            closed: false,
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        while self.out_start < self.out.len() {
            match self.stream.write(&self.out[self.out_start..]) {
                Ok(n) => self.out_start += n,
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
        }
        Ok(())
    }

    /// Reads what the socket has, completing frames into slots and arrivals.
    fn fill(&mut self) -> std::io::Result<()> {
        loop {
            if let Some((slot, len, got)) = self.payload {
                if got == len {
                    self.payload = None;
                    self.arrivals.push_back(u32::from_le_bytes(
                        self.header[..4].try_into().unwrap_or_default(),
                    ));
                    self.header_len = 0;
                    continue;
                }
                let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.slots[slot]);
                match self.stream.read(&mut bytes[got..len]) {
                    Ok(0) => return self.eof(),
                    Ok(n) => self.payload = Some((slot, len, got + n)),
                    Err(e) if would_block(&e) => return Ok(()),
                    Err(e) => return Err(e),
                }
            } else {
                if self.header_len < 8 {
                    match self.stream.read(&mut self.header[self.header_len..]) {
                        Ok(0) => return self.eof(),
                        Ok(n) => self.header_len += n,
                        Err(e) if would_block(&e) => return Ok(()),
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                let imm = u32::from_le_bytes(self.header[..4].try_into().unwrap_or_default());
                let len = u32::from_le_bytes(self.header[4..].try_into().unwrap_or_default());
                let len = len as usize;
                if imm & CREDIT != 0 {
                    if len != 0 {
                        return Err(protocol("a credit frame with data"));
                    }
                    self.arrivals.push_back(imm);
                    self.header_len = 0;
                    continue;
                }
                if len > self.slot_size {
                    return Err(protocol("a frame larger than a slot"));
                }
                let slot = usize::try_from(self.data_frames % self.slots.len() as u64).unwrap_or(0);
                self.data_frames += 1;
                self.payload = Some((slot, len, 0));
            }
        }
    }

    fn eof(&mut self) -> std::io::Result<()> {
        self.closed = true;
        Ok(())
    }
}

/// How long closing waits for queued frames to leave and for the peer to close its side.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for TcpWire {
    /// Closes gracefully: frames still queued are written (an operation completes once its
    /// frames are queued), then the peer's last frames (credits this side no longer needs)
    /// are read until it closes too, so that closing never resets a connection whose peer is
    /// still reading what this side sent.
    fn drop(&mut self) {
        let until = std::time::Instant::now() + CLOSE_GRACE;
        while self.out_start < self.out.len() && std::time::Instant::now() < until {
            if self.flush().is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 4096];
        while std::time::Instant::now() < until {
            match self.stream.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if would_block(&e) => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(_) => return,
            }
        }
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

impl Wire for TcpWire {
    fn try_post(&mut self, _slot: usize, data: &[u8], imm: u32) -> std::io::Result<bool> {
        self.flush()?;
        // Bounded: what is queued waits for the socket, so do not queue more than a slot.
        if self.out.len() - self.out_start > self.slot_size {
            return Ok(false);
        }
        self.out.extend_from_slice(&imm.to_le_bytes());
        self.out
            .extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
        self.out.extend_from_slice(data);
        self.flush()?;
        Ok(true)
    }

    fn try_arrival(&mut self) -> std::io::Result<Option<u32>> {
        self.flush()?;
        if self.arrivals.is_empty() && !self.closed {
            self.fill()?;
        }
        // A closed connection shows in `peer_alive`: a peer that finished may close before
        // this side took all it sent.
        Ok(self.arrivals.pop_front())
    }

    fn slot(&self, index: usize) -> &[u8] {
        bytemuck::cast_slice(&self.slots[index])
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.stream.as_fd())
    }

    fn peer_alive(&mut self) -> Result<(), String> {
        // Death shows up on the socket itself: a pending error, or the end of the stream
        // (which a peek sees before the frames are read, as on a plain TCP link).
        if self.closed {
            return Err("its connection was closed".into());
        }
        super::tcp::stream_alive(&self.stream)
    }

    fn kind(&self) -> &'static str {
        "tcp-slots"
    }
}
