//! Cohort's wire and file formats.
//!
//! This crate owns every type that leaves a process: the topology document that `cohort topo
//! --json` prints and the daemon serves, the plan of a job step, the daemon's local API and
//! its framing, and later the messages between daemons. It is the only crate whose types are serialised. It must never do I/O
//! beyond (de)serialising a byte buffer, never depend on tokio or FFI, and within a major
//! `version` it only ever gains optional fields, so older readers keep working.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod catalog;
pub mod daemon;
pub mod env;
pub mod frame;
pub mod peer;
pub mod plan;
pub mod topology;
