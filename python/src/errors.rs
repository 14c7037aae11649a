//! Python exceptions for the crates' errors: bad arguments are `ValueError`, everything else
//! a `cohort.CatalogError` or `cohort.CommError` carrying the Rust error's message (which
//! names the file, key, rank or host).

use cohort_catalog::CatalogError as RustCatalogError;
use pyo3::exceptions::{PyException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    cohort,
    CatalogError,
    PyException,
    "A catalog operation failed: a file could not be read or written, or a record is damaged. The message names the file."
);
pyo3::create_exception!(
    cohort,
    CommError,
    PyRuntimeError,
    "A collective failed: a rank died or stalled past the deadline, or the job's set-up is wrong. The message names the rank and host."
);

pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("CatalogError", py.get_type::<CatalogError>())?;
    module.add("CommError", py.get_type::<CommError>())?;
    Ok(())
}

/// A catalog error as the Python exception a caller expects.
pub(crate) fn catalog(error: RustCatalogError) -> PyErr {
    match error {
        RustCatalogError::BadMetricName { .. } | RustCatalogError::BadQuery(_) => {
            PyValueError::new_err(error.to_string())
        }
        other => CatalogError::new_err(other.to_string()),
    }
}

/// A collectives error as `cohort.CommError`, or `ValueError` for a bad argument (a root
/// that is no rank, buffers of mismatched sizes).
pub(crate) fn comm(error: impl Into<cohort_collectives::InitError>) -> PyErr {
    use cohort_collectives::{CommError as Rust, InitError};
    match error.into() {
        InitError::Comm(Rust::Invalid(problem)) => PyValueError::new_err(problem),
        other => CommError::new_err(other.to_string()),
    }
}
