//! The catalog commands: `exp`, `trials`, `trial show`, `metrics`, `compare`, `plot`,
//! `export`, `ckpt`, `index`, `log metric`, `log checkpoint`, `model`.
//!
//! Tables by default, `--json` with the shapes documented in `docs/catalog.md`. Files that a
//! query skipped are named on stderr as `cohort: warning: FILE: problem`; the rest is shown.
//! This module holds what the commands share (the catalog option, loading an experiment or a
//! trial, warnings); `query.rs` the queries, `admin.rs` checkpoint collection and the index,
//! `log.rs` `cohort log`, `model.rs` `cohort model`, and `format.rs` the tables and JSON they print.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use cohort_catalog::index::{IndexWrite, LoadOptions};
use cohort_catalog::{Catalog, Experiment, Loaded, Warning};
use cohort_proto::catalog::TrialSummary;

mod admin;
mod format;
mod log;
mod model;
mod query;

pub(crate) use admin::{ckpt, index, CkptCommand};
pub(crate) use log::{log, LogCommand};
pub(crate) use model::{model_command, ModelCommand};
pub(crate) use query::{
    compare, exp, export, metrics, plot, trial_show, trials, ExpCommand, ExportFormat, MetricsArgs,
    PlotArgs, TrialsArgs,
};

/// Where the catalog is.
#[derive(Debug, Clone, Args)]
pub(crate) struct CatalogArg {
    /// The catalog's directory (default: COHORT_CATALOG, else `catalog` in
    /// /etc/cohort/cohort.toml, else ./cohort-catalog).
    #[arg(long, value_name = "DIR", global = true)]
    catalog: Option<PathBuf>,
}

/// Resolves the catalog directory: the option, `COHORT_CATALOG`, `/etc/cohort/cohort.toml`'s
/// `catalog`, `./cohort-catalog`.
pub(crate) fn catalog_root(option: Option<&Path>) -> Result<PathBuf> {
    match option {
        Some(path) => Ok(path.to_path_buf()),
        None => Ok(cohort_catalog::default_root()?),
    }
}

impl CatalogArg {
    /// The directory given with --catalog, if any.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.catalog.as_deref()
    }

    fn open(&self) -> Result<Catalog> {
        Ok(Catalog::open(catalog_root(self.catalog.as_deref())?)?)
    }
}

pub(crate) fn warn_all(warnings: &[Warning]) {
    let mut stderr = std::io::stderr().lock();
    for warning in warnings {
        let _ = writeln!(stderr, "cohort: warning: {warning}");
    }
}

fn note_staleness(loaded: &Loaded) {
    if let Some(fs) = loaded.stats.shared_fs {
        eprintln!(
            "cohort: note: the catalog is on {fs}; what other nodes wrote in the last seconds may not show yet (attribute caching)"
        );
    }
}

/// `EXPERIMENT/NUMBER`.
fn parse_trial_ref(text: &str) -> Result<(String, u64)> {
    let Some((experiment, id)) = text.rsplit_once('/') else {
        bail!("{text:?}: name a trial as EXPERIMENT/NUMBER (for example mlp/3)");
    };
    let id: u64 = id
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?}: {id:?} is not a trial number"))?;
    Ok((experiment.to_owned(), id))
}

/// How long a load runs before it says how long it will take.
const SAY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// What a load that reads many trials says on stderr: on a terminal, a line kept up to date
/// (trials read, share, time left); elsewhere, once, how long it will take.
struct LoadProgress {
    started: std::time::Instant,
    terminal: bool,
    /// When the line was last drawn, and whether anything was said.
    state: std::sync::Mutex<(Option<std::time::Instant>, bool)>,
}

impl LoadProgress {
    fn new() -> LoadProgress {
        LoadProgress {
            started: std::time::Instant::now(),
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            state: std::sync::Mutex::new((None, false)),
        }
    }

    fn tell(&self, done: usize, total: usize) {
        let elapsed = self.started.elapsed();
        if elapsed < SAY_AFTER || done == 0 || done >= total {
            return;
        }
        #[allow(clippy::cast_precision_loss)]
        let left = elapsed.as_secs_f64() * (total - done) as f64 / done as f64;
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.terminal {
            if state
                .0
                .is_some_and(|at| at.elapsed() < std::time::Duration::from_millis(200))
            {
                return;
            }
            eprint!(
                "\r\x1b[Kcohort: reading trials: {} of {} ({}%), about {} left",
                done,
                total,
                done * 100 / total,
                format::duration_text(left)
            );
            *state = (Some(std::time::Instant::now()), true);
        } else if !state.1 {
            eprintln!(
                "cohort: reading {} trials takes about {} more",
                total,
                format::duration_text(left)
            );
            state.1 = true;
        }
    }

    fn done(&self) {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.terminal && state.1 {
            eprint!("\r\x1b[K");
        }
    }
}

fn load(catalog: &Catalog, experiment: &Experiment, use_index: bool) -> Result<Loaded> {
    let progress = LoadProgress::new();
    let loaded = cohort_catalog::load_with_progress(
        catalog,
        experiment,
        LoadOptions {
            use_index,
            write: IndexWrite::Auto,
        },
        &|done, total| progress.tell(done, total),
    );
    progress.done();
    let loaded = loaded?;
    warn_all(&loaded.warnings);
    note_staleness(&loaded);
    Ok(loaded)
}

fn one_trial(catalog: &Catalog, text: &str) -> Result<(Experiment, TrialSummary)> {
    let (name, id) = parse_trial_ref(text)?;
    let experiment = catalog.experiment(&name)?;
    let trial = catalog.trial(&experiment, id)?;
    let mut warnings = Vec::new();
    let summary = cohort_catalog::read::summarize(&trial.dir, None, &mut warnings)?;
    warn_all(&warnings);
    let Some(summary) = summary else {
        bail!("{}: not a complete trial", trial.dir.display());
    };
    Ok((experiment, summary))
}

fn targets(
    catalog: &Catalog,
    target: &str,
    use_index: bool,
) -> Result<(Experiment, Vec<TrialSummary>)> {
    if let Ok((name, id)) = parse_trial_ref(target) {
        if let Ok(experiment) = catalog.experiment(&name) {
            let (experiment, trial) =
                one_trial(catalog, &format!("{}/{id}", experiment.record.name))?;
            return Ok((experiment, vec![trial]));
        }
    }
    let experiment = catalog.experiment(target)?;
    let loaded = load(catalog, &experiment, use_index)?;
    Ok((experiment, loaded.trials))
}
