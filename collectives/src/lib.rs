//! Collectives for distributed training: allreduce, reduce, broadcast, allgather,
//! reduce-scatter and barrier between the ranks of a job, over shared memory on one host and
//! TCP between hosts.
//!
//! This crate owns the data path: the rendezvous store (served by rank 0, every connection
//! authenticated with the job secret), the links, the progress engine with its deadlines and
//! dead-peer detection, and the algorithms. It must never go through the daemon, never block
//! without a deadline, and never let a dead or stalled peer hang a rank: every error names the
//! rank and host it concerns. Unsafe code is confined to `link/shm.rs`, which maps the
//! shared-memory rings, `link/rdma.rs` (feature `rdma`), which registers memory with verbs,
//! `inherit.rs`, which takes the store's socket the launcher hands down, and `torch.rs`
//! (feature `tch`), which views CPU tensors' memory; each allows it by name.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod algo;
mod auth;
pub mod bench;
mod comm;
mod connect;
mod dtype;
mod engine;
mod error;
mod inherit;
mod link;
mod options;
pub mod ports;
#[cfg(feature = "rdma")]
pub use link::rdma;
pub mod store;
#[cfg(feature = "tch")]
pub mod torch;

pub use algo::Algorithm;
pub use auth::generate_secret;
pub use comm::{AbortHandle, Communicator, Handle};
pub use connect::remove_job_shm;
pub use dtype::{DataType, Element, ReduceOp};
pub use error::{CommError, InitError};
pub use half::{bf16, f16};
pub use options::{CommOptions, Transport, DEFAULT_TIMEOUT};
