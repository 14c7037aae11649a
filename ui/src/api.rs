//! The JSON the pages read. Shapes are the CLI's where the CLI has one (`cohort exp list`,
//! `exp show`, `trials`, `trial show` with `--json`: `cohort_catalog::json`), plus what only a
//! page needs (a compact table, downsampled curves, a search's events); the registered models
//! are `cohort model list` and `model show`'s JSON. Errors are `{"error": "..."}` with 400 (a
//! bad query, naming what is wrong) or 404 (no such experiment, trial or model).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cohort_catalog::json::{
    experiment_detail_json, experiment_json, trial_detail_json, trial_json,
};
use cohort_catalog::read::shown_state;
use cohort_catalog::{CatalogError, Experiment};
use cohort_proto::catalog::TrialSummary;

use crate::cache::Entry;
use crate::form::pairs;
use crate::Shared;

/// An error answer.
pub(crate) fn error(status: StatusCode, message: String) -> Response {
    let mut response =
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Why a request cannot be answered: an error answer, small to pass around.
pub(crate) struct Failure(StatusCode, String);

impl Failure {
    pub(crate) fn new(status: StatusCode, message: String) -> Failure {
        Failure(status, message)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn catalog_error(e: &CatalogError) -> Failure {
    let status = match e {
        CatalogError::NoExperiment { .. }
        | CatalogError::NoTrial { .. }
        | CatalogError::NoModel { .. }
        | CatalogError::NoModelVersion { .. } => StatusCode::NOT_FOUND,
        CatalogError::BadQuery(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Failure::new(status, e.to_string())
}

/// A JSON answer tagged with `etag` (when given); a request that already has it gets 304.
fn json_answer(request: &HeaderMap, etag: Option<&str>, value: &serde_json::Value) -> Response {
    if let Some(tag) = etag {
        let seen = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        if seen == Some(tag) {
            return StatusCode::NOT_MODIFIED.into_response();
        }
    }
    let mut response = axum::Json(value).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(header::ETAG, tag);
    }
    response
}

/// Runs catalog reads off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e}"),
        ))
    })
}

fn experiment_and_trials(shared: &Shared, name: &str) -> Result<(Experiment, Arc<Entry>), Failure> {
    let experiment = shared
        .catalog
        .experiment(name)
        .map_err(|e| catalog_error(&e))?;
    let entry = shared
        .cache
        .load(&shared.catalog, &experiment)
        .map_err(|e| catalog_error(&e))?;
    Ok((experiment, entry))
}

/// What a search of the experiment optimises, when it has one.
fn search_goal(experiment: &Experiment) -> Option<(String, bool, String)> {
    let path = experiment.search_dir().spec();
    let spec = cohort_search::spec::ExperimentSpec::load(&path).ok()?;
    let name = match &spec.searcher.kind {
        cohort_search::spec::SearcherKind::Single => "single",
        cohort_search::spec::SearcherKind::Grid => "grid",
        cohort_search::spec::SearcherKind::Random => "random",
        cohort_search::spec::SearcherKind::Asha(_) => "asha",
    };
    Some((
        spec.searcher.metric.clone(),
        spec.searcher.smaller_is_better,
        name.to_owned(),
    ))
}

fn best(trials: &[TrialSummary], metric: &str, smaller: bool) -> Option<(u64, f64)> {
    trials
        .iter()
        .filter_map(|t| {
            let m = t.metrics.get(metric)?;
            let v = if smaller { m.min } else { m.max }?;
            v.is_finite().then_some((t.id, v))
        })
        .min_by(|a, b| {
            if smaller {
                a.1.total_cmp(&b.1)
            } else {
                b.1.total_cmp(&a.1)
            }
        })
}

fn warnings_json(warnings: &[cohort_catalog::Warning]) -> serde_json::Value {
    warnings.iter().map(ToString::to_string).collect()
}

/// `GET /api/experiments`: every experiment as `cohort exp list --json` shows it, with its
/// trials by state, the best value of its search's metric and its last activity.
pub(crate) async fn experiments(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let answer = blocking(move || {
        let (experiments, mut warnings) = shared
            .catalog
            .experiments()
            .map_err(|e| catalog_error(&e))?;
        let mut list = Vec::new();
        for experiment in &experiments {
            let entry = match shared.cache.load(&shared.catalog, experiment) {
                Ok(entry) => entry,
                Err(e) => {
                    warnings.push(cohort_catalog::Warning {
                        path: experiment.dir.clone(),
                        problem: e.to_string(),
                    });
                    continue;
                }
            };
            let trials = &entry.loaded.trials;
            let mut value = experiment_json(experiment, trials.len());
            let states = cohort_catalog::json::states_of(trials);
            let last = trials
                .iter()
                .filter_map(|t| t.last_write.or(t.state.as_ref().map(|s| s.updated)))
                .fold(None, |acc: Option<f64>, v| {
                    Some(acc.map_or(v, |a| a.max(v)))
                });
            let goal = search_goal(experiment);
            let best = goal.as_ref().and_then(|(metric, smaller, _)| {
                best(trials, metric, *smaller).map(|(trial, value)| {
                    serde_json::json!({"metric": metric, "trial": trial, "value": value})
                })
            });
            if let Some(object) = value.as_object_mut() {
                object.insert("states".into(), serde_json::json!(states));
                object.insert("last_activity".into(), serde_json::json!(last));
                object.insert("best".into(), best.unwrap_or(serde_json::Value::Null));
            }
            list.push(value);
        }
        Ok(serde_json::json!({"experiments": list, "warnings": warnings_json(&warnings)}))
    })
    .await;
    match answer {
        Ok(value) => json_answer(&headers, None, &value),
        Err(failure) => failure.into_response(),
    }
}

/// `GET /api/experiments/NAME`: `cohort exp show --json`, with the search's goal and the
/// hyperparameters' names.
pub(crate) async fn experiment(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let answer = blocking(move || {
        let (experiment, entry) = experiment_and_trials(&shared, &name)?;
        let mut value = experiment_detail_json(&experiment, &entry.loaded);
        let mut hparams: Vec<&String> = entry
            .loaded
            .trials
            .iter()
            .flat_map(|t| t.hparams.keys())
            .collect();
        hparams.sort();
        hparams.dedup();
        if let Some(object) = value.as_object_mut() {
            object.insert("hparams".into(), serde_json::json!(hparams));
            object.insert(
                "search".into(),
                search_goal(&experiment).map_or(serde_json::Value::Null, |(m, s, n)| {
                    serde_json::json!({"metric": m, "smaller_is_better": s, "searcher": n})
                }),
            );
            object.insert("warnings".into(), warnings_json(&entry.loaded.warnings));
        }
        Ok((value, entry.fingerprint.clone()))
    })
    .await;
    match answer {
        Ok((value, tag)) => json_answer(&headers, Some(&tag), &value),
        Err(failure) => failure.into_response(),
    }
}

/// The query of a trials request: `where` (repeated), `sort`, `desc`, `limit`.
struct TrialQuery {
    filters: Vec<String>,
    sort: Option<String>,
    desc: bool,
    limit: Option<usize>,
}

fn trial_query(raw: Option<&str>) -> Result<TrialQuery, Failure> {
    let mut query = TrialQuery {
        filters: Vec::new(),
        sort: None,
        desc: false,
        limit: None,
    };
    for (key, value) in pairs(raw.unwrap_or("")) {
        match key.as_str() {
            "where" if !value.trim().is_empty() => query.filters.push(value),
            "sort" if !value.trim().is_empty() => query.sort = Some(value),
            "desc" => query.desc = value == "1" || value == "true",
            "limit" => {
                query.limit = Some(value.parse().map_err(|_| {
                    Failure::new(
                        StatusCode::BAD_REQUEST,
                        format!("limit={value:?}: not a number of trials"),
                    )
                })?);
            }
            _ => {}
        }
    }
    Ok(query)
}

fn chosen<'a>(
    trials: &'a [TrialSummary],
    q: &TrialQuery,
) -> Result<Vec<&'a TrialSummary>, Failure> {
    cohort_catalog::query::query(
        trials,
        &q.filters,
        q.sort.as_deref().map(|s| (s, q.desc)),
        q.limit,
    )
    .map_err(|e| catalog_error(&e))
}

/// `GET /api/experiments/NAME/trials?where=..&sort=..&desc=1&limit=N`: the trials
/// `cohort trials NAME --json` lists for the same query, in its order.
pub(crate) async fn trials(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let answer = blocking(move || {
        let q = trial_query(raw.as_deref())?;
        let (_, entry) = experiment_and_trials(&shared, &name)?;
        let list: Vec<serde_json::Value> = chosen(&entry.loaded.trials, &q)?
            .into_iter()
            .map(trial_json)
            .collect();
        Ok(serde_json::Value::Array(list))
    })
    .await;
    match answer {
        Ok(value) => json_answer(&headers, None, &value),
        Err(failure) => failure.into_response(),
    }
}

/// `GET /api/experiments/NAME/table?where=..&sort=..&desc=1`: the same trials as a compact
/// table for the page: column names once, then one row per trial: `[id, state, restarts,
/// last activity, hyperparameters..., each metric's last value...]`.
pub(crate) async fn table(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query_text = raw.clone().unwrap_or_default();
    let answer = blocking(move || {
        let q = trial_query(raw.as_deref())?;
        let (_, entry) = experiment_and_trials(&shared, &name)?;
        let trials = &entry.loaded.trials;
        let mut hparams: Vec<&String> = trials.iter().flat_map(|t| t.hparams.keys()).collect();
        hparams.sort();
        hparams.dedup();
        let mut metrics: Vec<&String> = trials.iter().flat_map(|t| t.metrics.keys()).collect();
        metrics.sort();
        metrics.dedup();
        let rows: Vec<serde_json::Value> = chosen(trials, &q)?
            .into_iter()
            .map(|t| {
                let mut row = vec![
                    serde_json::json!(t.id),
                    serde_json::json!(shown_state(t).map(|s| s.as_str())),
                    serde_json::json!(t.state.as_ref().map_or(0, |s| s.restarts.len())),
                    serde_json::json!(t.last_write.or(t.state.as_ref().map(|s| s.updated))),
                ];
                row.extend(
                    hparams
                        .iter()
                        .map(|h| t.hparams.get(*h).cloned().unwrap_or(serde_json::Value::Null)),
                );
                row.extend(metrics.iter().map(|m| {
                    t.metrics
                        .get(*m)
                        .filter(|s| s.last.is_finite())
                        .map_or(serde_json::Value::Null, |s| serde_json::json!(s.last))
                }));
                serde_json::Value::Array(row)
            })
            .collect();
        Ok((
            serde_json::json!({
                "total": trials.len(),
                "hparams": hparams,
                "metrics": metrics,
                "rows": rows,
                "damaged": trials.iter().filter(|t| !t.damage.is_empty()).map(|t| t.id).collect::<Vec<_>>(),
            }),
            entry.fingerprint.clone(),
        ))
    })
    .await;
    match answer {
        Ok((value, tag)) => {
            let tag = format!("\"{:x}\"", fnv(format!("{tag}{query_text}").as_bytes()));
            json_answer(&headers, Some(&tag), &value)
        }
        Err(failure) => failure.into_response(),
    }
}

fn trial_id(text: &str) -> Result<u64, Failure> {
    text.parse().map_err(|_| {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!("{text:?} is not a trial number"),
        )
    })
}

/// The trial's output file, when it has one: a search's local run (`output.log`) or its
/// Slurm job (`slurm-<job>.out`, the job its state names), as the catalog names them.
fn output_file(
    dir: &Path,
    state: Option<&cohort_proto::catalog::StateRecord>,
) -> Option<std::path::PathBuf> {
    let slurm = state
        .and_then(|s| s.slurm_job.as_ref())
        .and_then(|job| job.parse::<u32>().ok())
        .map(|job| cohort_catalog::catalog::slurm_output(dir, job));
    slurm
        .into_iter()
        .chain(std::iter::once(cohort_catalog::catalog::output_log(dir)))
        .find(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
}

/// `GET /api/experiments/NAME/trials/ID`: `cohort trial show --json`, with its output file's
/// size when the catalog knows one.
pub(crate) async fn trial(
    State(shared): State<Arc<Shared>>,
    UrlPath((name, id)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let answer = blocking(move || {
        let id = trial_id(&id)?;
        let experiment = shared
            .catalog
            .experiment(&name)
            .map_err(|e| catalog_error(&e))?;
        let trial = shared
            .catalog
            .trial(&experiment, id)
            .map_err(|e| catalog_error(&e))?;
        let mut warnings = Vec::new();
        let summary = cohort_catalog::read::summarize(&trial.dir, None, &mut warnings)
            .map_err(|e| catalog_error(&e))?
            .ok_or_else(|| {
                Failure::new(
                    StatusCode::NOT_FOUND,
                    format!("trial {id} of {name} is not complete (no trial.json)"),
                )
            })?;
        let mut value = trial_detail_json(&experiment, &summary);
        if let Some(object) = value.as_object_mut() {
            let output = output_file(&trial.dir, summary.state.as_ref()).and_then(|p| {
                let bytes = std::fs::symlink_metadata(&p).ok()?.len();
                Some(serde_json::json!({
                    "file": p.file_name()?.to_string_lossy(),
                    "bytes": bytes,
                }))
            });
            object.insert("output".into(), output.unwrap_or(serde_json::Value::Null));
            object.insert("warnings".into(), warnings_json(&warnings));
        }
        Ok(value)
    })
    .await;
    match answer {
        Ok(value) => json_answer(&headers, None, &value),
        Err(failure) => failure.into_response(),
    }
}

/// The most of an output file one request returns.
const OUTPUT_MAX: u64 = 1 << 20;

/// `GET /api/experiments/NAME/trials/ID/output?bytes=N`: the last N bytes (default 64 KiB, at
/// most 1 MiB) of the trial's output, as text. The file is opened without following a
/// symbolic link, and only when it lies inside the catalog.
pub(crate) async fn output(
    State(shared): State<Arc<Shared>>,
    UrlPath((name, id)): UrlPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let answer = blocking(move || {
        let id = trial_id(&id)?;
        let want = pairs(raw.as_deref().unwrap_or(""))
            .into_iter()
            .find(|(k, _)| k == "bytes")
            .map(|(_, v)| v.parse::<u64>())
            .transpose()
            .map_err(|_| Failure::new(StatusCode::BAD_REQUEST, "bytes: not a number".into()))?
            .unwrap_or(64 << 10)
            .min(OUTPUT_MAX);
        let experiment = shared
            .catalog
            .experiment(&name)
            .map_err(|e| catalog_error(&e))?;
        let trial = shared
            .catalog
            .trial(&experiment, id)
            .map_err(|e| catalog_error(&e))?;
        // The state alone names the Slurm job: the metric logs need not be read for this.
        let state = cohort_catalog::catalog::read_state(&trial.dir)
            .ok()
            .flatten();
        let path = output_file(&trial.dir, state.as_ref()).ok_or_else(|| {
            Failure::new(
                StatusCode::NOT_FOUND,
                format!("trial {id} of {name} has no output file"),
            )
        })?;
        read_tail(shared.catalog.root(), &path, want)
    })
    .await;
    match answer {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        Err(failure) => failure.into_response(),
    }
}

/// The last `want` bytes of `path`, which must be a regular file inside `root`, opened
/// without following a symbolic link.
fn read_tail(root: &Path, path: &Path, want: u64) -> Result<String, Failure> {
    let refused =
        |why: &str| Failure::new(StatusCode::FORBIDDEN, format!("{}: {why}", path.display()));
    let root = root
        .canonicalize()
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let parent = path
        .parent()
        .and_then(|p| p.canonicalize().ok())
        .ok_or_else(|| refused("cannot be found"))?;
    if !parent.starts_with(&root) {
        return Err(refused("lies outside the catalog"));
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            refused(&format!(
                "cannot be opened ({e}); a symbolic link is never followed"
            ))
        })?;
    let meta = file.metadata().map_err(|e| refused(&e.to_string()))?;
    if !meta.is_file() {
        return Err(refused("not a regular file"));
    }
    let start = meta.len().saturating_sub(want);
    file.seek(SeekFrom::Start(start))
        .map_err(|e| refused(&e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(want)
        .read_to_end(&mut bytes)
        .map_err(|e| refused(&e.to_string()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// At most this many points per curve, whatever a request asks.
const POINTS_MAX: usize = 20_000;

/// Keeps at most `budget` points of a curve, its shape kept: the first and last points, and
/// in each of `budget / 2` buckets of steps the lowest and the highest value, in step order.
pub fn downsample(
    points: &[cohort_catalog::read::Point],
    budget: usize,
) -> Vec<cohort_catalog::read::Point> {
    let budget = budget.max(4);
    if points.len() <= budget {
        return points.to_vec();
    }
    let buckets = budget / 2 - 1;
    let inner = &points[1..points.len() - 1];
    let mut out = Vec::with_capacity(budget);
    out.push(points[0]);
    for b in 0..buckets {
        let lo = inner.len() * b / buckets;
        let hi = inner.len() * (b + 1) / buckets;
        let slice = &inner[lo..hi];
        if slice.is_empty() {
            continue;
        }
        let (mut low, mut high) = (0, 0);
        for (i, p) in slice.iter().enumerate() {
            if p.value < slice[low].value {
                low = i;
            }
            if p.value > slice[high].value {
                high = i;
            }
        }
        let (first, second) = if low <= high {
            (low, high)
        } else {
            (high, low)
        };
        out.push(slice[first]);
        if second != first {
            out.push(slice[second]);
        }
    }
    out.push(points[points.len() - 1]);
    out
}

/// `GET /api/experiments/NAME/series?metric=M&trials=1,2,3&points=N`: metric M of each trial
/// (in the order given), downsampled to at most N points each (default 2,000) with its shape
/// kept, as `{"metric": M, "series": [{"trial": 1, "step": [...], "value": [...], "wall":
/// [...], "points": total}]}`.
pub(crate) async fn series(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let answer = blocking(move || {
        let mut metric = None;
        let mut ids: Vec<u64> = Vec::new();
        let mut budget = 2000usize;
        for (key, value) in pairs(raw.as_deref().unwrap_or("")) {
            match key.as_str() {
                "metric" => metric = Some(value),
                "trials" => {
                    for part in value.split(',').filter(|p| !p.is_empty()) {
                        ids.push(part.trim().parse().map_err(|_| {
                            Failure::new(StatusCode::BAD_REQUEST, format!("trials: {part:?} is not a trial number"))
                        })?);
                    }
                }
                "points" => {
                    budget = value.parse().map_err(|_| {
                        Failure::new(StatusCode::BAD_REQUEST, format!("points={value:?}: not a number"))
                    })?;
                }
                _ => {}
            }
        }
        let metric = metric.ok_or_else(|| Failure::new(StatusCode::BAD_REQUEST, "metric: missing".into()))?;
        if ids.len() > 1000 {
            return Err(Failure::new(StatusCode::BAD_REQUEST, format!("{} trials: at most 1000 curves at once", ids.len())));
        }
        let budget = budget.clamp(4, POINTS_MAX);
        let (experiment, entry) = experiment_and_trials(&shared, &name)?;
        let dirs: Vec<std::path::PathBuf> = ids.iter().map(|id| experiment.trial_dir(*id)).collect();
        let mut warnings = Vec::new();
        let histories = cohort_catalog::read::histories(&dirs, &metric, &mut warnings)
            .map_err(|e| catalog_error(&e))?;
        let series: Vec<serde_json::Value> = ids
            .iter()
            .zip(histories)
            .map(|(id, points)| {
                let kept = downsample(&points, budget);
                serde_json::json!({
                    "trial": id,
                    "points": points.len(),
                    "step": kept.iter().map(|p| p.step).collect::<Vec<_>>(),
                    "value": kept.iter().map(|p| if p.value.is_finite() { serde_json::json!(p.value) } else { serde_json::Value::Null }).collect::<Vec<_>>(),
                    "wall": kept.iter().map(|p| p.wall).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok((
            serde_json::json!({"metric": metric, "series": series, "warnings": warnings_json(&warnings)}),
            format!("{}-{}", entry.fingerprint, raw.unwrap_or_default()),
        ))
    })
    .await;
    match answer {
        Ok((value, tag)) => {
            let tag = format!("\"{:x}\"", fnv(tag.as_bytes()));
            json_answer(&headers, Some(&tag), &value)
        }
        Err(failure) => failure.into_response(),
    }
}

/// A 64-bit FNV-1a hash, for ETags.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `GET /api/experiments/NAME/search`: the search's goal and settings, and its event log
/// (assignments, launches, exits, reports, failures, the end), for the search page.
pub(crate) async fn search(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let answer = blocking(move || {
        let experiment = shared
            .catalog
            .experiment(&name)
            .map_err(|e| catalog_error(&e))?;
        let dir = experiment.search_dir();
        let spec = cohort_search::spec::ExperimentSpec::load(&dir.spec()).map_err(|e| {
            Failure::new(
                StatusCode::NOT_FOUND,
                format!("experiment {name} has no search: {e}"),
            )
        })?;
        let events = cohort_search::controller::read_events(&dir)
            .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let plan = cohort_search::preview::preview(&spec).ok();
        Ok(serde_json::json!({
            "experiment": name,
            "metric": spec.searcher.metric,
            "smaller_is_better": spec.searcher.smaller_is_better,
            "max_trials": spec.searcher.max_trials,
            "max_length": spec.searcher.max_length,
            "max_concurrent_trials": spec.searcher.max_concurrent_trials,
            "plan": plan,
            "events": events,
        }))
    })
    .await;
    match answer {
        Ok(value) => json_answer(&headers, None, &value),
        Err(failure) => failure.into_response(),
    }
}

/// `GET /api/models`: every registered model as `cohort model list --json` shows it.
pub(crate) async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let answer = blocking(move || {
        let mut warnings = Vec::new();
        let models = cohort_catalog::model::models(&shared.catalog, &mut warnings)
            .map_err(|e| catalog_error(&e))?;
        let list: Vec<serde_json::Value> = models
            .iter()
            .map(cohort_catalog::model::model_summary_json)
            .collect();
        Ok(serde_json::json!({"models": list, "warnings": warnings_json(&warnings)}))
    })
    .await;
    match answer {
        Ok(value) => json_answer(&headers, None, &value),
        Err(failure) => failure.into_response(),
    }
}

/// `GET /api/models/NAME`: `cohort model show NAME --json` (versions, aliases, their
/// history), with the files skipped.
pub(crate) async fn model(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let answer = blocking(move || {
        let mut warnings = Vec::new();
        let model = cohort_catalog::model::model(&shared.catalog, &name, &mut warnings)
            .map_err(|e| catalog_error(&e))?;
        let mut value = cohort_catalog::model::model_json(&model);
        if let Some(object) = value.as_object_mut() {
            object.insert("warnings".into(), warnings_json(&warnings));
        }
        Ok(value)
    })
    .await;
    match answer {
        Ok(value) => json_answer(&headers, None, &value),
        Err(failure) => failure.into_response(),
    }
}
