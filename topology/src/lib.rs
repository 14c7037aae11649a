//! One node's hardware as a typed model: NUMA nodes, the PCI tree, GPUs and RDMA NICs.
//!
//! This crate owns discovery (hwloc, NVML, sysfs), the importers and exporters of topology
//! files (hwloc XML, NCCL XML), path classes between devices, the GPU -> NIC assignment, the
//! checks of `cohort topo doctor` and the text `cohort topo` prints. The daemon reuses it to plan
//! steps. It must never talk to other processes, start threads or a runtime, or read sysfs
//! except through an explicit root directory; it has no unsafe code of its own (hwloc and NVML
//! are reached through their safe binding crates, which link or load the vendor libraries).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod assign;
pub mod cpus;
pub mod discover;
pub mod doctor;
pub mod gpu_sample;
mod hwloc;
pub mod load;
pub mod model;
pub mod nccl;
mod nvml;
pub mod path;
pub mod plan;
mod render;
pub mod sysfs;

pub use assign::{AssignError, Assignment};
pub use cpus::CpuList;
pub use discover::{interface_of, DiscoverError, LiveOptions};
pub use doctor::Finding;
pub use hwloc::HwlocError;
pub use load::{FileFormat, LoadError};
pub use model::Topology;
pub use nccl::{to_nccl_xml, NcclImportError};
pub use path::{Device, PathClass};
pub use plan::LocalPlanOptions;
pub use sysfs::SysfsRoot;
