//! ASHA against random search on a simulated benchmark function (`cohort bench
//! search`): the file's ASHA searcher and a random search with the same trial length and
//! workers, each simulated several times with different seeds; random search's regret with
//! its whole budget is compared with ASHA's at a third of that budget and at its end.

use crate::simulate::{mean, mean_regret_at, simulate_repeated, SimOptions, SimResult};
use crate::spec::{ExperimentSpec, SearcherKind};

/// Why a comparison could not run.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The experiment file's searcher is not ASHA.
    #[error("the comparison needs an asha searcher; this file's searcher is not asha")]
    NotAsha,
    /// A simulation failed (the file does not fit the benchmark).
    #[error("{0}")]
    Simulation(String),
}

/// The runs of both searches and their budgets.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Trials of the random search.
    pub random_trials: u64,
    /// Trials of the ASHA search (the file's `max_trials`).
    pub asha_trials: u64,
    /// Random search's whole budget: its trials times the full length.
    pub random_budget: u64,
    /// The random search's runs.
    pub random: Vec<SimResult>,
    /// The ASHA search's runs.
    pub asha: Vec<SimResult>,
}

impl Comparison {
    /// Simulates `spec`'s ASHA search and a random search of `random_trials` trials, each
    /// `repeat` times (see [`simulate_repeated`]).
    pub fn run(
        spec: &ExperimentSpec,
        options: &SimOptions,
        repeat: u64,
        random_trials: u64,
    ) -> Result<Comparison, CompareError> {
        if !matches!(spec.searcher.kind, SearcherKind::Asha(_)) {
            return Err(CompareError::NotAsha);
        }
        let mut random = spec.clone();
        random.searcher.kind = SearcherKind::Random;
        random.searcher.max_trials = random_trials;
        let random_runs =
            simulate_repeated(&random, options, repeat).map_err(CompareError::Simulation)?;
        let asha_runs =
            simulate_repeated(spec, options, repeat).map_err(CompareError::Simulation)?;
        Ok(Comparison {
            random_trials,
            asha_trials: spec.searcher.max_trials,
            random_budget: random_trials * spec.searcher.max_length,
            random: random_runs,
            asha: asha_runs,
        })
    }

    /// A third of random search's budget, where ASHA is measured against it.
    pub fn third(&self) -> u64 {
        self.random_budget / 3
    }

    /// Random search's mean final regret.
    pub fn random_regret(&self) -> f64 {
        mean(self.random.iter().map(|r| r.regret))
    }

    /// ASHA's mean regret at a third of random search's budget.
    pub fn asha_regret_at_third(&self) -> f64 {
        mean_regret_at(&self.asha, self.third())
    }

    /// ASHA's mean final regret.
    pub fn asha_regret(&self) -> f64 {
        mean(self.asha.iter().map(|r| r.regret))
    }

    /// ASHA's mean budget spent.
    pub fn asha_budget(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let budgets = self.asha.iter().map(|r| r.budget as f64);
        mean(budgets)
    }

    /// Whether ASHA with a third of the budget does at least as well as random search with
    /// all of it.
    pub fn asha_wins(&self) -> bool {
        self.asha_regret_at_third() <= self.random_regret()
    }

    /// `points` points of both mean regret curves, at equal shares of random search's
    /// budget: (budget, random's regret, ASHA's regret).
    pub fn curve(&self, points: u64) -> Vec<(u64, f64, f64)> {
        (1..=points)
            .map(|i| {
                let budget = self.random_budget * i / points;
                (
                    budget,
                    mean_regret_at(&self.random, budget),
                    mean_regret_at(&self.asha, budget),
                )
            })
            .collect()
    }
}
