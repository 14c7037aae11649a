//! Catalog queries for `cohort.Catalog` (python/cohort/catalog.py): the same loading,
//! filtering, sorting and JSON as `cohort exp list`, `cohort trials`, `cohort metrics` and
//! `cohort export`, answered as JSON text or raw arrays that the Python side turns into
//! objects, numpy arrays or data frames.

use std::path::{Path, PathBuf};

use cohort_catalog::export::Format;
use cohort_catalog::index::IndexWrite;
use cohort_catalog::json::{experiment_json, trial_json};
use cohort_catalog::read::history;
use cohort_catalog::{Catalog, CatalogError, Experiment, LoadOptions, Loaded};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors;

pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(catalog_root, module)?)?;
    module.add_function(wrap_pyfunction!(experiments_json, module)?)?;
    module.add_function(wrap_pyfunction!(trials_json, module)?)?;
    module.add_function(wrap_pyfunction!(metric_arrays, module)?)?;
    module.add_function(wrap_pyfunction!(export_bytes, module)?)?;
    module.add_function(wrap_pyfunction!(models_json, module)?)?;
    Ok(())
}

/// The catalog `path` names, or the default one (`COHORT_CATALOG`, the cluster's
/// configuration, `./cohort-catalog`), checked to be a catalog.
#[pyfunction]
#[pyo3(signature = (path=None))]
fn catalog_root(py: Python<'_>, path: Option<PathBuf>) -> PyResult<PathBuf> {
    py.detach(|| {
        let root = match path {
            Some(path) => path,
            None => cohort_catalog::default_root()?,
        };
        Catalog::open(&root).map(|c| c.root().to_path_buf())
    })
    .map_err(errors::catalog)
}

fn open(root: &Path, experiment: &str) -> Result<(Catalog, Experiment), CatalogError> {
    let catalog = Catalog::open(root)?;
    let experiment = catalog.experiment(experiment)?;
    Ok((catalog, experiment))
}

/// An experiment and its trials' summaries, as the CLI loads them (through the index).
fn load(root: &Path, experiment: &str) -> Result<(Experiment, Loaded), CatalogError> {
    let (catalog, experiment) = open(root, experiment)?;
    let loaded = cohort_catalog::load(
        &catalog,
        &experiment,
        LoadOptions {
            use_index: true,
            write: IndexWrite::Auto,
        },
    )?;
    Ok((experiment, loaded))
}

fn json_text(value: &serde_json::Value) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The experiments, as `cohort exp list --json` prints them.
#[pyfunction]
fn experiments_json(py: Python<'_>, root: PathBuf) -> PyResult<String> {
    let list = py
        .detach(|| {
            let catalog = Catalog::open(&root)?;
            let (experiments, _warnings) = catalog.experiments()?;
            Ok::<_, CatalogError>(
                experiments
                    .iter()
                    .map(|e| experiment_json(e, e.trial_count()))
                    .collect::<Vec<_>>(),
            )
        })
        .map_err(errors::catalog)?;
    json_text(&serde_json::Value::Array(list))
}

/// The registered models, each as `cohort model show NAME --json` prints it (versions,
/// aliases, alias history); only `name` when given.
#[pyfunction]
#[pyo3(signature = (root, name=None))]
fn models_json(py: Python<'_>, root: PathBuf, name: Option<String>) -> PyResult<String> {
    use cohort_catalog::model;
    let list = py
        .detach(|| {
            let catalog = Catalog::open(&root)?;
            let mut warnings = Vec::new();
            let models = match &name {
                Some(name) => vec![model::model(&catalog, name, &mut warnings)?],
                None => model::models(&catalog, &mut warnings)?,
            };
            Ok::<_, CatalogError>(models.iter().map(model::model_json).collect::<Vec<_>>())
        })
        .map_err(errors::catalog)?;
    json_text(&serde_json::Value::Array(list))
}

/// The trials of `experiment` that pass every filter of `filters`, sorted by `sort` (a field
/// as `cohort trials --sort` takes it), at most `limit`: as `cohort trials --json` prints them.
#[pyfunction]
#[pyo3(signature = (root, experiment, sort=None, desc=false, filters=Vec::new(), limit=None))]
fn trials_json(
    py: Python<'_>,
    root: PathBuf,
    experiment: &str,
    sort: Option<String>,
    desc: bool,
    filters: Vec<String>,
    limit: Option<usize>,
) -> PyResult<String> {
    let list = py
        .detach(|| {
            let (_, loaded) = load(&root, experiment)?;
            let chosen = cohort_catalog::query::query(
                &loaded.trials,
                &filters,
                sort.as_deref().map(|text| (text, desc)),
                limit,
            )?;
            Ok::<_, CatalogError>(chosen.into_iter().map(trial_json).collect::<Vec<_>>())
        })
        .map_err(errors::catalog)?;
    json_text(&serde_json::Value::Array(list))
}

/// The history of metric `name` of a trial: its steps (little-endian i64), values and wall
/// times (little-endian f64), as bytes for numpy or `array`. A metric the trial lacks raises
/// `KeyError` naming the ones it has.
#[pyfunction]
fn metric_arrays<'py>(
    py: Python<'py>,
    root: PathBuf,
    experiment: &str,
    trial: u64,
    name: String,
) -> PyResult<(
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
)> {
    let found = py
        .detach(|| {
            let (catalog, experiment) = open(&root, experiment)?;
            let trial = catalog.trial(&experiment, trial)?;
            let mut warnings = Vec::new();
            let wanted = [name.clone()];
            let mut data = history(&trial.dir, Some(&wanted), &mut warnings)?;
            Ok::<_, CatalogError>(match data.remove(&name) {
                Some(points) => Ok(points),
                None => Err(history(&trial.dir, None, &mut warnings)?
                    .into_keys()
                    .collect::<Vec<_>>()),
            })
        })
        .map_err(errors::catalog)?;
    let points = found.map_err(|known| {
        PyKeyError::new_err(format!(
            "trial {experiment}/{trial} has no metric {name:?} (it has: {})",
            cohort_catalog::query::list_or_none(&known)
        ))
    })?;
    let mut steps = Vec::with_capacity(points.len() * 8);
    let mut values = Vec::with_capacity(points.len() * 8);
    let mut walls = Vec::with_capacity(points.len() * 8);
    for point in &points {
        steps.extend_from_slice(&point.step.to_le_bytes());
        values.extend_from_slice(&point.value.to_le_bytes());
        walls.extend_from_slice(&point.wall.to_le_bytes());
    }
    Ok((
        PyBytes::new(py, &steps),
        PyBytes::new(py, &values),
        PyBytes::new(py, &walls),
    ))
}

/// Every point of `experiment` as `cohort export` writes it (`csv` or `parquet`), in memory.
#[pyfunction]
fn export_bytes<'py>(
    py: Python<'py>,
    root: PathBuf,
    experiment: &str,
    format: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let format = match format {
        "csv" => Format::Csv,
        "parquet" => Format::Parquet,
        other => {
            return Err(PyValueError::new_err(format!(
                "format {other:?}: give csv or parquet"
            )))
        }
    };
    let bytes = py
        .detach(|| {
            let (experiment, loaded) = load(&root, experiment)?;
            let trials: Vec<_> = loaded.trials.iter().collect();
            let mut out = Vec::new();
            let mut warnings = Vec::new();
            cohort_catalog::export::export(&experiment, &trials, format, &mut out, &mut warnings)?;
            Ok::<_, CatalogError>(out)
        })
        .map_err(errors::catalog)?;
    Ok(PyBytes::new(py, &bytes))
}
