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
