//! Shared-memory links between ranks on one host: one single-producer single-consumer ring per
//! direction, in a file under `/dev/shm` that both processes map.
//!
//! This is the one module of the crate with unsafe code: it wraps `mmap` and accesses the
//! mapping through raw pointers, because the other process writes to it. Layout of a ring file:
//! a 4 KiB header (magic at 0, the writer's position at 128 and the reader's at 256, each
//! on its own cache line, as monotonically increasing byte counts) followed by `capacity` data
//! bytes. The writer owns `head`, the reader owns `tail`; each publishes with release and reads
//! the other's with acquire, so data written before a `head` store is visible after the load.
//! Messages start at multiples of 8 and elements are at most 8 bytes, so an element never
//! straddles the end of the ring and every view is aligned for its type.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

use super::Link;

const MAGIC: u64 = 0x434f_484f_5254_5231; // "COHORTR1"
const HEADER: usize = 4096;
const HEAD_OFFSET: usize = 128;
const TAIL_OFFSET: usize = 256;

/// Bytes of data in each ring. Small enough to stay in the shared cache while the writer fills
/// one part and the reader drains another, so large messages cross through the cache rather
/// than through memory; large enough to hide scheduling jitter.
pub(crate) const RING_CAPACITY: usize = 1 << 20;

/// The most bytes one call moves: the pipelining grain, so the reader starts on a chunk while
/// the writer fills the next.
const CHUNK: usize = 128 << 10;

/// One mapped ring.
#[derive(Debug)]
struct Ring {
    map: MmapMut,
    capacity: usize,
}

impl Ring {
    fn create(path: &Path, capacity: usize) -> std::io::Result<Ring> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len((HEADER + capacity) as u64)?;
        let ring = Ring::map(&file, capacity)?;
        ring.word(0).store(MAGIC, Ordering::Release);
        Ok(ring)
    }

    fn open(path: &Path, capacity: usize) -> std::io::Result<Ring> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        if len != (HEADER + capacity) as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} has {len} bytes, not a ring", path.display()),
            ));
        }
        let ring = Ring::map(&file, capacity)?;
        if ring.word(0).load(Ordering::Acquire) != MAGIC {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a Cohort ring", path.display()),
            ));
        }
        Ok(ring)
    }

    fn map(file: &File, capacity: usize) -> std::io::Result<Ring> {
        // SAFETY: the file is a fresh or checked ring file of exactly HEADER + capacity bytes
        // that only Cohort ranks of this job map; nobody truncates it while mapped (it is
        // unlinked, never resized, after every peer has opened it). Concurrent modification by
        // the other process is the point, and this module only touches the mapping through
        // atomics (header) and through byte ranges the ring protocol hands to one side at a
        // time (data).
        let map = unsafe { MmapMut::map_mut(file)? };
        Ok(Ring { map, capacity })
    }

    /// The 8-byte header word at `offset`.
    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= HEADER);
        // SAFETY: the mapping is page-aligned and at least HEADER bytes long, so `offset` (a
        // multiple of 8 below HEADER) is in bounds and aligned for AtomicU64; the reference
        // lives no longer than `self`, which owns the mapping; AtomicU64 has the layout of
        // u64 and every bit pattern is valid.
        unsafe { &*self.map.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: HEADER is within the mapping (checked at open/create).
        unsafe { self.map.as_ptr().add(HEADER).cast_mut() }
    }
}

/// A link made of two rings: one this rank writes (the peer's inbound ring) and one it reads
/// (its own inbound ring from that peer).
#[derive(Debug)]
pub(crate) struct ShmLink {
    outbound: Ring,
    inbound: Ring,
    /// Local copies of this side's own counters (the shared ones are only ever written by us).
    head: u64,
    tail: u64,
    peer_pid: i32,
}

/// The file of the ring that carries data from rank `from` to rank `to`.
pub(crate) fn ring_path(dir: &Path, tag: &str, from: u32, to: u32) -> PathBuf {
    dir.join(format!("cohort-{tag}-{from}-{to}"))
}

/// Creates the ring this rank will read from a peer.
pub(crate) fn create_inbound(path: &Path) -> std::io::Result<()> {
    Ring::create(path, RING_CAPACITY).map(drop)
}

impl ShmLink {
    /// Opens the two rings of a pair once both exist.
    pub(crate) fn open(outbound: &Path, inbound: &Path, peer_pid: i32) -> std::io::Result<ShmLink> {
        let outbound = Ring::open(outbound, RING_CAPACITY)?;
        let inbound = Ring::open(inbound, RING_CAPACITY)?;
        let head = outbound.word(HEAD_OFFSET).load(Ordering::Acquire);
        let tail = inbound.word(TAIL_OFFSET).load(Ordering::Acquire);
        Ok(ShmLink {
            outbound,
            inbound,
            head,
            tail,
            peer_pid,
        })
    }
}

fn align8(value: u64) -> u64 {
    (value + 7) & !7
}

impl Link for ShmLink {
    fn try_send(&mut self, data: &[u8], unit: usize) -> std::io::Result<usize> {
        let ring = &self.outbound;
        let tail = ring.word(TAIL_OFFSET).load(Ordering::Acquire);
        let used = usize::try_from(self.head.saturating_sub(tail)).unwrap_or(usize::MAX);
        let free = ring.capacity.saturating_sub(used);
        let offset = usize::try_from(self.head).unwrap_or(0) % ring.capacity;
        let contiguous = ring.capacity - offset;
        let n = data.len().min(free).min(contiguous).min(CHUNK) / unit * unit;
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: [offset, offset + n) lies inside the data area (n <= contiguous) and inside
        // the free part of the ring (n <= free), which the reader does not touch until `head`
        // is published below; `data` is a distinct allocation of at least n bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), ring.data().add(offset), n);
        }
        self.head += n as u64;
        ring.word(HEAD_OFFSET).store(self.head, Ordering::Release);
        Ok(n)
    }

    fn try_recv(
        &mut self,
        unit: usize,
        sink: &mut dyn FnMut(&[u8]) -> usize,
    ) -> std::io::Result<usize> {
        let ring = &self.inbound;
        let head = ring.word(HEAD_OFFSET).load(Ordering::Acquire);
        let available = usize::try_from(head.saturating_sub(self.tail)).unwrap_or(0);
        let offset = usize::try_from(self.tail).unwrap_or(0) % ring.capacity;
        let contiguous = ring.capacity - offset;
        let n = available.min(contiguous).min(CHUNK) / unit * unit;
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: [offset, offset + n) is inside the data area and was published by the
        // writer's release store of `head` (acquired above); the writer does not reuse it until
        // `tail` moves past it, which happens only after the sink returns. The slice does not
        // outlive this call.
        let readable = unsafe { std::slice::from_raw_parts(ring.data().add(offset), n) };
        let consumed = sink(readable).min(n);
        self.tail += consumed as u64;
        ring.word(TAIL_OFFSET).store(self.tail, Ordering::Release);
        Ok(consumed)
    }

    fn end_send(&mut self) {
        self.head = align8(self.head);
        self.outbound
            .word(HEAD_OFFSET)
            .store(self.head, Ordering::Release);
    }

    fn end_recv(&mut self) {
        self.tail = align8(self.tail);
        self.inbound
            .word(TAIL_OFFSET)
            .store(self.tail, Ordering::Release);
    }

    fn poll_fd(&self, _writing: bool) -> Option<BorrowedFd<'_>> {
        None
    }

    fn peer_alive(&mut self) -> Result<(), String> {
        process_alive(self.peer_pid)
    }

    fn kind(&self) -> &'static str {
        "shm"
    }
}

/// Whether a process on this host is alive: it exists and is not a zombie.
pub(crate) fn process_alive(pid: i32) -> Result<(), String> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the command name, which is in parentheses and may contain
            // spaces.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            match state {
                Some('Z' | 'X') => Err(format!("process {pid} exited")),
                _ => Ok(()),
            }
        }
        Err(_) => Err(format!("process {pid} no longer exists")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_cross_a_ring_in_order_with_wraparound() {
        let dir = tempfile::tempdir().unwrap();
        let a_to_b = ring_path(dir.path(), "t", 0, 1);
        let b_to_a = ring_path(dir.path(), "t", 1, 0);
        create_inbound(&a_to_b).unwrap();
        create_inbound(&b_to_a).unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let mut a = ShmLink::open(&a_to_b, &b_to_a, me).unwrap();
        let mut b = ShmLink::open(&b_to_a, &a_to_b, me).unwrap();
        let message: Vec<u8> = (0..RING_CAPACITY * 3 + 5)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let mut sent = 0;
        let mut received = Vec::new();
        while received.len() < message.len() {
            sent += a.try_send(&message[sent..], 1).unwrap();
            b.try_recv(1, &mut |bytes| {
                received.extend_from_slice(bytes);
                bytes.len()
            })
            .unwrap();
        }
        a.end_send();
        b.end_recv();
        assert!(received == message);
        assert!(a.peer_alive().is_ok());
        assert!(process_alive(i32::MAX).is_err());
    }
}
