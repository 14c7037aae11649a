//! Errors of catalog operations, and the warnings a query carries on past.

use std::path::PathBuf;

/// Why a catalog operation failed. Every variant names the file or the thing asked for.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The directory has no `catalog.json`.
    #[error("{}: not a Cohort catalog (no catalog.json); create one by running a trial with --catalog there, or point --catalog / COHORT_CATALOG at an existing one", path.display())]
    NotACatalog {
        /// The directory.
        path: PathBuf,
    },
    /// A system call on a file failed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// A record is not what it should be (bad JSON, another format or version).
    #[error("{}: {problem}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// No experiment of that name.
    #[error("no experiment named {name:?} in the catalog at {}", root.display())]
    NoExperiment {
        /// The name asked for.
        name: String,
        /// The catalog.
        root: PathBuf,
    },
    /// No trial of that number.
    #[error("experiment {experiment:?} has no trial {id}")]
    NoTrial {
        /// The experiment.
        experiment: String,
        /// The trial number.
        id: u64,
    },
    /// A query, filter or argument is malformed.
    #[error("{0}")]
    BadQuery(String),
    /// A metric name the catalog does not take; nothing of the call was recorded.
    #[error("metric name {name:?}: {problem}")]
    BadMetricName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// No model of that name.
    #[error("no model named {name:?} in the catalog at {}; `cohort model list` lists them", root.display())]
    NoModel {
        /// The name asked for.
        name: String,
        /// The catalog.
        root: PathBuf,
    },
    /// A model has no such version or alias.
    #[error("model {model:?} has no {what}")]
    NoModelVersion {
        /// The model.
        model: String,
        /// What was asked for, in words (`version 7`, `alias "production"`).
        what: String,
    },
    /// A model version's checkpoint is no longer where it was registered.
    #[error("{model}@{number}: its checkpoint {} is missing (deleted or moved since it was registered)", path.display())]
    MissingCheckpoint {
        /// The model.
        model: String,
        /// The version.
        number: u64,
        /// Where the checkpoint was.
        path: PathBuf,
    },
    /// A checkpoint's bytes are not those registered.
    #[error("{}: SHA-256 {found} differs from the {recorded} that {model}@{number} recorded: the checkpoint changed or is damaged", path.display())]
    Checksum {
        /// The model.
        model: String,
        /// The version.
        number: u64,
        /// The file or directory read.
        path: PathBuf,
        /// The sum the version recorded.
        recorded: String,
        /// The sum of what was read.
        found: String,
    },
    /// The ranks could not agree whether to stop (a rank died, the connection broke).
    #[error("the ranks could not agree whether to stop at step {step}: {problem}")]
    Agreement {
        /// The step asked about.
        step: i64,
        /// Why (the collective's error, naming the rank).
        problem: String,
    },
}

/// Something wrong with one file that a query skipped, carrying on with the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file or directory.
    pub path: PathBuf,
    /// What is wrong with it and what was done about it.
    pub problem: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}
