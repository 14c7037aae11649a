//! The local API of `cohortd` on its Unix socket: requests, responses and error codes.
//!
//! Every message is one frame (see [`crate::frame`]) holding JSON. A connection starts with
//! `Hello` both ways; a client whose `api_version` the daemon does not speak gets
//! `Error { code: VersionMismatch }` and the connection closes.

use serde::{Deserialize, Serialize};

use crate::topology::TopologyDoc;

/// Where `cohortd` listens by default (the `socket` key of `cohortd.toml` changes it).
pub const DEFAULT_SOCKET: &str = "/run/cohort/cohortd.sock";

/// The API version this crate speaks. Within a version, messages only gain optional fields.
pub const API_VERSION: u32 = 1;

/// A request from a client (the CLI, the SPANK plugin) to the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// The first message of every connection.
    Hello {
        /// The client's API version.
        api_version: u32,
        /// Who is asking (`cohort 0.1.0`, `spank_cohort 0.1.0`), for the daemon's log.
        client: String,
    },
    /// This node's topology as the daemon discovered it.
    GetTopology,
    /// The daemon's version, uptime and what it knows.
    GetStatus,
}

/// The daemon's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `Hello`.
    Hello {
        /// The daemon's API version.
        api_version: u32,
        /// The daemon's release (`0.1.0`).
        daemon_version: String,
    },
    /// Answer to `GetTopology`.
    Topology(Box<TopologyDoc>),
    /// Answer to `GetStatus`.
    Status(StatusDoc),
    /// The request failed.
    Error {
        /// What kind of failure, stable across releases.
        code: ErrorCode,
        /// A sentence for the user.
        message: String,
    },
}

/// Stable error codes of the local API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The client's API version is not spoken by this daemon.
    VersionMismatch,
    /// The first message was not `Hello`, or a message could not be parsed.
    BadRequest,
    /// The caller may not do this (job operations are for root and the job's owner).
    PermissionDenied,
    /// The daemon is still discovering the topology.
    NotReady,
    /// Something failed inside the daemon.
    Internal,
}

/// What `cohort status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// The daemon's release.
    pub daemon_version: String,
    /// The node's host name.
    pub hostname: String,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// Where the topology came from (`live`, or a file path).
    pub topology_source: String,
    /// One line: NUMA nodes, GPUs, NICs.
    pub topology_summary: String,
    /// When the topology was last discovered (seconds since the Unix epoch).
    pub discovered_at: u64,
    /// Job steps the daemon knows about.
    #[serde(default)]
    pub steps: Vec<String>,
}
