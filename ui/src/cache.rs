//! Loaded experiments, kept for a moment: however many pages poll, each experiment is read
//! from the filesystem at most once per [`FRESH`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cohort_catalog::index::IndexWrite;
use cohort_catalog::{Catalog, CatalogError, Experiment, LoadOptions, Loaded};

/// How long a load answers for.
pub(crate) const FRESH: Duration = Duration::from_secs(2);

/// One experiment's trials as last loaded, and a fingerprint of them.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) loaded: Loaded,
    /// Changes when any trial changes: an ETag for answers made from it.
    pub(crate) fingerprint: String,
}

#[derive(Debug, Default)]
pub(crate) struct Cache {
    entries: Mutex<HashMap<String, (Instant, Arc<Entry>)>>,
}

impl Cache {
    /// The experiment's trials, loaded from its index and what is newer (never writing the
    /// index: the view is read-only), or as loaded less than [`FRESH`] ago.
    pub(crate) fn load(
        &self,
        catalog: &Catalog,
        experiment: &Experiment,
    ) -> Result<Arc<Entry>, CatalogError> {
        let name = &experiment.record.name;
        if let Some((at, entry)) = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            if at.elapsed() < FRESH {
                return Ok(Arc::clone(entry));
            }
        }
        let loaded = cohort_catalog::load(
            catalog,
            experiment,
            LoadOptions {
                use_index: true,
                write: IndexWrite::Never,
            },
        )?;
        let entry = Arc::new(Entry {
            fingerprint: fingerprint(&loaded),
            loaded,
        });
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), (Instant::now(), Arc::clone(&entry)));
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
