//! The native part of the `cohort` Python package (`cohort._native`): the tracker, catalog
//! queries and a communicator, each a thin layer over the Rust crates that do the work
//! (`cohort-catalog`, `cohort-collectives`). The Python-facing API, its docstrings and the
//! torch.distributed backend are in `python/cohort/`.
//!
//! Nothing here panics into Python: every error becomes a Python exception that names what
//! was wrong. Bad arguments raise `ValueError` or `TypeError` before anything is written.
//! Unsafe code is confined to `tensor.rs`, which views a tensor's memory for a collective.

#![deny(unsafe_code)]

use pyo3::prelude::*;

mod catalog;
mod comm;
mod errors;
mod tensor;
mod tracker;

/// The module `cohort._native`.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(module)?;
    tracker::register(module)?;
    catalog::register(module)?;
    comm::register(module)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
