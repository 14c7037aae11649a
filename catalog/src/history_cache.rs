//! The history of one metric of a finished trial in one file, so that reading it reads that
//! metric's points and nothing else.
//!
//! Like the index it is a cache: `ROOT/index/<experiment dir>.history/<trial dir>/<metric>`,
//! written by the first query of that history after the trial ended (so only histories
//! someone reads take space), valid only while every log segment of the trial has the size
//! and modification time it records (one `stat` each), checked with CRC-32C, ignored when it
//! does not match or is damaged, and deleting it loses nothing.
//!
//! Layout (little-endian): `COHHST01`, header length (u32), header, CRC-32C of the header
//! (u32), then the points. The header holds the segments (name, size, mtime in ns), the
//! metric's name, the point count and the CRC-32C of the points. A point is step (i64),
//! value (f64), wall (f64).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One point of a metric's history.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Point {
    /// Training step.
    pub step: i64,
    /// The value.
    #[serde(with = "cohort_proto::catalog::float_text")]
    pub value: f64,
    /// Unix seconds.
    pub wall: f64,
}

const MAGIC: &[u8; 8] = b"COHHST01";
const POINT_BYTES: usize = 24;
/// Shorter histories are read from the logs each time (cheap enough).
pub(crate) const MIN_POINTS: usize = 256;

/// What a cache was built from: one segment's name, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentKey {
    name: String,
    size: u64,
    mtime_ns: i64,
}

/// Where the cache of `metric` of the trial in `trial_dir` lives (`None` outside a catalog's
/// layout). The metric's name is kept readable; other bytes are written `%XX`.
pub(crate) fn cache_path(trial_dir: &Path, metric: &str) -> Option<PathBuf> {
    let trial = trial_dir.file_name()?;
    let experiment_dir = trial_dir.parent()?.parent()?;
    let experiments = experiment_dir.parent()?;
    if experiments.file_name()? != "experiments" {
        return None;
    }
    let mut name = experiment_dir.file_name()?.to_os_string();
    name.push(".history");
    let mut file = String::with_capacity(metric.len());
    for (i, byte) in metric.bytes().enumerate() {
        if byte.is_ascii_alphanumeric() || b"_-".contains(&byte) || (byte == b'.' && i > 0) {
            file.push(char::from(byte));
        } else {
            file.push_str(&format!("%{byte:02X}"));
        }
    }
    if file.is_empty() || file.len() > 200 {
        return None;
    }
    Some(
        experiments
            .parent()?
            .join("index")
            .join(name)
            .join(trial)
            .join(file),
    )
}

/// The keys of `segments` (sorted names) in `dir`; `None` if one cannot be stat'ed.
pub(crate) fn keys(dir: &Path, segments: &[String]) -> Option<Vec<SegmentKey>> {
    segments
        .iter()
        .map(|name| {
            let meta = std::fs::metadata(dir.join(name)).ok()?;
            Some(SegmentKey {
                name: name.clone(),
                size: meta.size(),
                mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            })
        })
        .collect()
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
}

/// The cache file's bytes for the history `points` of `metric`, read from the segments
/// `keys`.
pub(crate) fn encode(keys: &[SegmentKey], metric: &str, points: &[Point]) -> Vec<u8> {
    let mut data = Vec::with_capacity(points.len() * POINT_BYTES);
    for p in points {
        data.extend_from_slice(&p.step.to_le_bytes());
        data.extend_from_slice(&p.value.to_le_bytes());
        data.extend_from_slice(&p.wall.to_le_bytes());
    }
    let mut header = Vec::new();
    header.extend_from_slice(&u32::try_from(keys.len()).unwrap_or(0).to_le_bytes());
    for key in keys {
        put_name(&mut header, &key.name);
        header.extend_from_slice(&key.size.to_le_bytes());
        header.extend_from_slice(&key.mtime_ns.to_le_bytes());
    }
    put_name(&mut header, metric);
    header.extend_from_slice(&(points.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32c::crc32c(&data).to_le_bytes());
    let mut out = Vec::with_capacity(16 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(
        &u32::try_from(header.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&header);
    out.extend_from_slice(&crc32c::crc32c(&header).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

/// Reads a header field by field; `None` when it runs short.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn name(&mut self) -> Option<&str> {
        let len = usize::from(u16::from_le_bytes(self.take()?));
        let (name, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        std::str::from_utf8(name).ok()
    }
}

/// The history of `metric` in the cache at `path`, if it was built from exactly `keys` and
/// is undamaged.
pub(crate) fn read(path: &Path, keys: &[SegmentKey], metric: &str) -> Option<Vec<Point>> {
    let bytes = std::fs::read(path).ok()?;
    let rest = bytes.strip_prefix(MAGIC)?;
    let header_len = usize::try_from(u32::from_le_bytes(*rest.first_chunk::<4>()?)).ok()?;
    let (header, rest) = rest[4..].split_at_checked(header_len)?;
    let (crc, data) = rest.split_first_chunk::<4>()?;
    if crc32c::crc32c(header) != u32::from_le_bytes(*crc) {
        return None;
    }
    let mut cursor = Cursor(header);
    if cursor.u32()? as usize != keys.len() {
        return None;
    }
    for key in keys {
        let same = cursor.name()? == key.name
            && cursor.u64()? == key.size
            && i64::from_le_bytes(cursor.take()?) == key.mtime_ns;
        if !same {
            return None;
        }
    }
    if cursor.name()? != metric {
        return None;
    }
    let count = usize::try_from(cursor.u64()?).ok()?;
    let crc = cursor.u32()?;
    if data.len() != count.checked_mul(POINT_BYTES)? || crc32c::crc32c(data) != crc {
        return None;
    }
    data.chunks_exact(POINT_BYTES)
        .map(|p| {
            let (step, rest) = p.split_first_chunk::<8>()?;
            let (value, wall) = rest.split_first_chunk::<8>()?;
            Some(Point {
                step: i64::from_le_bytes(*step),
                value: f64::from_le_bytes(*value),
                wall: f64::from_le_bytes(*wall.first_chunk::<8>()?),
            })
        })
        .collect()
}

/// Writes the cache at `path`; failure (a catalog this user cannot write) is not an error.
pub(crate) fn write(path: &Path, keys: &[SegmentKey], metric: &str, points: &[Point]) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = crate::fsutil::replace(path, &encode(keys, metric, points));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Point> {
        (0..5)
            .map(|i| Point {
                step: i,
                value: if i == 3 {
                    f64::NAN
                } else {
                    1.0 / (i as f64 + 1.0)
                },
                wall: 100.0 + i as f64,
            })
            .collect()
    }

    fn key(size: u64) -> Vec<SegmentKey> {
        vec![SegmentKey {
            name: "metrics-0001.clog".into(),
            size,
            mtime_ns: 7,
        }]
    }

    #[test]
    fn a_cache_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss");
        write(&path, &key(10), "loss", &sample());
        let back = read(&path, &key(10), "loss").unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back[4], sample()[4]);
        assert!(back[3].value.is_nan());
    }

    #[test]
    fn a_cache_of_other_segments_another_metric_or_damaged_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss");
        write(&path, &key(10), "loss", &sample());
        assert!(read(&path, &key(11), "loss").is_none(), "a grown segment");
        assert!(read(&path, &[], "loss").is_none(), "other segments");
        assert!(read(&path, &key(10), "acc").is_none(), "another metric");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read(&path, &key(10), "loss").is_none(), "a flipped bit");
        std::fs::write(&path, b"COHHST01\xff\xff").unwrap();
        assert!(read(&path, &key(10), "loss").is_none(), "truncated");
    }

    #[test]
    fn the_cache_sits_in_the_catalogs_index_folder() {
        let trial = Path::new("/c/experiments/mlp-1234/trials/000007");
        let p = cache_path(trial, "val/loss").unwrap();
        assert_eq!(p, Path::new("/c/index/mlp-1234.history/000007/val%2Floss"));
        assert_eq!(
            cache_path(trial, "..").unwrap().file_name().unwrap(),
            "%2E."
        );
        assert!(cache_path(Path::new("/elsewhere/trial"), "loss").is_none());
    }
}
