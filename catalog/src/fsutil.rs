//! The only ways the catalog changes a shared directory: create-if-absent (`mkdir`, `link`,
//! `O_EXCL`) and replace-by-rename of a fully written, fsynced temporary file. Also the
//! writer identity, the clock, and what kind of filesystem a path is on.
//!
//! [`publish_new`], [`replace`], [`mkdir_if_absent`], [`sync_dir`] and [`nonce`] are public so
//! that everything else writing inside a catalog (the search controller's files in an
//! experiment's `search/` directory) follows the same rules; `docs/catalog-format.md` says
//! which file is written by which rule.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cohort_proto::catalog::Writer;

use crate::error::CatalogError;

/// Unix time in seconds.
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This process as a writer.
pub(crate) fn writer() -> Writer {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_owned());
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    Writer {
        host,
        pid: std::process::id(),
        user,
    }
}

/// A random hex token (16 digits), to tell one writer's record from another's with the same
/// content, as [`publish_new`]'s callers must on NFS.
pub fn nonce() -> String {
    let mut bytes = [0u8; 8];
    // Without randomness the token still differs between processes by pid and time.
    if getrandom::fill(&mut bytes).is_err() {
        let mixed = u64::from(std::process::id()) ^ now().to_bits();
        bytes = mixed.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A temporary name beside `target`, unique to this process and call.
fn temp_beside(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.tmp-{}-{}", std::process::id(), nonce()))
}

pub(crate) fn io<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> CatalogError + 'a {
    move |source| CatalogError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// Writes `bytes` to a new temporary file beside `target` and fsyncs it; returns its path. The
/// file is given to `owner` (uid, gid) first when given: for a privileged writer (the Slurm
/// plugin in slurmstepd) writing into a user's trial.
fn write_temp_owned(
    target: &Path,
    bytes: &[u8],
    owner: Option<(u32, u32)>,
) -> Result<PathBuf, CatalogError> {
    let tmp = temp_beside(target);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(target, "cannot write")(e));
    }
    Ok(tmp)
}

/// Fsyncs a directory so a new entry in it (a created, renamed or linked file) survives a
/// crash. Best effort: a filesystem that refuses fsync on a directory is not an error.
pub fn sync_dir(dir: &Path) {
    // Best effort: some filesystems refuse fsync on directories; the entry is still there.
    if let Ok(file) = File::open(dir) {
        let _ = file.sync_all();
    }
}

/// Replaces `target` with `bytes`: a reader sees the old or the new content, never a mix.
///
/// The bytes go to a temporary file beside `target` (`.NAME.tmp-PID-NONCE`), which is fsynced
/// and renamed over `target`; the directory is fsynced after. Two writers racing both leave a
/// complete file: the later rename wins. Use it for a file that one writer owns, or whose
/// writers may overwrite each other; never to take something only one may have (use
/// [`publish_new`]).
///
/// # Errors
///
/// [`CatalogError::Io`] naming `target` when the temporary file cannot be written or renamed
/// (no temporary file is left behind).
pub fn replace(target: &Path, bytes: &[u8]) -> Result<(), CatalogError> {
    replace_owned(target, bytes, None)
}

/// [`replace`], the new file owned by `owner` (uid, gid) when given.
pub(crate) fn replace_owned(
    target: &Path,
    bytes: &[u8],
    owner: Option<(u32, u32)>,
) -> Result<(), CatalogError> {
    let tmp = write_temp_owned(target, bytes, owner)?;
    if let Err(e) = std::fs::rename(&tmp, target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(target, "cannot replace")(e));
    }
    if let Some(dir) = target.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Publishes `bytes` at `target` only if nothing is there yet. Returns `true` when this call
/// published, `false` when another writer's file was there first (read it).
///
/// The bytes go to a fsynced temporary file beside `target`, which is then hard-linked to
/// `target` and removed: a reader sees no file or the whole file, never part of it.
/// `link(2)` is atomic and fails with `EEXIST` if the name exists, so of writers racing for
/// the same name exactly one wins. On NFS a retransmitted `link` can report `EEXIST` although
/// it succeeded; the caller compares the published content with its own (put a [`nonce`] in
/// it) to tell.
///
/// # Errors
///
/// [`CatalogError::Io`] naming `target` when the temporary file cannot be written or linked
/// for another reason than an existing name.
pub fn publish_new(target: &Path, bytes: &[u8]) -> Result<bool, CatalogError> {
    publish_new_owned(target, bytes, None)
}

/// [`publish_new`], the new file owned by `owner` (uid, gid) when given.
pub(crate) fn publish_new_owned(
    target: &Path,
    bytes: &[u8],
    owner: Option<(u32, u32)>,
) -> Result<bool, CatalogError> {
    let tmp = write_temp_owned(target, bytes, owner)?;
    let result = std::fs::hard_link(&tmp, target);
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            if let Some(dir) = target.parent() {
                sync_dir(dir);
            }
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(target, "cannot create")(e)),
    }
}

/// How [`publish_batch`] puts one file in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    /// As [`publish_new`]: only if nothing has the name yet.
    New,
    /// As [`replace`]: over whatever has the name.
    Replace,
}

/// Several files, each put in place by the rule of [`publish_new`] or [`replace`], with the
/// same guarantees (each file whole and fsynced before its name appears, each directory
/// fsynced after), but in phases: every temporary file is written, then all are fsynced at
/// once (from several threads: the device serves them together), then every name is linked or
/// renamed, then the directories are fsynced the same way. N files cost a few waits rather
/// than 2N. Returns, per file, what [`publish_new`] returns (`true` for
/// a replaced one).
///
/// # Errors
///
/// As [`publish_new`] and [`replace`], naming the file; temporary files are removed. Files put
/// in place before the error stay (each is whole).
pub(crate) fn publish_batch(files: &[(PathBuf, Vec<u8>, Put)]) -> Result<Vec<bool>, CatalogError> {
    let mut temps: Vec<PathBuf> = Vec::with_capacity(files.len());
    let cleanup = |temps: &[PathBuf]| {
        for tmp in temps {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for (target, bytes, _) in files {
        let tmp = temp_beside(target);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut file| file.write_all(bytes));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            cleanup(&temps);
            return Err(io(target, "cannot write")(e));
        }
        temps.push(tmp);
    }
    let synced = in_parallel(
        temps.iter().zip(files).collect(),
        |(tmp, (target, _, _))| {
            File::open(tmp)
                .and_then(|f| f.sync_all())
                .map_err(io(target, "cannot write"))
        },
    );
    if let Err(e) = synced {
        cleanup(&temps);
        return Err(e);
    }
    let mut published = Vec::with_capacity(files.len());
    let mut result = Ok(());
    for (tmp, (target, _, put)) in temps.iter().zip(files) {
        let done = match put {
            Put::New => match std::fs::hard_link(tmp, target) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(io(target, "cannot create")(e)),
            },
            Put::Replace => std::fs::rename(tmp, target)
                .map(|()| true)
                .map_err(io(target, "cannot replace")),
        };
        match done {
            Ok(p) => published.push(p),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    cleanup(&temps);
    let mut dirs: Vec<&Path> = files[..published.len()]
        .iter()
        .filter_map(|(target, _, _)| target.parent())
        .collect();
    dirs.sort();
    dirs.dedup();
    let _ = in_parallel(dirs, |dir| {
        sync_dir(dir);
        Ok(())
    });
    result.map(|()| published)
}

/// Most threads [`in_parallel`] starts.
const SYNC_THREADS: usize = 16;

/// Runs `work` on every item, on up to [`SYNC_THREADS`] threads: for fsyncs, which wait on the
/// device rather than the processor, and which a device serves together when they come
/// together (50 fsyncs of new files: 35 ms one after the other, 5 ms from 16 threads, on a
/// virtual disk). Returns the first error.
fn in_parallel<T: Send>(
    items: Vec<T>,
    work: impl Fn(T) -> Result<(), CatalogError> + Sync,
) -> Result<(), CatalogError> {
    if items.len() <= 1 {
        return items.into_iter().try_for_each(work);
    }
    let threads = items.len().min(SYNC_THREADS);
    let queue = std::sync::Mutex::new(items);
    let first_error = std::sync::Mutex::new(None);
    let drain = || loop {
        let next = queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let Some(item) = next else { break };
        if let Err(e) = work(item) {
            first_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_or_insert(e);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            // Where no more threads can be started (a low process limit), fewer do the work.
            if std::thread::Builder::new()
                .name("cohort-sync".into())
                .spawn_scoped(scope, drain)
                .is_err()
            {
                break;
            }
        }
        // This thread works too, so the work is done even if no thread could be started.
        drain();
    });
    first_error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .map_or(Ok(()), Err)
}

/// `mkdir` that treats an existing directory as success. Returns whether this call created it.
///
/// # Errors
///
/// [`CatalogError::Io`] naming `dir` when it cannot be created, or when something other than
/// a directory has that name.
pub fn mkdir_if_absent(dir: &Path) -> Result<bool, CatalogError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) => Err(io(dir, "cannot create directory")(e)),
    }
}

/// Reads a file whole, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, CatalogError> {
    std::fs::read(path).map_err(io(path, "cannot read"))
}

/// Modification time in ns since the epoch (0 if unavailable).
pub(crate) fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

/// Filesystems whose clients cache attributes, so that what another node wrote may show late.
pub(crate) fn shared_fs_kind(path: &Path) -> Option<&'static str> {
    let stat = nix::sys::statfs::statfs(path).ok()?;
    // Magic numbers from statfs(2) and the filesystems' sources.
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    let magic = stat.filesystem_type().0 as u64 as u32;
    match magic {
        0x6969 => Some("NFS"),
        0x0BD0_0BD0 => Some("Lustre"),
        0x4750_4653 => Some("GPFS"),
        0x1983_0326 => Some("BeeGFS"),
        0xFE53_4D42 | 0xFF53_4D42 => Some("SMB"),
        0x6573_5546 => Some("FUSE"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_new_lets_only_the_first_writer_win() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.json");
        assert!(publish_new(&target, b"first").unwrap());
        assert!(!publish_new(&target, b"second").unwrap());
        assert_eq!(std::fs::read(&target).unwrap(), b"first");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn publish_new_admits_exactly_one_of_racing_writers() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("lease.json");
            let barrier = std::sync::Barrier::new(8);
            let wins: Vec<(usize, bool)> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8)
                    .map(|i| {
                        let (target, barrier) = (&target, &barrier);
                        scope.spawn(move || {
                            barrier.wait();
                            (
                                i,
                                publish_new(target, format!("writer {i}").as_bytes()).unwrap(),
                            )
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let winners: Vec<usize> = wins.iter().filter(|(_, won)| *won).map(|w| w.0).collect();
            assert_eq!(winners.len(), 1, "{wins:?}");
            let content = std::fs::read_to_string(&target).unwrap();
            assert_eq!(content, format!("writer {}", winners[0]));
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        }
    }

    #[test]
    fn replace_swaps_content_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("s.json");
        replace(&target, b"one").unwrap();
        replace(&target, b"two").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn mkdir_if_absent_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a");
        assert!(mkdir_if_absent(&sub).unwrap());
        assert!(!mkdir_if_absent(&sub).unwrap());
        std::fs::write(dir.path().join("f"), b"").unwrap();
        assert!(mkdir_if_absent(&dir.path().join("f")).is_err());
    }
}
