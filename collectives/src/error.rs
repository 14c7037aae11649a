//! Errors of communicator set-up and collective operations.

use std::time::Duration;

/// Why a communicator could not be created.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// An environment variable is missing or malformed.
    #[error("environment variable {var}: {problem}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The plan file could not be read.
    #[error("plan {path}: {problem}")]
    Plan {
        /// Its path.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// Rendezvous or connecting to peers failed.
    #[error(transparent)]
    Comm(#[from] CommError),
}

/// Why a collective operation (or the rendezvous before it) failed. Every variant that
/// involves a peer names its rank and host.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommError {
    /// The deadline passed while waiting on a peer that is alive but not progressing
    /// (stopped, overloaded, or stuck in other work).
    #[error("{op} timed out after {:.1} s waiting for rank {rank} on {host}{}", elapsed.as_secs_f64(), culprit.as_deref().map(|c| format!("; {c}")).unwrap_or_default())]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The rank waited on.
        rank: u32,
        /// Its host.
        host: String,
        /// How long the operation ran.
        elapsed: Duration,
        /// Which rank the ranks that timed out found to be the one not progressing, when
        /// they could tell (it is often not the direct peer).
        culprit: Option<String>,
    },
    /// A peer is gone: its process exited or was killed, or its host stopped answering.
    #[error("rank {rank} on {host} is gone: {detail}")]
    PeerGone {
        /// The rank.
        rank: u32,
        /// Its host.
        host: String,
        /// How it was noticed.
        detail: String,
    },
    /// `abort()` was called on this communicator.
    #[error("communicator aborted")]
    Aborted,
    /// A peer or the store did not prove it holds the job secret.
    #[error("authentication failed with {who}: {detail}")]
    Auth {
        /// The peer or store address.
        who: String,
        /// What went wrong.
        detail: String,
    },
    /// The rendezvous store failed or could not be reached.
    #[error("rendezvous store {address}: {detail}")]
    Store {
        /// Its address.
        address: String,
        /// What went wrong.
        detail: String,
    },
    /// Arguments that cannot work (buffer sizes, root out of range).
    #[error("invalid arguments: {0}")]
    Invalid(String),
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
}

impl CommError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> CommError {
        CommError::Io {
            context: context.into(),
            source: std::sync::Arc::new(source),
        }
    }
}
