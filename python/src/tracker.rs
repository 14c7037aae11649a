//! `cohort.Tracker` and `cohort.init`: a trial's metrics, hyperparameters, checkpoints and
//! end, written by `cohort_catalog::Tracker` (its buffering, syncing and crash guarantees
//! hold unchanged from Python).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cohort_catalog::{Catalog, StopReason, Tracker as RustTracker, TrackerOptions};
use cohort_collectives::ReduceOp;
use cohort_proto::catalog::TrialState;
use cohort_proto::env as vars;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::errors;

pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Tracker>()?;
    module.add_class::<Checkpoint>()?;
    module.add_function(wrap_pyfunction!(init, module)?)?;
    Ok(())
}

/// Records one trial: metrics every step, checkpoints, its hyperparameters and its end.
///
/// Get one with `Tracker.from_env()` inside `cohort run` or `srun --cohort`, or with
/// `cohort.init(experiment=..., hparams=...)` in a plain `python train.py`. Only rank 0
/// writes: on other ranks logging is a cheap no-op, while `hparams`, `latest_checkpoint()`
/// and `should_stop()` read the run's trial and answer as on rank 0. Points are buffered and
/// written at least every second; `sync()` (and `checkpoint`, `finish`) make everything
/// logged so far durable. Used as a context manager, the trial ends `completed`, or `failed` with the
/// exception's message when the block raises.
#[pyclass(module = "cohort", frozen)]
pub(crate) struct Tracker {
    /// `None` once finished; a disabled tracker is `Some` of a tracker that records nothing.
    /// Calls clone the `Arc` and run without holding this lock, so threads can log, sync and
    /// checkpoint at once (the Rust tracker is shared between threads).
    inner: Mutex<Option<Arc<RustTracker>>>,
    enabled: bool,
    experiment: Option<String>,
    trial: Option<u64>,
    trial_dir: Option<PathBuf>,
    /// The metric names of the previous `log` call.
    names: Mutex<NameCache>,
    /// Whether `should_stop` agrees through the shared communicator (set up once).
    agreement: AtomicBool,
    /// `exit_status` as it was when the tracker finished.
    finished_status: AtomicI32,
}

/// The job's number of ranks (`COHORT_WORLD_SIZE`; 1 outside a launcher).
fn world_size() -> u32 {
    std::env::var(vars::WORLD_SIZE)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The metric names of a `log` call, by key object and as text: a training loop passes the
/// same (interned) key objects every step, so their text is read once.
#[derive(Default)]
struct NameCache {
    keys: Vec<Py<PyAny>>,
    names: Vec<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tracker {
    fn wrap(inner: RustTracker) -> Tracker {
        let trial = inner.trial().cloned();
        Tracker {
            enabled: trial.is_some(),
            experiment: trial.as_ref().map(|t| t.experiment.clone()),
            trial: trial.as_ref().map(|t| t.id),
            trial_dir: trial.map(|t| t.dir),
            inner: Mutex::new(Some(Arc::new(inner))),
            names: Mutex::new(NameCache::default()),
            agreement: AtomicBool::new(false),
            finished_status: AtomicI32::new(0),
        }
    }

    /// The tracker, agreeing through the process's shared communicator when the job has
    /// several ranks (set up at the first call).
    fn agreeing(&self, py: Python<'_>) -> PyResult<Arc<RustTracker>> {
        let tracker = self.live()?;
        if !self.agreement.swap(true, Ordering::AcqRel) && world_size() > 1 {
            let comm = crate::comm::shared(py, None);
            let comm = match comm {
                Ok(comm) => comm,
                Err(e) => {
                    self.agreement.store(false, Ordering::Release);
                    return Err(e);
                }
            };
            tracker.agree_through(move |mine| {
                let mut code = [mine];
                comm.allreduce(&mut code, ReduceOp::Max)
                    .map_err(|e| e.to_string())?;
                Ok(code[0])
            });
        }
        Ok(tracker)
    }

    fn live(&self) -> PyResult<Arc<RustTracker>> {
        lock(&self.inner)
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("this tracker has finished"))
    }
}

fn state_of(text: &str) -> PyResult<TrialState> {
    let state: TrialState = text.parse().map_err(|e: String| PyValueError::new_err(e))?;
    if !state.is_final() {
        return Err(PyValueError::new_err(format!(
            "state {text:?}: a trial finishes completed, failed or killed"
        )));
    }
    Ok(state)
}

/// A Python value as JSON, by Python's own `json` module (so what it refuses is what a user
/// knows it refuses); `what` names the argument in the error.
fn to_json(py: Python<'_>, value: &Bound<'_, PyAny>, what: &str) -> PyResult<serde_json::Value> {
    let text: String = py
        .import("json")?
        .call_method1("dumps", (value,))
        .map_err(|e| PyTypeError::new_err(format!("{what}: {e}")))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
}

/// JSON as Python values, by Python's `json` module.
pub(crate) fn from_json<'py>(
    py: Python<'py>,
    value: &impl serde::Serialize,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| PyValueError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A dict of JSON values keyed by strings; `what` names the argument.
fn json_map(
    py: Python<'_>,
    value: Option<&Bound<'_, PyAny>>,
    what: &str,
) -> PyResult<BTreeMap<String, serde_json::Value>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(BTreeMap::new());
    };
    if !value.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a dict, not {}",
            value.get_type().name()?
        )));
    }
    match to_json(py, value, what)? {
        serde_json::Value::Object(map) => Ok(map.into_iter().collect()),
        _ => Err(PyTypeError::new_err(format!("{what} must be a dict"))),
    }
}

/// Starts tracking a new trial of `experiment` from a plain `python train.py`.
///
/// The catalog is `catalog`, else `COHORT_CATALOG`, else the cluster's configured one, else
/// `./cohort-catalog` (created if absent). `hparams` (a dict of JSON values) is recorded as
/// the trial's hyperparameters. Inside `cohort run` or `srun --cohort` with an experiment,
/// the launcher's trial is used instead and `hparams` are added to it. On ranks other than 0
/// the tracker records nothing.
#[pyfunction]
#[pyo3(signature = (experiment, hparams=None, catalog=None))]
fn init(
    py: Python<'_>,
    experiment: &str,
    hparams: Option<&Bound<'_, PyAny>>,
    catalog: Option<PathBuf>,
) -> PyResult<Tracker> {
    if experiment.trim().is_empty() {
        return Err(PyValueError::new_err("experiment: the name is empty"));
    }
    let hparams = json_map(py, hparams, "hparams")?;
    let rank = cohort_catalog::tracker::launcher_rank();
    let launched = std::env::var_os(vars::TRIAL).is_some() && catalog.is_none();
    if !launched && rank != 0 && std::env::var(vars::TRACK_ALL_RANKS).as_deref() != Ok("1") {
        return Ok(Tracker::wrap(RustTracker::disabled()));
    }
    let options = TrackerOptions {
        rank,
        ..TrackerOptions::default()
    };
    let tracker = py
        .detach(|| {
            if launched {
                // Rank 0 writes into the launcher's trial; the others follow it.
                let tracker = RustTracker::from_env()?;
                if !hparams.is_empty() {
                    tracker.log_hparams(hparams)?;
                }
                return Ok(tracker);
            }
            let root = match catalog {
                Some(root) => root,
                None => cohort_catalog::default_root()?,
            };
            let catalog = Catalog::open_or_create(root)?;
            let command: Vec<String> = std::env::args().collect();
            RustTracker::new_trial(&catalog, experiment, hparams, command, options)
        })
        .map_err(errors::catalog)?;
    Ok(Tracker::wrap(tracker))
}

#[pymethods]
impl Tracker {
    /// The tracker the launcher's environment describes (`COHORT_CATALOG`,
    /// `COHORT_EXPERIMENT`, `COHORT_TRIAL`, the rank). Ranks other than 0, and a process
    /// started by neither `cohort run` nor `srun --cohort` with an experiment, get a tracker
    /// that records nothing.
    #[staticmethod]
    fn from_env(py: Python<'_>) -> PyResult<Tracker> {
        let tracker = py.detach(RustTracker::from_env).map_err(errors::catalog)?;
        Ok(Tracker::wrap(tracker))
    }

    /// Records `metrics` (a dict of metric name to number) at `step` (an int >= 0). Raises
    /// `TypeError` or `ValueError` naming the key and value at fault, recording nothing of
    /// the call.
    fn log(&self, metrics: &Bound<'_, PyDict>, step: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.enabled {
            return Ok(());
        }
        let tracker = self.live()?;
        let step: i64 = step
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("step: {} is not an int", repr(step))))?;
        if step < 0 {
            return Err(PyValueError::new_err(format!(
                "step: {step} is negative (steps count from 0)"
            )));
        }
        // Reading keys and values can run Python code (a value's __float__) and so let another
        // thread in: a second logging thread then finds the cache taken and reads its own names
        // instead of waiting for it.
        let mut guard = self.names.try_lock().ok();
        let mut own = NameCache::default();
        let cache = guard.as_deref_mut().unwrap_or(&mut own);
        // A snapshot of the items: a value's __float__ may change the dict under us.
        let items = metrics.items();
        let count = items.len();
        let mut values = Vec::with_capacity(count);
        for (i, item) in items.iter().enumerate() {
            let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
            if i >= cache.keys.len() || !cache.keys[i].bind(key.py()).is(&key) {
                let name: &Bound<'_, PyString> = key.cast().map_err(|_| {
                    PyTypeError::new_err(format!("metric names are strings, not {}", repr(&key)))
                })?;
                let name = name.to_cow()?.into_owned();
                if i < cache.keys.len() {
                    cache.keys[i] = key.clone().unbind();
                    cache.names[i] = name;
                } else {
                    cache.keys.push(key.clone().unbind());
                    cache.names.push(name);
                }
            }
            let number: f64 = value.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "metric {:?}: {} is not a number",
                    cache.names[i],
                    repr(&value)
                ))
            })?;
            values.push(number);
        }
        cache.keys.truncate(count);
        cache.names.truncate(count);
        let pairs: Vec<(&str, f64)> = cache.names.iter().map(String::as_str).zip(values).collect();
        // Without the GIL: the call waits while the tracker's flush thread writes or fsyncs,
        // and other Python threads must not wait with it.
        metrics
            .py()
            .detach(|| tracker.log_metrics(step, &pairs))
            .map_err(errors::catalog)
    }

    /// The trial's hyperparameters (a dict; on every rank of a launched run, the run's).
    #[getter]
    fn hparams<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let tracker = self.live()?;
        let hparams = py.detach(|| tracker.hparams()).map_err(errors::catalog)?;
        drop(tracker); // before any Python code runs (finish waits for every reference)
        from_json(py, &hparams)
    }

    /// Records the checkpoint at `path` (a file or directory already written) taken at
    /// `step`, with optional `metadata` (a dict of JSON values). Durable when it returns.
    #[pyo3(signature = (path, step, metadata=None))]
    fn checkpoint(
        &self,
        py: Python<'_>,
        path: PathBuf,
        step: i64,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if !self.enabled {
            return Ok(());
        }
        if step < 0 {
            return Err(PyValueError::new_err(format!("step: {step} is negative")));
        }
        let metadata = json_map(py, metadata, "metadata")?;
        let tracker = self.live()?;
        py.detach(|| tracker.checkpoint(&path, step, metadata))
            .map_err(errors::catalog)
    }

    /// The checkpoint to resume from: the trial's latest recorded one whose file still
    /// exists, or None. A trial restarted or promoted by a search continues from there.
    fn latest_checkpoint(&self, py: Python<'_>) -> PyResult<Option<Checkpoint>> {
        let tracker = self.live()?;
        let latest = py
            .detach(|| tracker.latest_checkpoint())
            .map_err(errors::catalog)?;
        drop(tracker); // before any Python code runs (finish waits for every reference)
        latest
            .map(|c| {
                Ok(Checkpoint {
                    path: c.path,
                    step: c.step,
                    size: c.size,
                    at: c.at,
                    metadata: from_json(py, &c.metadata)?.unbind(),
                })
            })
            .transpose()
    }

    /// Whether to checkpoint and exit after `step`: the search gave this run of the trial
    /// that length or asked the trial to stop, or Slurm warned the job (its stop signal,
    /// SIGUSR2 unless COHORT_STOP_SIGNAL says otherwise, ahead of the time limit; SIGTERM at
    /// a preemption). In a job of several ranks every rank must call it at the same steps:
    /// they agree (one allreduce of one byte over `Communicator.shared()`), so all of them
    /// get the same answer at the same step. Once true, it stays true.
    fn should_stop(&self, py: Python<'_>, step: i64) -> PyResult<bool> {
        Ok(self.stop_reason(py, step)?.is_some())
    }

    /// The same decision as `should_stop(step)` (one per step, whichever is asked first),
    /// for loops that checkpoint on it.
    fn should_checkpoint(&self, py: Python<'_>, step: i64) -> PyResult<bool> {
        self.should_stop(py, step)
    }

    /// Why to stop after `step`, or None: "length" (the search's), "asked" (the search or
    /// `cohort search stop`), "warning" (Slurm's stop signal) or "terminated" (SIGTERM).
    fn stop_reason(&self, py: Python<'_>, step: i64) -> PyResult<Option<&'static str>> {
        let tracker = self.agreeing(py)?;
        let reason = py
            .detach(|| tracker.stop_reason(step))
            .map_err(errors::catalog)?;
        Ok(reason.map(|r| match r {
            StopReason::Length => "length",
            StopReason::Asked => "asked",
            StopReason::Warning => "warning",
            StopReason::Terminated => "terminated",
        }))
    }

    /// The status to exit with once stopped and checkpointed: 0, 75 after Slurm's stop
    /// signal, 143 after SIGTERM (the statuses by which the Slurm plugin, `cohort run` and a
    /// search tell a preempted run from a failed one): `sys.exit(tracker.exit_status)`.
    #[getter]
    fn exit_status(&self) -> i32 {
        match lock(&self.inner).as_ref() {
            Some(tracker) => tracker.exit_status(),
            None => self.finished_status.load(Ordering::Acquire),
        }
    }

    /// Writes and fsyncs everything logged so far.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let tracker = self.live()?;
        py.detach(|| tracker.sync()).map_err(errors::catalog)
    }

    /// Ends the trial as `state` ("completed", "failed" or "killed"), with an optional
    /// message saying why. Everything logged is durable when it returns. A second call does
    /// nothing.
    #[pyo3(signature = (state="completed", message=None))]
    fn finish(&self, py: Python<'_>, state: &str, message: Option<String>) -> PyResult<()> {
        let state = state_of(state)?;
        let Some(mut shared) = lock(&self.inner).take() else {
            return Ok(());
        };
        // Another thread's call still running (a sync, a checkpoint) holds a reference for
        // as long as it runs; finish after it.
        let tracker = loop {
            match Arc::try_unwrap(shared) {
                Ok(tracker) => break tracker,
                Err(again) => {
                    py.detach(|| std::thread::sleep(Duration::from_millis(1)));
                    if let Err(interrupted) = py.check_signals() {
                        *lock(&self.inner) = Some(again);
                        return Err(interrupted);
                    }
                    shared = again;
                }
            }
        };
        self.finished_status
            .store(tracker.exit_status(), Ordering::Release);
        py.detach(|| tracker.finish_with_message(state, message))
            .map_err(errors::catalog)
    }

    /// Whether this tracker records (rank 0 of a run that has a trial).
    #[getter]
    fn enabled(&self) -> bool {
        self.enabled
    }

    /// The experiment's name, or None when this tracker records nothing.
    #[getter]
    fn experiment(&self) -> Option<String> {
        self.experiment.clone()
    }

    /// The trial's number, or None when this tracker records nothing.
    #[getter]
    fn trial(&self) -> Option<u64> {
        self.trial
    }

    /// The trial's directory in the catalog, or None when this tracker records nothing.
    #[getter]
    fn trial_dir(&self) -> Option<PathBuf> {
        self.trial_dir.clone()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Finishes the trial: `completed`, or `failed` with the exception's type and message.
    #[pyo3(signature = (*exc))]
    fn __exit__(&self, py: Python<'_>, exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        let error = exc.get_item(1).ok().filter(|e| !e.is_none());
        match error {
            None => self.finish(py, "completed", None)?,
            Some(error) => {
                let kind = error.get_type().name()?.to_string();
                let message = format!("{kind}: {}", error.str()?);
                self.finish(py, "failed", Some(message))?;
            }
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match (&self.experiment, self.trial) {
            (Some(experiment), Some(trial)) => format!("<cohort.Tracker {experiment}/{trial}>"),
            _ => "<cohort.Tracker (records nothing on this rank)>".to_owned(),
        }
    }
}

fn repr(value: &Bound<'_, PyAny>) -> String {
    value
        .repr()
        .map_or_else(|_| "<unprintable>".to_owned(), |r| r.to_string())
}

/// A recorded checkpoint.
#[pyclass(module = "cohort", frozen, get_all)]
pub(crate) struct Checkpoint {
    /// Absolute path of the checkpoint file or directory.
    path: String,
    /// The training step it was taken at.
    step: i64,
    /// Its size in bytes when recorded.
    size: u64,
    /// When it was recorded (Unix seconds).
    at: f64,
    /// The metadata given with it (a dict).
    metadata: Py<PyAny>,
}

#[pymethods]
impl Checkpoint {
    fn __repr__(&self) -> String {
        format!(
            "<cohort.Checkpoint step={} path={:?}>",
            self.step, self.path
        )
    }
}
