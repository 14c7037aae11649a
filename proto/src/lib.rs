//! Cohort's wire and file formats.
//!
//! This crate owns every type that leaves a process: the topology document that `cohort topo
//! --json` prints and the daemon serves, the plan of a job step, the daemon's local API and
//! its framing, the messages between daemons, the catalog's records and the search
//! controller's: every record written to a file or the wire is defined here (only the binary
//! framing of the catalog's metric logs and caches lives in `catalog`, beside its reader). It
//! must never do I/O beyond (de)serialising a byte buffer, never depend on tokio or FFI, and within a major
//! `version` it only ever gains optional fields, so older readers keep working.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod catalog;
pub mod daemon;
pub mod env;
pub mod frame;
pub mod hostlist;
pub mod peer;
pub mod plan;
pub mod search;
pub mod topology;
