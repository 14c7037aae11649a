//! Reading a trial's files: its summary (from scratch or continuing an index entry from where
//! it stopped) and the full history of its metrics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use cohort_proto::catalog::{
    GcRecord, LogEvent, MetricSummary, SegmentMark, TrialRecord, TrialState, TrialSummary,
};

use crate::catalog::{read_record, read_state, strip_path};
use crate::error::{CatalogError, Warning};
use crate::fsutil;
use crate::history_cache;
pub use crate::history_cache::Point;
use crate::log::{scan, Damage, Item};

/// File names of a trial's metric log segments: `metrics-0001.clog`, ...
pub(crate) fn is_segment(name: &str) -> bool {
    name.starts_with("metrics-") && name.ends_with(".clog")
}

fn is_gc(name: &str) -> bool {
    name.starts_with("gc-") && name.ends_with(".json")
}

/// The checkpoints the collection records `names` (in the trial's directory `dir`) name as
/// deleted; an unreadable record is a warning.
fn read_gc_records(dir: &Path, names: &[String], warnings: &mut Vec<Warning>) -> BTreeSet<String> {
    let mut deleted = BTreeSet::new();
    for name in names {
        let path = dir.join(name);
        match read_record::<GcRecord>(&path, "cohort.ckpt-gc") {
            Ok(gc) => deleted.extend(gc.deleted),
            Err(e) => warnings.push(warn(&path, format!("{}; ignored", strip_path(&e, &path)))),
        }
    }
    deleted
}

/// The checkpoints that collection recorded as deleted in the trial's directory `dir`, without
/// reading its metric logs.
///
/// # Errors
///
/// [`CatalogError::Io`] when the directory cannot be listed.
pub fn collected(
    dir: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<BTreeSet<String>, CatalogError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|source| CatalogError::Io {
            path: dir.to_path_buf(),
            what: "cannot list",
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_gc(n))
        .collect();
    names.sort();
    Ok(read_gc_records(dir, &names, warnings))
}

fn warn(path: &Path, problem: impl Into<String>) -> Warning {
    Warning {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Reads a segment from `offset` to its end.
fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>, CatalogError> {
    let io = |source| CatalogError::Io {
        path: path.to_path_buf(),
        what: "cannot read",
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut data = Vec::with_capacity(usize::try_from(len.saturating_sub(offset)).unwrap_or(0));
    file.read_to_end(&mut data).map_err(io)?;
    Ok(data)
}

/// What reading one segment produced.
struct SegmentRead {
    mark: SegmentMark,
    metrics: Vec<(String, MetricSummary)>,
    events: Vec<LogEvent>,
    damage: Vec<String>,
}

/// Summarises a segment from `mark.covered` on (0 and no names for a new one).
fn read_segment(
    path: &Path,
    mut mark: SegmentMark,
    ended: bool,
) -> Result<SegmentRead, CatalogError> {
    let data = read_from(path, mark.covered)?;
    // Summaries by name; `by_id` maps the segment's current ids to them (writers appending
    // to a shared host segment define their names again from id 0).
    let mut local: Vec<(String, Option<MetricSummary>)> = Vec::new();
    let mut slot_of: HashMap<String, usize> = HashMap::new();
    let mut slot = |name: &str, local: &mut Vec<(String, Option<MetricSummary>)>| {
        *slot_of.entry(name.to_owned()).or_insert_with(|| {
            local.push((name.to_owned(), None));
            local.len() - 1
        })
    };
    let mut by_id: Vec<usize> = mark.names.iter().map(|n| slot(n, &mut local)).collect();
    let mut events = Vec::new();
    let mut unknown_ids = 0u64;
    let mut closed = mark.closed;
    let names = &mut mark.names;
    let end = scan(&data, mark.covered, |item| match item {
        Item::Names {
            first_id,
            names: new,
        } => {
            let first = first_id as usize;
            if first <= names.len() {
                names.truncate(first);
                by_id.truncate(first);
                for name in new {
                    by_id.push(slot(&name, &mut local));
                    names.push(name);
                }
            }
        }
        Item::Points(rows) => {
            for row in rows {
                for (id, value) in row.values() {
                    let Some(&index) = by_id.get(id as usize) else {
                        unknown_ids += 1;
                        continue;
                    };
                    match &mut local[index].1 {
                        Some(summary) => summary.add(row.step, value, row.wall),
                        empty @ None => {
                            *empty = Some(MetricSummary::first(row.step, value, row.wall));
                        }
                    }
                }
            }
        }
        Item::Event(event) => {
            if matches!(event, LogEvent::Finish { .. }) {
                closed = true;
            }
            events.push(event);
        }
        Item::Header(_) => {}
    });
    let file = mark.file.clone();
    let mut damage = Vec::new();
    for item in &end.damage {
        match item {
            Damage::Corrupt { start, end } => damage.push(format!(
                "{file}: bytes {start}..{end} are damaged and were skipped; the records after them were read"
            )),
            // A record cut short at the end is normal while its writer runs; once the trial
            // ended it means the writer was interrupted mid-write (nothing committed is lost).
            Damage::Tail { start, len } if ended => damage.push(format!(
                "{file}: {len} byte(s) at offset {start} are a record cut short (the writer was interrupted); ignored"
            )),
            Damage::Tail { .. } => {}
        }
    }
    if unknown_ids > 0 {
        damage.push(format!(
            "{file}: {unknown_ids} point(s) refer to a metric name whose record was damaged; skipped"
        ));
    }
    mark.size = mark.covered + data.len() as u64;
    mark.closed = closed;
    mark.covered = end.committed;
    let metrics = local
        .into_iter()
        .filter_map(|(name, s)| s.map(|s| (name, s)))
        .collect();
    if mark.closed {
        // Nothing more is appended: the names are never needed again (smaller index).
        mark.names = Vec::new();
    }
    Ok(SegmentRead {
        mark,
        metrics,
        events,
        damage,
    })
}

/// Summarises the trial in `dir` (named `dir_name` inside `trials/`), continuing `previous`
/// (an index entry) when it is given: unchanged trials cost two `stat`s, changed ones only
/// the bytes written since. Returns `Ok(None)` for a directory that is not (yet) a trial.
pub fn summarize(
    dir: &Path,
    previous: Option<&TrialSummary>,
    warnings: &mut Vec<Warning>,
) -> Result<Option<TrialSummary>, CatalogError> {
    if let Some(prev) = previous {
        if is_unchanged(dir, prev) {
            return Ok(Some(prev.clone()));
        }
    }
    summarize_changed(dir, previous, warnings)
}

/// Whether the trial's directory and log segments are as `summary` saw them (two `stat`s for
/// a trial with one segment).
pub fn is_unchanged(dir: &Path, summary: &TrialSummary) -> bool {
    std::fs::metadata(dir).is_ok_and(|meta| {
        i64::try_from(fsutil::mtime_ns(&meta)).unwrap_or(i64::MAX) == summary.dir_mtime_ns
    }) && summary.segments.iter().all(|mark| {
        mark.closed || std::fs::metadata(dir.join(&mark.file)).is_ok_and(|m| m.len() == mark.size)
    })
}

/// [`is_unchanged`] for trial directory `name` inside the open directory `trials`: the paths
/// are resolved from there, which saves the kernel walking the catalog's path twice per trial.
pub fn is_unchanged_at(trials: &std::fs::File, name: &str, summary: &TrialSummary) -> bool {
    use nix::fcntl::AtFlags;
    use nix::sys::stat::fstatat;
    let Ok(dir) = fstatat(trials, name, AtFlags::empty()) else {
        return false;
    };
    if dir.st_mtime * 1_000_000_000 + dir.st_mtime_nsec != summary.dir_mtime_ns {
        return false;
    }
    summary.segments.iter().all(|mark| {
        mark.closed
            || fstatat(
                trials,
                format!("{name}/{}", mark.file).as_str(),
                AtFlags::empty(),
            )
            .is_ok_and(|st| u64::try_from(st.st_size).ok() == Some(mark.size))
    })
}

/// [`summarize`] for a trial known to have changed since `previous`.
pub fn summarize_changed(
    dir: &Path,
    previous: Option<&TrialSummary>,
    warnings: &mut Vec<Warning>,
) -> Result<Option<TrialSummary>, CatalogError> {
    let dir_meta = std::fs::metadata(dir).map_err(|source| CatalogError::Io {
        path: dir.to_path_buf(),
        what: "cannot read",
        source,
    })?;
    let dir_mtime_ns = i64::try_from(fsutil::mtime_ns(&dir_meta)).unwrap_or(i64::MAX);
    let mut segments = Vec::new();
    let mut gc_files = Vec::new();
    let mut last_write: Option<f64> = None;
    let entries = std::fs::read_dir(dir).map_err(|source| CatalogError::Io {
        path: dir.to_path_buf(),
        what: "cannot list",
        source,
    })?;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_segment(&name) {
            if let Ok(meta) = entry.metadata() {
                let mtime = fsutil::mtime_ns(&meta) as f64 / 1e9;
                last_write = Some(last_write.map_or(mtime, |t: f64| t.max(mtime)));
            }
            segments.push(name);
        } else if is_gc(&name) {
            gc_files.push(name);
        }
    }
    segments.sort();
    gc_files.sort();

    let trial_path = crate::catalog::trial_record_path(dir);
    let trial: TrialRecord = match previous {
        Some(prev) => prev.trial.clone(),
        None => match crate::catalog::read_trial_record(dir) {
            Ok(trial) => trial,
            Err(CatalogError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                warnings.push(warn(
                    dir,
                    "no trial.json (being created, or its creator died); skipped",
                ));
                return Ok(None);
            }
            Err(e) => {
                warnings.push(warn(
                    &trial_path,
                    format!("{}; trial skipped", strip_path(&e, &trial_path)),
                ));
                return Ok(None);
            }
        },
    };
    let state = match read_state(dir) {
        Ok(state) => state,
        Err(e) => {
            let path = crate::catalog::state_path(dir);
            warnings.push(warn(
                &path,
                format!("{}; state shown as unknown", strip_path(&e, &path)),
            ));
            None
        }
    };
    let deleted = read_gc_records(dir, &gc_files, warnings);

    let mut summary = match previous {
        Some(prev) => prev.clone(),
        None => TrialSummary {
            id: trial.id,
            dir: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir_mtime_ns,
            hparams: trial.hparams.clone(),
            trial,
            state: None,
            metrics: BTreeMap::new(),
            checkpoints: Vec::new(),
            deleted: Vec::new(),
            segments: Vec::new(),
            finished: None,
            last_write: None,
            damage: Vec::new(),
        },
    };
    summary.dir_mtime_ns = dir_mtime_ns;
    summary.state = state;
    summary.last_write = last_write;
    let ended = summary.state.as_ref().is_some_and(|s| s.state.is_final());
    let old_marks: BTreeMap<String, SegmentMark> = summary
        .segments
        .drain(..)
        .map(|m| (m.file.clone(), m))
        .collect();
    for name in segments {
        let mark = old_marks.get(&name).cloned().unwrap_or(SegmentMark {
            file: name.clone(),
            covered: 0,
            names: Vec::new(),
            size: 0,
            closed: false,
        });
        let path = dir.join(&name);
        let read = match read_segment(&path, mark, ended) {
            Ok(read) => read,
            Err(e) => {
                warnings.push(warn(&path, format!("{}; skipped", strip_path(&e, &path))));
                continue;
            }
        };
        for (name, later) in read.metrics {
            match summary.metrics.get_mut(&name) {
                Some(existing) => existing.merge_later(&later),
                None => {
                    summary.metrics.insert(name, later);
                }
            }
        }
        for event in read.events {
            match event {
                LogEvent::Hparams { values } => summary.hparams.extend(values),
                LogEvent::Checkpoint(ckpt) => summary.checkpoints.push(ckpt),
                LogEvent::Finish { state, .. } => summary.finished = Some(state),
            }
        }
        for problem in &read.damage {
            warnings.push(warn(dir, problem.clone()));
        }
        summary.damage.extend(read.damage);
        summary.segments.push(read.mark);
    }
    summary.deleted = deleted.iter().cloned().collect();
    summary.checkpoints.retain(|c| !deleted.contains(&c.path));
    Ok(Some(summary))
}

/// The full history of a trial's metrics (only those in `only`, when given), ordered by step.
/// A step written again (after a restart from a checkpoint) keeps its latest value.
pub fn history(
    dir: &Path,
    only: Option<&[String]>,
    warnings: &mut Vec<Warning>,
) -> Result<BTreeMap<String, Vec<Point>>, CatalogError> {
    let mut segments: Vec<String> = std::fs::read_dir(dir)
        .map_err(|source| CatalogError::Io {
            path: dir.to_path_buf(),
            what: "cannot list",
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_segment(n))
        .collect();
    segments.sort();
    // A finished trial's history of a named metric is cached (see `history_cache`).
    let cached = only.and_then(|names| {
        let keys = history_cache::keys(dir, &segments)?;
        let paths = names
            .iter()
            .map(|name| history_cache::cache_path(dir, name))
            .collect::<Option<Vec<_>>>()?;
        Some((names, keys, paths))
    });
    if let Some((names, keys, paths)) = &cached {
        let found: Option<BTreeMap<String, Vec<Point>>> = names
            .iter()
            .zip(paths)
            .map(|(name, path)| Some((name.clone(), history_cache::read(path, keys, name)?)))
            .collect();
        if let Some(mut found) = found {
            found.retain(|_, points| !points.is_empty());
            return Ok(found);
        }
    }
    let mut found_warnings = Vec::new();
    let out = from_logs(dir, &segments, only, &mut found_warnings);
    let ended =
        || crate::catalog::read_state(dir).is_ok_and(|s| s.is_some_and(|s| s.state.is_final()));
    if let Some((names, keys, paths)) = &cached {
        if found_warnings.is_empty() && ended() {
            for (name, path) in names.iter().zip(paths) {
                let points = out.get(name).map_or(&[][..], Vec::as_slice);
                if points.len() >= history_cache::MIN_POINTS {
                    history_cache::write(path, keys, name, points);
                }
            }
        }
    }
    warnings.append(&mut found_warnings);
    Ok(out)
}

/// [`history`] read from the log segments `segments` of `dir`.
fn from_logs(
    dir: &Path,
    segments: &[String],
    only: Option<&[String]>,
    warnings: &mut Vec<Warning>,
) -> BTreeMap<String, Vec<Point>> {
    let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for name in segments {
        let path = dir.join(name);
        let data = match read_from(&path, 0) {
            Ok(data) => data,
            Err(e) => {
                warnings.push(warn(&path, format!("{}; skipped", strip_path(&e, &path))));
                continue;
            }
        };
        // Points by name; per id of the segment, where its points go (None: not wanted).
        let mut series: Vec<(String, Vec<Point>)> = Vec::new();
        let mut by_id: Vec<Option<usize>> = Vec::new();
        let end = scan(&data, 0, |item| match item {
            Item::Names {
                first_id,
                names: new,
            } if first_id as usize <= by_id.len() => {
                by_id.truncate(first_id as usize);
                for name in new {
                    let wanted = only.is_none_or(|o| o.contains(&name));
                    by_id.push(wanted.then(|| {
                        series
                            .iter()
                            .position(|(n, _)| *n == name)
                            .unwrap_or_else(|| {
                                series.push((name, Vec::new()));
                                series.len() - 1
                            })
                    }));
                }
            }
            Item::Points(rows) => {
                for row in rows {
                    for (id, value) in row.values() {
                        if let Some(Some(index)) = by_id.get(id as usize) {
                            series[*index].1.push(Point {
                                step: row.step,
                                value,
                                wall: row.wall,
                            });
                        }
                    }
                }
            }
            _ => {}
        });
        for damage in end.damage {
            if let Damage::Corrupt { start, end } = damage {
                warnings.push(warn(
                    &path,
                    format!("bytes {start}..{end} are damaged and were skipped"),
                ));
            }
        }
        for (name, points) in series {
            out.entry(name).or_default().extend(points);
        }
    }
    for points in out.values_mut() {
        // Stable: among equal steps the later write stays last; keep it.
        points.sort_by_key(|p| p.step);
        let mut kept: Vec<Point> = Vec::with_capacity(points.len());
        for point in points.drain(..) {
            match kept.last_mut() {
                Some(last) if last.step == point.step => *last = point,
                _ => kept.push(point),
            }
        }
        *points = kept;
    }
    out
}

/// The state a query shows: the state file's, or the worker's own report when there is no
/// state file.
pub fn shown_state(summary: &TrialSummary) -> Option<TrialState> {
    summary.state.as_ref().map(|s| s.state).or(summary.finished)
}

/// [`history`] of one metric for many trials at once, read in parallel; in the order given.
pub fn histories(
    dirs: &[std::path::PathBuf],
    metric: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Vec<Point>>, CatalogError> {
    use rayon::prelude::*;
    let wanted = [metric.to_owned()];
    type Found = (Vec<Point>, Vec<Warning>);
    let results: Vec<Result<Found, CatalogError>> = dirs
        .par_iter()
        .map(|dir| {
            let mut found = Vec::new();
            let mut data = history(dir, Some(&wanted), &mut found)?;
            Ok((data.remove(metric).unwrap_or_default(), found))
        })
        .collect();
    let mut out = Vec::with_capacity(dirs.len());
    for result in results {
        let (points, mut found) = result?;
        warnings.append(&mut found);
        out.push(points);
    }
    Ok(out)
}
