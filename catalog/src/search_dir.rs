//! The files of a hyperparameter search, in its experiment's `search/` directory: where each
//! is. The search controller writes them by the catalog's rules ([`crate::fsutil`]); their
//! records are `cohort_proto::search`'s, and `docs/catalog-format.md` says which file is
//! written by which rule.

use std::path::{Path, PathBuf};

/// The experiment file as given.
const SPEC_FILE: &str = "spec.toml";
/// The event log.
const EVENTS_FILE: &str = "events.jsonl";
/// The directory trials start in.
const WORKDIR_FILE: &str = "cwd";
/// Asks the controller and its trials to stop.
const STOP_FILE: &str = "stop";
/// The Slurm job arrays the search submitted.
const ARRAYS_DIR: &str = "arrays";
/// Where controllers of earlier versions kept their lease, written in place.
const LEGACY_LEASE_FILE: &str = "controller.json";
/// Generation N of the lease is `controller-N.json`.
const LEASE_PREFIX: &str = "controller-";
const LEASE_SUFFIX: &str = ".json";

/// A search's directory and the paths of its files (see
/// [`crate::Experiment::search_dir`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchDir {
    dir: PathBuf,
}

impl SearchDir {
    /// The search directory at `dir` (an experiment's is [`crate::Experiment::search_dir`]).
    pub fn new(dir: impl Into<PathBuf>) -> SearchDir {
        SearchDir { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `spec.toml`: the experiment file as given, published once; it says the experiment has
    /// a search.
    pub fn spec(&self) -> PathBuf {
        self.dir.join(SPEC_FILE)
    }

    /// `events.jsonl`: what the controller did, one record a line.
    pub fn events(&self) -> PathBuf {
        self.dir.join(EVENTS_FILE)
    }

    /// `cwd`: the directory the search's trials start in (raw path bytes).
    pub fn workdir(&self) -> PathBuf {
        self.dir.join(WORKDIR_FILE)
    }

    /// `arrays/`: `NAME.json` says what the search's Slurm job array NAME runs
    /// (`cohort_proto::search::ArrayManifest`); `ARRAY_TASK.out` is Slurm's own output of
    /// one of its elements (the trial's output is in the trial's directory).
    pub fn arrays(&self) -> PathBuf {
        self.dir.join(ARRAYS_DIR)
    }

    /// `stop`: asks the controller and its trials to stop (empty; created if absent).
    pub fn stop(&self) -> PathBuf {
        self.dir.join(STOP_FILE)
    }

    /// `controller-N.json`: generation `generation` of the controller's lease.
    pub fn lease(&self, generation: u64) -> PathBuf {
        self.dir
            .join(format!("{LEASE_PREFIX}{generation}{LEASE_SUFFIX}"))
    }

    /// `controller.json`: the lease of controllers of earlier versions.
    pub fn legacy_lease(&self) -> PathBuf {
        self.dir.join(LEGACY_LEASE_FILE)
    }

    /// The generations of the lease present, lowest first.
    pub fn lease_generations(&self) -> std::io::Result<Vec<u64>> {
        let mut generations: Vec<u64> = std::fs::read_dir(&self.dir)?
            .flatten()
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()?
                    .strip_prefix(LEASE_PREFIX)?
                    .strip_suffix(LEASE_SUFFIX)?
                    .parse()
                    .ok()
            })
            .collect();
        generations.sort_unstable();
        Ok(generations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_generations_are_read_from_their_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let search = SearchDir::new(dir.path());
        for name in [
            "controller-3.json",
            "controller-12.json",
            "controller.json",
            "controller-x.json",
            ".controller-4.json.tmp-1-2",
            "events.jsonl",
        ] {
            std::fs::write(dir.path().join(name), b"{}").unwrap();
        }
        assert_eq!(search.lease_generations().unwrap(), vec![3, 12]);
        assert_eq!(search.lease(12), dir.path().join("controller-12.json"));
        assert_eq!(search.legacy_lease(), dir.path().join("controller.json"));
    }
}
