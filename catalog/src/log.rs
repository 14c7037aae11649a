//! The metric log: an append-only segment file of framed, checksummed records, written by one
//! process and read by any.
//!
//! A frame is `magic "CLG1" | payload length u32 LE | CRC-32C u32 LE | kind u8 | payload`,
//! the checksum covering the kind byte and the payload. Kinds: a segment header (JSON), metric
//! names (ids assigned in order), a batch of points (rows of step, wall time and `(id, value)`
//! pairs) and events (JSON). A reader stops at a torn tail (a frame that runs past the end of
//! the file, as while it is being written) and skips a corrupt frame by searching for the next
//! magic whose frame checks out: nothing committed is lost to damage elsewhere. See
//! `docs/catalog-format.md` for the byte layout.

use cohort_proto::catalog::LogEvent;

/// Marks the start of every frame.
pub const MAGIC: [u8; 4] = *b"CLG1";
/// Bytes before the payload: magic, length, checksum, kind.
pub const HEADER: usize = 13;
/// Largest payload a reader accepts; anything longer is corruption.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// JSON segment header.
    Header = 0,
    /// Metric names: `first id u32 | count u16 | (len u16 | UTF-8)*`.
    Names = 1,
    /// Points: `rows u32 | (step i64 | wall f64 | n u16 | (id u32 | value f64)*)*`.
    Points = 2,
    /// A JSON [`LogEvent`].
    Event = 3,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            0 => Kind::Header,
            1 => Kind::Names,
            2 => Kind::Points,
            3 => Kind::Event,
            _ => return None,
        })
    }
}

/// Appends one frame of `kind` with `payload` to `out`.
pub fn push_frame(out: &mut Vec<u8>, kind: Kind, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind as u8]), payload);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
}

/// Encodes a names payload.
pub fn names_payload(first_id: u32, names: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + names.iter().map(|n| n.len() + 2).sum::<usize>());
    out.extend_from_slice(&first_id.to_le_bytes());
    out.extend_from_slice(&u16::try_from(names.len()).unwrap_or(u16::MAX).to_le_bytes());
    for name in names {
        let bytes = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// Builds a points payload row by row.
#[derive(Debug, Default)]
pub struct PointsBuilder {
    buf: Vec<u8>,
    rows: u32,
}

impl PointsBuilder {
    /// Bytes of payload so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds one row; `values` are `(id, value)`; at most 65,535 per row.
    pub fn row(&mut self, step: i64, wall: f64, values: impl ExactSizeIterator<Item = (u32, f64)>) {
        if self.buf.is_empty() {
            self.buf.extend_from_slice(&0u32.to_le_bytes());
        }
        self.rows += 1;
        self.buf.extend_from_slice(&step.to_le_bytes());
        self.buf.extend_from_slice(&wall.to_le_bytes());
        let n = values.len().min(usize::from(u16::MAX));
        self.buf
            .extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_le_bytes());
        for (id, value) in values.take(n) {
            self.buf.extend_from_slice(&id.to_le_bytes());
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
    }

    /// Seals the payload into a frame appended to `out`, and starts over.
    pub fn seal_into(&mut self, out: &mut Vec<u8>) {
        if self.rows == 0 {
            return;
        }
        self.buf[..4].copy_from_slice(&self.rows.to_le_bytes());
        push_frame(out, Kind::Points, &self.buf);
        self.buf.clear();
        self.rows = 0;
    }
}

/// What a reader meets in a segment.
#[derive(Debug)]
pub enum Item<'a> {
    /// The segment header (JSON).
    Header(&'a [u8]),
    /// Names defined from `first_id` on.
    Names {
        /// Id of the first name.
        first_id: u32,
        /// The names.
        names: Vec<String>,
    },
    /// A batch of points.
    Points(PointRows<'a>),
    /// An event.
    Event(LogEvent),
}

/// Rows of a points record, decoded lazily.
#[derive(Debug, Clone)]
pub struct PointRows<'a> {
    rest: &'a [u8],
    rows: u32,
}

/// One row: a step, its wall time, and `(id, value)` pairs.
#[derive(Debug)]
pub struct Row<'a> {
    /// Training step.
    pub step: i64,
    /// Unix seconds.
    pub wall: f64,
    pairs: &'a [u8],
}

impl Row<'_> {
    /// The `(id, value)` pairs.
    pub fn values(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.pairs.chunks_exact(12).map(|pair| {
            let (id, value) = pair.split_at(4);
            (
                u32::from_le_bytes(id.try_into().unwrap_or_default()),
                f64::from_le_bytes(value.try_into().unwrap_or_default()),
            )
        })
    }
}

fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    if bytes.len() < N {
        return None;
    }
    let (head, rest) = bytes.split_at(N);
    *bytes = rest;
    head.try_into().ok()
}

impl<'a> Iterator for PointRows<'a> {
    type Item = Row<'a>;
    fn next(&mut self) -> Option<Row<'a>> {
        if self.rows == 0 {
            return None;
        }
        self.rows -= 1;
        let step = i64::from_le_bytes(take::<8>(&mut self.rest)?);
        let wall = f64::from_le_bytes(take::<8>(&mut self.rest)?);
        let n = usize::from(u16::from_le_bytes(take::<2>(&mut self.rest)?));
        if self.rest.len() < n * 12 {
            self.rows = 0;
            return None;
        }
        let (pairs, rest) = self.rest.split_at(n * 12);
        self.rest = rest;
        Some(Row { step, wall, pairs })
    }
}

/// Validates the structure of a points payload (a checksum only proves what was written).
fn points(payload: &[u8]) -> Option<PointRows<'_>> {
    let mut rest = payload;
    let rows = u32::from_le_bytes(take::<4>(&mut rest)?);
    let mut check = PointRows { rest, rows };
    let mut seen = 0u32;
    for _ in check.by_ref() {
        seen += 1;
    }
    (seen == rows && check.rest.is_empty()).then_some(PointRows { rest, rows })
}

fn names(payload: &[u8]) -> Option<(u32, Vec<String>)> {
    let mut rest = payload;
    let first_id = u32::from_le_bytes(take::<4>(&mut rest)?);
    let count = u16::from_le_bytes(take::<2>(&mut rest)?);
    let mut out = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = usize::from(u16::from_le_bytes(take::<2>(&mut rest)?));
        if rest.len() < len {
            return None;
        }
        let (name, tail) = rest.split_at(len);
        out.push(String::from_utf8(name.to_vec()).ok()?);
        rest = tail;
    }
    rest.is_empty().then_some((first_id, out))
}

/// Damage a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Bytes `start..end` were not valid frames and were skipped; frames after them were read.
    Corrupt {
        /// First damaged byte.
        start: u64,
        /// First byte of the next valid frame.
        end: u64,
    },
    /// From `start` to the end of the data there is no complete valid frame: a torn write,
    /// or a record being written right now.
    Tail {
        /// First byte not read.
        start: u64,
        /// Bytes ignored.
        len: u64,
    },
}

/// How far a scan got.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanEnd {
    /// Offset just past the last valid frame: where the next scan resumes.
    pub committed: u64,
    /// What was skipped.
    pub damage: Vec<Damage>,
}

/// Checks the frame at the start of `bytes`; returns its kind, payload and total length.
fn frame(bytes: &[u8]) -> Result<(Kind, &[u8], usize), bool> {
    // Err(true): incomplete (could be a tail being written); Err(false): invalid.
    if bytes.len() < HEADER {
        return Err(MAGIC.starts_with(&bytes[..bytes.len().min(4)]));
    }
    if bytes[..4] != MAGIC {
        return Err(false);
    }
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(false);
    }
    if bytes.len() < HEADER + len {
        return Err(true);
    }
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let body = &bytes[12..HEADER + len];
    if crc32c::crc32c(body) != crc {
        return Err(false);
    }
    let kind = Kind::from_byte(bytes[12]).ok_or(false)?;
    Ok((kind, &bytes[HEADER..HEADER + len], HEADER + len))
}

/// Reads the frames of `data` (a segment's bytes from offset `base`, which must be a frame
/// boundary), calling `visit` for each valid record in order.
pub fn scan<'a>(data: &'a [u8], base: u64, mut visit: impl FnMut(Item<'a>)) -> ScanEnd {
    let mut pos = 0usize;
    let mut end = ScanEnd {
        committed: base,
        damage: Vec::new(),
    };
    let offset = |p: usize| base + p as u64;
    while pos < data.len() {
        match frame(&data[pos..]) {
            Ok((kind, payload, len)) => {
                let item = match kind {
                    Kind::Header => Some(Item::Header(payload)),
                    Kind::Names => {
                        names(payload).map(|(first_id, names)| Item::Names { first_id, names })
                    }
                    Kind::Points => points(payload).map(Item::Points),
                    Kind::Event => serde_json::from_slice(payload).ok().map(Item::Event),
                };
                // A frame with a good checksum but a payload this reader cannot decode (a
                // newer event type) is skipped without being called damage.
                if let Some(item) = item {
                    visit(item);
                }
                pos += len;
                end.committed = offset(pos);
            }
            Err(incomplete) => {
                // Look for the next frame that checks out.
                let mut next = pos + 1;
                let found = loop {
                    match memfind(&data[next.min(data.len())..], &MAGIC) {
                        Some(at) => {
                            let candidate = next + at;
                            if frame(&data[candidate..]).is_ok() {
                                break Some(candidate);
                            }
                            next = candidate + 1;
                        }
                        None => break None,
                    }
                };
                match found {
                    Some(next) => {
                        end.damage.push(Damage::Corrupt {
                            start: offset(pos),
                            end: offset(next),
                        });
                        pos = next;
                    }
                    None => {
                        let _ = incomplete;
                        end.damage.push(Damage::Tail {
                            start: offset(pos),
                            len: (data.len() - pos) as u64,
                        });
                        break;
                    }
                }
            }
        }
    }
    end
}

fn memfind(haystack: &[u8], needle: &[u8; 4]) -> Option<usize> {
    let mut start = 0;
    while let Some(at) = haystack[start..].iter().position(|&b| b == needle[0]) {
        let candidate = start + at;
        if haystack[candidate..].starts_with(needle) {
            return Some(candidate);
        }
        start = candidate + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        push_frame(&mut out, Kind::Header, b"{}");
        push_frame(&mut out, Kind::Names, &names_payload(0, &["loss", "acc"]));
        let mut rows = PointsBuilder::default();
        for step in 0..10 {
            rows.row(step, 1.0, [(0, step as f64), (1, 0.5)].into_iter());
        }
        rows.seal_into(&mut out);
        out
    }

    fn count_points(data: &[u8]) -> (usize, ScanEnd) {
        let mut n = 0;
        let end = scan(data, 0, |item| {
            if let Item::Points(rows) = item {
                n += rows.map(|r| r.values().count()).sum::<usize>();
            }
        });
        (n, end)
    }

    #[test]
    fn reads_back_what_was_written() {
        let data = sample();
        let (n, end) = count_points(&data);
        assert_eq!(n, 20);
        assert_eq!(end.committed, data.len() as u64);
        assert!(end.damage.is_empty());
    }

    #[test]
    fn a_torn_tail_keeps_every_complete_frame() {
        let mut data = sample();
        let full = data.len();
        let mut more = PointsBuilder::default();
        more.row(10, 1.0, [(0, 1.0)].into_iter());
        more.seal_into(&mut data);
        for cut in full..data.len() {
            let (n, end) = count_points(&data[..cut]);
            assert_eq!(n, 20, "cut at {cut}");
            assert_eq!(end.committed, full as u64);
            if cut > full {
                assert!(matches!(end.damage[..], [Damage::Tail { .. }]));
            }
        }
    }

    #[test]
    fn a_corrupt_frame_is_skipped_and_later_frames_are_read() {
        let mut data = sample();
        let second_start = data.len();
        let mut more = PointsBuilder::default();
        more.row(10, 1.0, [(0, 1.0)].into_iter());
        more.seal_into(&mut data);
        let mut third = PointsBuilder::default();
        third.row(11, 1.0, [(0, 2.0), (1, 3.0)].into_iter());
        third.seal_into(&mut data);
        // Flip a byte inside the second points frame's payload.
        data[second_start + HEADER + 5] ^= 0xff;
        let (n, end) = count_points(&data);
        assert_eq!(n, 22);
        assert!(matches!(end.damage[..], [Damage::Corrupt { .. }]));
        assert_eq!(end.committed, data.len() as u64);
    }

    #[test]
    fn garbage_yields_nothing_and_does_not_panic() {
        let garbage: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
            .collect();
        let (n, end) = count_points(&garbage);
        assert_eq!(n, 0);
        assert_eq!(end.committed, 0);
        let mut with_magic = garbage.clone();
        with_magic[100..104].copy_from_slice(&MAGIC);
        let (n, _) = count_points(&with_magic);
        assert_eq!(n, 0);
    }
}
