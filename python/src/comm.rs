//! `cohort._native.Communicator`: the collectives of `cohort-collectives` on tensor memory,
//! for the torch.distributed backend (`cohort/torch.py`). Every operation releases the GIL
//! while it runs and raises `cohort.CommError` naming the rank and host when a peer dies or
//! the deadline passes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_collectives::{CommOptions, Communicator as RustCommunicator, ReduceOp};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors;
use crate::tensor::{disjoint, element_size, view, Memory, Slice};

pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Communicator>()?;
    Ok(())
}

/// The ranks of the job this process belongs to, connected (shared memory on one machine,
/// TCP or RDMA between machines).
#[pyclass(module = "cohort", frozen)]
pub(crate) struct Communicator {
    inner: Arc<RustCommunicator>,
}

/// The process's shared communicator, once made: a job's rendezvous (rank 0's store
/// socket) serves one communicator per process, which the torch backend and the tracker's
/// agreement on when to stop share.
static SHARED: Mutex<Option<Arc<RustCommunicator>>> = Mutex::new(None);

/// Reads `COHORT_*`, with `timeout` (seconds) over `COHORT_TIMEOUT`.
fn options(timeout: Option<f64>) -> PyResult<CommOptions> {
    let mut options = CommOptions::from_env().map_err(errors::comm)?;
    if let Some(seconds) = timeout {
        if !(seconds > 0.0 && seconds < 1e9) {
            return Err(PyValueError::new_err(format!(
                "timeout: {seconds} is not a positive number of seconds"
            )));
        }
        options.timeout = Duration::from_secs_f64(seconds);
    }
    Ok(options)
}

/// The process's shared communicator, connected on first use (a collective call: every rank
/// of the job makes it).
pub(crate) fn shared(py: Python<'_>, timeout: Option<f64>) -> PyResult<Arc<RustCommunicator>> {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(comm) = shared.as_ref() {
        return Ok(Arc::clone(comm));
    }
    let options = options(timeout)?;
    let comm = py
        .detach(|| RustCommunicator::new(options))
        .map_err(errors::comm)?;
    let comm = Arc::new(comm);
    *shared = Some(Arc::clone(&comm));
    Ok(comm)
}

fn reduce_op(name: &str) -> PyResult<ReduceOp> {
    Ok(match name {
        "sum" => ReduceOp::Sum,
        "product" => ReduceOp::Prod,
        "min" => ReduceOp::Min,
        "max" => ReduceOp::Max,
        "avg" => ReduceOp::Avg,
        other => {
            return Err(PyValueError::new_err(format!(
                "reduce op {other:?}: give sum, product, min, max or avg"
            )))
        }
    })
}

/// Runs `$body` with `$s` bound to the typed slice of `$slice`, whatever its type.
macro_rules! on_slice {
    ($slice:expr, |$s:ident| $body:expr) => {
        match $slice {
            Slice::F32($s) => $body,
            Slice::F64($s) => $body,
            Slice::F16($s) => $body,
            Slice::Bf16($s) => $body,
            Slice::I32($s) => $body,
            Slice::I64($s) => $body,
            Slice::U8($s) => $body,
        }
    };
}

/// Runs `$body` with `$a`, `$b` the typed slices of `$x`, `$y` (of one type).
macro_rules! on_pair {
    ($x:expr, $y:expr, |$a:ident, $b:ident| $body:expr) => {
        match ($x, $y) {
            (Slice::F32($a), Slice::F32($b)) => $body,
            (Slice::F64($a), Slice::F64($b)) => $body,
            (Slice::F16($a), Slice::F16($b)) => $body,
            (Slice::Bf16($a), Slice::Bf16($b)) => $body,
            (Slice::I32($a), Slice::I32($b)) => $body,
            (Slice::I64($a), Slice::I64($b)) => $body,
            (Slice::U8($a), Slice::U8($b)) => $body,
            _ => Err(cohort_collectives::CommError::Invalid(
                "the input and output tensors differ in dtype".into(),
            )),
        }
    };
}

fn memory(ptr: usize, count: usize, dtype: &str) -> Memory<'_> {
    Memory { ptr, count, dtype }
}

#[pymethods]
impl Communicator {
    /// Connects to the other ranks of the job the launcher (`cohort run`, `srun --cohort`)
    /// described in `COHORT_*`. `timeout` (seconds) replaces `COHORT_TIMEOUT` as the deadline
    /// of set-up and of every operation.
    #[staticmethod]
    #[pyo3(signature = (timeout=None))]
    fn from_env(py: Python<'_>, timeout: Option<f64>) -> PyResult<Communicator> {
        let options = options(timeout)?;
        let inner = py
            .detach(|| RustCommunicator::new(options))
            .map_err(errors::comm)?;
        Ok(Communicator {
            inner: Arc::new(inner),
        })
    }

    /// The process's communicator, shared with the torch backend and with
    /// `Tracker.should_stop`'s agreement: made (from `COHORT_*`, like `from_env`) by the first
    /// caller, then the same one for every caller. `timeout` counts only for the first.
    #[staticmethod]
    #[pyo3(signature = (timeout=None))]
    fn shared(py: Python<'_>, timeout: Option<f64>) -> PyResult<Communicator> {
        Ok(Communicator {
            inner: shared(py, timeout)?,
        })
    }

    /// This rank.
    #[getter]
    fn rank(&self) -> u32 {
        self.inner.rank()
    }

    /// The number of ranks.
    #[getter]
    fn size(&self) -> u32 {
        self.inner.size()
    }

    /// How many peers each transport reaches, e.g. `shm:3 tcp:4`.
    fn transport_summary(&self) -> String {
        self.inner.transport_summary()
    }

    /// Reduces `count` elements of `dtype` at `ptr` across all ranks, in place.
    fn allreduce(
        &self,
        py: Python<'_>,
        ptr: usize,
        count: usize,
        dtype: &str,
        op: &str,
    ) -> PyResult<()> {
        let op = reduce_op(op)?;
        let slice = view(memory(ptr, count, dtype))?;
        py.detach(|| on_slice!(slice, |s| self.inner.allreduce(s, op)))
            .map_err(errors::comm)
    }

    /// Reduces into `root`'s elements (others' are scratch).
    fn reduce(
        &self,
        py: Python<'_>,
        ptr: usize,
        count: usize,
        dtype: &str,
        op: &str,
        root: u32,
    ) -> PyResult<()> {
        let op = reduce_op(op)?;
        let slice = view(memory(ptr, count, dtype))?;
        py.detach(|| on_slice!(slice, |s| self.inner.reduce(s, op, root)))
            .map_err(errors::comm)
    }

    /// Copies `root`'s elements to every rank.
    fn broadcast(
        &self,
        py: Python<'_>,
        ptr: usize,
        count: usize,
        dtype: &str,
        root: u32,
    ) -> PyResult<()> {
        let slice = view(memory(ptr, count, dtype))?;
        py.detach(|| on_slice!(slice, |s| self.inner.broadcast(s, root)))
            .map_err(errors::comm)
    }

    /// Gathers every rank's `count` elements at `send` into `recv` (size x `count`), in rank
    /// order.
    fn allgather(
        &self,
        py: Python<'_>,
        send: usize,
        recv: usize,
        count: usize,
        dtype: &str,
    ) -> PyResult<()> {
        let total = count.saturating_mul(self.inner.size() as usize);
        let size = element_size(dtype);
        disjoint(
            memory(send, count, dtype),
            size,
            memory(recv, total, dtype),
            size,
        )?;
        let input = view(memory(send, count, dtype))?;
        let output = view(memory(recv, total, dtype))?;
        py.detach(|| on_pair!(input, output, |a, b| self.inner.allgather(a, b)))
            .map_err(errors::comm)
    }

    /// Reduces `send` (size x `count` elements) across ranks and leaves this rank's block of
    /// `count` in `recv`.
    #[allow(clippy::too_many_arguments)]
    fn reduce_scatter(
        &self,
        py: Python<'_>,
        send: usize,
        recv: usize,
        count: usize,
        dtype: &str,
        op: &str,
    ) -> PyResult<()> {
        let op = reduce_op(op)?;
        let total = count.saturating_mul(self.inner.size() as usize);
        let size = element_size(dtype);
        disjoint(
            memory(send, total, dtype),
            size,
            memory(recv, count, dtype),
            size,
        )?;
        let input = view(memory(send, total, dtype))?;
        let output = view(memory(recv, count, dtype))?;
        py.detach(|| on_pair!(input, output, |a, b| self.inner.reduce_scatter(a, b, op)))
            .map_err(errors::comm)
    }

    /// Returns when every rank has called it.
    fn barrier(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.barrier()).map_err(errors::comm)
    }

    /// Makes every pending and later operation fail.
    fn abort(&self) {
        self.inner.abort();
    }
}
