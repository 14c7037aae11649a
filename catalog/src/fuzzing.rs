//! The catalog's readers on damaged files, for the `catalog_readers` fuzz target (`fuzz/`) and
//! the regression tests of what it found. Any panic here is a bug in the catalog.
//!
//! A [`Fixture`] is a catalog in a temporary directory with one experiment and one finished
//! trial written by the real tracker. An input's first byte picks one of the trial's files
//! (a [`Slot`]), the rest replaces it, and the trial and its experiment are read through
//! [`crate::read::summarize`], [`crate::read::history`] (from the logs and from the history
//! cache) and [`crate::index::load`]; before every input the trial is put back as the tracker
//! left it. Frames and caches have checksums a mutated input rarely gets right, so two slots
//! make them right first and the decoders behind them see the mutations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use cohort_proto::catalog::TrialState;

use crate::error::CatalogError;
use crate::index::{IndexWrite, LoadOptions};
use crate::log::{scan, Item, HEADER, MAGIC, MAX_PAYLOAD};
use crate::{history_cache, read, Catalog, Experiment, Tracker, TrackerOptions};

/// The fixture's experiment.
pub const EXPERIMENT: &str = "fuzz";
/// The metric whose history is also read through the history cache.
pub const METRIC: &str = "val_loss";

/// Which file of the trial an input replaces: its first byte modulo 8 picks one, the rest is
/// the file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The metric log segment, as given.
    Segment,
    /// The metric log segment, with the checksum of every frame that fits made right.
    SegmentRepaired,
    /// `state.json`.
    State,
    /// `trial.json`.
    Trial,
    /// A checkpoint collection record, `gc-0001.json`.
    Gc,
    /// The experiment's index.
    Index,
    /// The history cache of [`METRIC`], checksums made right; the trial's segment is removed,
    /// so that a cache built from no segments is current and read to the end.
    HistoryCache,
    /// No file: the bytes are parsed as every catalog record, in JSON and MessagePack.
    Records,
}

impl Slot {
    /// The slot an input's first byte picks.
    pub fn from_byte(byte: u8) -> Slot {
        match byte % 8 {
            0 => Slot::Segment,
            1 => Slot::SegmentRepaired,
            2 => Slot::State,
            3 => Slot::Trial,
            4 => Slot::Gc,
            5 => Slot::Index,
            6 => Slot::HistoryCache,
            _ => Slot::Records,
        }
    }

    /// The first byte that picks this slot.
    pub fn byte(self) -> u8 {
        self as u8
    }
}

/// A catalog in a temporary directory (under `TMPDIR`) with one experiment and one finished
/// trial; removed when dropped.
#[derive(Debug)]
pub struct Fixture {
    _scratch: Scratch,
    /// The catalog.
    pub catalog: Catalog,
    /// Its experiment.
    pub experiment: Experiment,
    /// The trial's directory.
    pub trial: PathBuf,
    /// The trial's files as the tracker left them: name and bytes.
    pub baseline: Vec<(String, Vec<u8>)>,
}

/// A directory removed with everything in it when dropped.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl Fn(std::io::Error) -> CatalogError + 'a {
    move |source| CatalogError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

impl Fixture {
    /// Creates the catalog and records a trial through the tracker: hyperparameters, twelve
    /// steps of three metrics (a non-finite value among them), a checkpoint, the end.
    pub fn new() -> Result<Fixture, CatalogError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cohort-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io(&dir, "cannot create"))?;
        let scratch = Scratch(dir);
        let catalog = Catalog::open_or_create(scratch.0.join("catalog"))?;
        let tracker = Tracker::open(&catalog, EXPERIMENT, None, TrackerOptions::default())?;
        tracker.log_hparams(BTreeMap::from([
            ("lr".to_owned(), serde_json::json!(0.01)),
            ("layers".to_owned(), serde_json::json!(3)),
        ]))?;
        for step in 0..12i64 {
            #[allow(clippy::cast_precision_loss)]
            let x = step as f64;
            let odd = if step == 5 { f64::NAN } else { 1.0 / (x + 1.0) };
            tracker.log_metrics(
                step,
                &[(METRIC, 2.0 / (x + 1.0)), ("acc", x / 12.0), ("odd", odd)],
            )?;
        }
        let checkpoint = scratch.0.join("ckpt-0011");
        std::fs::write(&checkpoint, b"weights").map_err(io(&checkpoint, "cannot write"))?;
        tracker.checkpoint(&checkpoint, 11, BTreeMap::new())?;
        let trial = tracker
            .trial()
            .map(|t| t.dir.clone())
            .ok_or_else(|| CatalogError::BadQuery("the tracker has no trial".into()))?;
        tracker.finish(TrialState::Completed)?;
        let experiment = catalog.experiment(EXPERIMENT)?;
        let mut baseline = Vec::new();
        let entries = std::fs::read_dir(&trial).map_err(io(&trial, "cannot list"))?;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let bytes = std::fs::read(&path).map_err(io(&path, "cannot read"))?;
            baseline.push((entry.file_name().to_string_lossy().into_owned(), bytes));
        }
        baseline.sort();
        Ok(Fixture {
            _scratch: scratch,
            catalog,
            experiment,
            trial,
            baseline,
        })
    }

    /// The baseline file called `name` (`trial.json`, `metrics-0001.clog`, ...).
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.baseline
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }

    /// The segment's file name.
    pub fn segment_name(&self) -> &str {
        self.baseline
            .iter()
            .map(|(n, _)| n.as_str())
            .find(|n| read::is_segment(n))
            .unwrap_or("metrics-0001.clog")
    }

    /// Where the experiment's index lives.
    pub fn index_path(&self) -> PathBuf {
        self.catalog.index_path(&self.experiment)
    }

    /// Where the history cache of [`METRIC`] of the trial lives.
    pub fn history_cache_path(&self) -> Option<PathBuf> {
        history_cache::cache_path(&self.trial, METRIC)
    }

    /// Puts the trial back as the tracker left it, without an index or history cache.
    pub fn reset(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.trial) {
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !self.baseline.iter().any(|(n, _)| *n == name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        for (name, bytes) in &self.baseline {
            let _ = std::fs::write(self.trial.join(name), bytes);
        }
        let _ = std::fs::remove_dir_all(self.catalog.root().join("index"));
    }

    /// Writes `data` where `slot` says (nothing for [`Slot::Records`]).
    pub fn place(&self, slot: Slot, data: &[u8]) {
        let write = |path: Option<PathBuf>, bytes: &[u8]| {
            let Some(path) = path else { return };
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::write(path, bytes);
        };
        let segment = self.trial.join(self.segment_name());
        match slot {
            Slot::Segment => write(Some(segment), data),
            Slot::SegmentRepaired => write(Some(segment), &repair_segment(data)),
            Slot::State => write(Some(self.trial.join("state.json")), data),
            Slot::Trial => write(Some(self.trial.join("trial.json")), data),
            Slot::Gc => write(Some(self.trial.join("gc-0001.json")), data),
            Slot::Index => write(Some(self.index_path()), &repair_index(data)),
            Slot::HistoryCache => {
                let _ = std::fs::remove_file(segment);
                write(self.history_cache_path(), &repair_history_cache(data));
            }
            Slot::Records => {}
        }
    }

    /// Reads the trial and the experiment through every public reader.
    pub fn read_all(&self) {
        let mut warnings = Vec::new();
        let _ = read::summarize(&self.trial, None, &mut warnings);
        let _ = read::history(&self.trial, None, &mut warnings);
        let _ = read::history(&self.trial, Some(&[METRIC.to_owned()]), &mut warnings);
        let loaded = crate::index::load(
            &self.catalog,
            &self.experiment,
            LoadOptions {
                use_index: true,
                write: IndexWrite::Never,
            },
        );
        if let Ok(loaded) = loaded {
            for trial in &loaded.trials {
                let _ = read::shown_state(trial);
                let _ = read::summarize(&self.trial, Some(trial), &mut warnings);
            }
        }
    }

    /// One input: scanned as a segment, then placed as its first byte says and read, or
    /// parsed as every record.
    pub fn run(&self, data: &[u8]) {
        let Some((&first, rest)) = data.split_first() else {
            return;
        };
        scan_segment(rest);
        let slot = Slot::from_byte(first);
        if slot == Slot::Records {
            parse_records(rest);
            return;
        }
        self.reset();
        self.place(slot, rest);
        self.read_all();
    }
}

/// [`Fixture::run`] on this process's fixture (made on first use; the process exits if it
/// cannot be made).
pub fn catalog_readers(data: &[u8]) {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    match FIXTURE.get_or_init(|| Fixture::new().map_err(|e| e.to_string())) {
        Ok(fixture) => fixture.run(data),
        Err(e) => {
            eprintln!("cannot make the catalog fixture: {e}");
            #[allow(clippy::exit)]
            std::process::exit(2);
        }
    }
}

/// `data` with the checksum of every frame that fits made right; frames are found as the
/// reader finds them: the magic, then a length that fits.
pub fn repair_segment(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut pos = 0;
    while pos + HEADER <= out.len() {
        let len =
            u32::from_le_bytes([out[pos + 4], out[pos + 5], out[pos + 6], out[pos + 7]]) as usize;
        if out[pos..pos + 4] != MAGIC || len > MAX_PAYLOAD || pos + HEADER + len > out.len() {
            pos += 1;
            continue;
        }
        let crc = crc32c::crc32c(&out[pos + 12..pos + HEADER + len]);
        out[pos + 8..pos + 12].copy_from_slice(&crc.to_le_bytes());
        pos += HEADER + len;
    }
    out
}

/// `data` as an index with its checksums made right (the header's and each chunk's; the
/// layout is in `index.rs`), so mutated summaries reach the decoder.
pub fn repair_index(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let Some(body) = out.get(8..) else {
        return out;
    };
    let mut reader = body;
    if rmp_serde::decode::from_read::<_, cohort_proto::catalog::IndexDoc>(&mut reader).is_err() {
        return out;
    }
    let mut pos = 8 + (body.len() - reader.len());
    if out.len() < pos + 4 {
        return out;
    }
    let crc = crc32c::crc32c(&out[8..pos]);
    out[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
    pos += 4;
    while pos + 8 <= out.len() {
        let len = u32::from_le_bytes([out[pos], out[pos + 1], out[pos + 2], out[pos + 3]]) as usize;
        let start = pos + 8;
        let end = start.saturating_add(len).min(out.len());
        let crc = crc32c::crc32c(&out[start..end]);
        out[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos = start.saturating_add(len);
    }
    out
}

/// `data` as a history cache with both checksums made right: the points' (the header's last
/// four bytes) and the header's (the layout is in `history_cache.rs`).
pub fn repair_history_cache(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let Some(&[a, b, c, d]) = out.get(8..12) else {
        return out;
    };
    let header_len = u32::from_le_bytes([a, b, c, d]) as usize;
    let header_end = 12usize.saturating_add(header_len);
    if header_len < 4 || header_end.saturating_add(4) > out.len() {
        return out;
    }
    let points = crc32c::crc32c(&out[header_end + 4..]);
    out[header_end - 4..header_end].copy_from_slice(&points.to_le_bytes());
    let header = crc32c::crc32c(&out[12..header_end]);
    out[header_end..header_end + 4].copy_from_slice(&header.to_le_bytes());
    out
}

/// Parses `data` as every catalog record, in JSON and in the index's MessagePack, and writes
/// back what was read.
fn parse_records(data: &[u8]) {
    use cohort_proto::catalog::{
        CatalogMarker, Checkpoint, ExperimentRecord, GcRecord, IndexDoc, LogEvent, MetricSummary,
        SegmentMark, StateRecord, TrialRecord, TrialSummary,
    };
    fn both<T: serde::de::DeserializeOwned + serde::Serialize>(data: &[u8]) {
        if let Ok(value) = serde_json::from_slice::<T>(data) {
            let _ = serde_json::to_vec(&value);
            let _ = rmp_serde::to_vec_named(&value);
        }
        if let Ok(value) = rmp_serde::from_slice::<T>(data) {
            let _ = rmp_serde::to_vec_named(&value);
            let _ = serde_json::to_vec(&value);
        }
    }
    both::<CatalogMarker>(data);
    both::<ExperimentRecord>(data);
    both::<TrialRecord>(data);
    both::<StateRecord>(data);
    both::<LogEvent>(data);
    both::<Checkpoint>(data);
    both::<GcRecord>(data);
    both::<MetricSummary>(data);
    both::<SegmentMark>(data);
    both::<TrialSummary>(data);
    both::<IndexDoc>(data);
    both::<Vec<TrialSummary>>(data);
}

/// Scans `data` as a segment, visiting every item, row and value.
fn scan_segment(data: &[u8]) {
    let mut seen = 0usize;
    let end = scan(data, 0, |item| match item {
        Item::Points(rows) => seen += rows.map(|row| row.values().count()).sum::<usize>(),
        Item::Names { names, .. } => seen += names.len(),
        Item::Header(_) | Item::Event(_) => seen += 1,
    });
    debug_assert!(
        end.committed <= data.len() as u64,
        "{end:?} after {seen} items"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input that made the `catalog_readers` fuzz target fail, replayed.
    #[test]
    fn past_fuzz_crashes_are_read_without_panicking() {
        let fixture = Fixture::new().unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/catalog_readers");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            fixture.run(&std::fs::read(entry.unwrap().path()).unwrap());
            replayed += 1;
        }
        assert!(replayed > 0, "no inputs in {}", dir.display());
    }

    #[test]
    fn every_slot_reads_the_baseline_back() {
        let fixture = Fixture::new().unwrap();
        assert!(fixture.file("trial.json").is_some());
        let segment = fixture.file(fixture.segment_name()).unwrap().to_vec();
        assert_eq!(
            repair_segment(&segment),
            segment,
            "the tracker's checksums are right"
        );
        for byte in 0..8 {
            let slot = Slot::from_byte(byte);
            assert_eq!(slot.byte(), byte);
            let mut data = vec![byte];
            data.extend_from_slice(&segment);
            fixture.run(&data);
        }
        let mut warnings = Vec::new();
        fixture.reset();
        let summary = read::summarize(&fixture.trial, None, &mut warnings)
            .unwrap()
            .unwrap();
        assert_eq!(summary.metrics[METRIC].count, 12);
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
