//! Loaded experiments, kept for a moment: however many pages poll, each experiment is read
//! from the filesystem at most once per [`FRESH`]. An answer older than that is still given
//! at once while one background load replaces it (stale while revalidating), so a page of an
//! experiment of 10,000 trials never waits for the filesystem after its first load.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cohort_catalog::index::IndexWrite;
use cohort_catalog::{Catalog, CatalogError, Experiment, LoadOptions, Loaded};

/// How long a load answers for before it is reloaded.
pub(crate) const FRESH: Duration = Duration::from_secs(2);
/// How old an answer may be and still be given while a reload runs; older ones are reloaded
/// before answering (a page that comes back after a long pause waits once).
const STALE: Duration = Duration::from_secs(30);

/// One experiment's trials as last loaded, and a fingerprint of them.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) loaded: Loaded,
    /// Changes when any trial changes: an ETag for answers made from it.
    pub(crate) fingerprint: String,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, (Instant, Arc<Entry>)>,
    /// Experiments a background load is reading now.
    refreshing: HashSet<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Cache {
    inner: Arc<Mutex<Inner>>,
}

fn read(catalog: &Catalog, experiment: &Experiment) -> Result<Arc<Entry>, CatalogError> {
    let loaded = cohort_catalog::load(
        catalog,
        experiment,
        LoadOptions {
            use_index: true,
            write: IndexWrite::Never,
        },
    )?;
    Ok(Arc::new(Entry {
        fingerprint: fingerprint(&loaded),
        loaded,
    }))
}

impl Cache {
    /// The experiment's trials, loaded from its index and what is newer (never writing the
    /// index: the view is read-only).
    pub(crate) fn load(
        &self,
        catalog: &Catalog,
        experiment: &Experiment,
    ) -> Result<Arc<Entry>, CatalogError> {
        let name = experiment.record.name.clone();
        {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, entry)) = inner.entries.get(&name).cloned() {
                let age = at.elapsed();
                if age < FRESH {
                    return Ok(entry);
                }
                if age < STALE {
                    if inner.refreshing.insert(name.clone()) {
                        let shared = Arc::clone(&self.inner);
                        let (catalog, experiment) = (catalog.clone(), experiment.clone());
                        std::thread::spawn(move || {
                            let fresh = read(&catalog, &experiment);
                            let mut inner = shared.lock().unwrap_or_else(PoisonError::into_inner);
                            inner.refreshing.remove(&name);
                            if let Ok(entry) = fresh {
                                inner.entries.insert(name, (Instant::now(), entry));
                            }
                        });
                    }
                    return Ok(entry);
                }
            }
        }
        let entry = read(catalog, experiment)?;
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .insert(name, (Instant::now(), Arc::clone(&entry)));
        Ok(entry)
    }
}

/// The trials' count, latest write and latest state change, as text.
fn fingerprint(loaded: &Loaded) -> String {
    let last_write = loaded
        .trials
        .iter()
        .filter_map(|t| t.last_write)
        .fold(0.0f64, f64::max);
    let updated = loaded
        .trials
        .iter()
        .filter_map(|t| t.state.as_ref().map(|s| s.updated))
        .fold(0.0f64, f64::max);
    let points: u64 = loaded
        .trials
        .iter()
        .flat_map(|t| t.metrics.values().map(|m| m.count))
        .sum();
    format!(
        "\"{}-{last_write}-{updated}-{points}-{}\"",
        loaded.trials.len(),
        loaded.warnings.len()
    )
}
