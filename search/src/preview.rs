//! What a search would run, without running anything: trials per bracket and rung, and the
//! total training budget (in the unit of `max_length`).

use crate::searcher::{allocate, bracket_count};
use crate::spec::{ExperimentSpec, SearcherKind};

/// One rung of a bracket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RungPlan {
    /// Training length at the end of the rung.
    pub length: u64,
    /// Trials that reach it if every rung keeps its best 1/divisor.
    pub trials: u64,
}

/// One bracket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BracketPlan {
    /// Trials it starts.
    pub trials: u64,
    /// Its rungs.
    pub rungs: Vec<RungPlan>,
    /// Units it trains in all (stopped trials resume from checkpoints, so each unit once).
    pub budget: u64,
}

/// The whole search.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Preview {
    /// The searcher.
    pub searcher: String,
    /// Trials in all.
    pub trials: u64,
    /// Brackets (one for grid, random and single).
    pub brackets: Vec<BracketPlan>,
    /// Units of training in all.
    pub budget: u64,
}

/// What the preview says of the sampler: nothing for random sampling.
fn sampled_by(spec: &ExperimentSpec) -> String {
    match spec.searcher.sampler {
        crate::spec::Sampler::Random => String::new(),
        crate::spec::Sampler::Tpe => format!(
            ", sampled by TPE once {} trials have reported",
            crate::tpe::min_results(&spec.hparams)
        ),
    }
}

/// Computes the preview.
pub fn preview(spec: &ExperimentSpec) -> Result<Preview, String> {
    let s = &spec.searcher;
    // Budgets of absurd files (up to 2^63 trials of 2^63 steps) saturate rather than overflow.
    let whole = |trials: u64, name: &str| Preview {
        searcher: name.to_owned(),
        trials,
        brackets: vec![BracketPlan {
            trials,
            rungs: vec![RungPlan {
                length: s.max_length,
                trials,
            }],
            budget: trials.saturating_mul(s.max_length),
        }],
        budget: trials.saturating_mul(s.max_length),
    };
    Ok(match &s.kind {
        SearcherKind::Single => whole(1, "single"),
        SearcherKind::Random => whole(s.max_trials, &format!("random{}", sampled_by(spec))),
        SearcherKind::Grid => {
            let n = crate::space::grid_size(&spec.hparams)
                .map_err(|(name, problem)| format!("hyperparameters.{name}: {problem}"))?;
            whole(n, "grid")
        }
        SearcherKind::Asha(settings) => {
            let divisor = u64::from(settings.divisor);
            let n = bracket_count(settings.mode, settings.max_rungs);
            let rungs: Vec<u32> = (0..n).map(|b| settings.max_rungs - b).collect();
            let shares = allocate(s.max_trials, &rungs, divisor);
            let brackets: Vec<BracketPlan> = rungs
                .iter()
                .zip(shares)
                .map(|(&r, trials)| {
                    let mut budget = 0u64;
                    let mut previous = 0;
                    let plan: Vec<RungPlan> = (0..r)
                        .map(|k| {
                            let length = (s.max_length / divisor.saturating_pow(r - 1 - k)).max(1);
                            let reaching = trials / divisor.saturating_pow(k);
                            budget =
                                budget.saturating_add(reaching.saturating_mul(length - previous));
                            previous = length;
                            RungPlan {
                                length,
                                trials: reaching,
                            }
                        })
                        .collect();
                    BracketPlan {
                        trials,
                        rungs: plan,
                        budget,
                    }
                })
                .collect();
            Preview {
                searcher: format!(
                    "asha ({} bracket(s), divisor {divisor}){}",
                    brackets.len(),
                    sampled_by(spec)
                ),
                trials: s.max_trials,
                budget: brackets
                    .iter()
                    .fold(0u64, |sum, b| sum.saturating_add(b.budget)),
                brackets,
            }
        }
    })
}

impl Preview {
    /// As text for the terminal.
    pub fn render(&self, spec: &ExperimentSpec) -> String {
        let mut out = format!(
            "{}: {} searcher, {} trial(s), metric {} ({}), at most {} at once\n",
            spec.name,
            self.searcher,
            self.trials,
            spec.searcher.metric,
            if spec.searcher.smaller_is_better {
                "smaller is better"
            } else {
                "larger is better"
            },
            spec.searcher.max_concurrent_trials
        );
        for (i, bracket) in self.brackets.iter().enumerate() {
            if self.brackets.len() > 1 {
                out.push_str(&format!(
                    "bracket {i}: {} trial(s), budget {}\n",
                    bracket.trials, bracket.budget
                ));
            }
            for (k, rung) in bracket.rungs.iter().enumerate() {
                out.push_str(&format!(
                    "  rung {k}: {:>5} trial(s) train to length {}\n",
                    rung.trials, rung.length
                ));
            }
        }
        // In floating point: trials times length may pass u64 (and the budget saturate there).
        #[allow(clippy::cast_precision_loss)]
        let full = self.trials as f64 * spec.searcher.max_length as f64;
        #[allow(clippy::cast_precision_loss)]
        let share = if full > 0.0 {
            self.budget as f64 / full * 100.0
        } else {
            0.0
        };
        out.push_str(&format!(
            "total budget: {} (units of max_length {}), {share:.0}% of training every trial fully\n",
            self.budget, spec.searcher.max_length
        ));
        if matches!(spec.searcher.kind, crate::spec::SearcherKind::Asha(_))
            && spec.searcher.sampler == crate::spec::Sampler::Tpe
        {
            out.push_str(&format!(
                "  (asynchronous ASHA promotes each trial that enters the top of its rung; the TPE sampler's later trials are better, so more go on: the real budget is often several times this, at most {})\n",
                self.trials.saturating_mul(spec.searcher.max_length)
            ));
        }
        out.push_str(&format!(
            "each trial: {} node(s), {} GPU(s) per node; restarted up to {} time(s) after a failure\n",
            spec.nodes, spec.gpus_per_node, spec.searcher.max_restarts
        ));
        if spec.job_array {
            out.push_str(
                "under Slurm, the trials a round starts go as one job array per length and attempt\n",
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn asha_budget_counts_each_unit_once() {
        let text = r#"
name = "p"
command = ["x"]
[searcher]
name = "asha"
metric = "loss"
max_trials = 64
max_length = 64
divisor = 4
max_rungs = 4
mode = "aggressive"
[hyperparameters]
x = { type = "double", minval = 0.0, maxval = 1.0 }
"#;
        let spec = ExperimentSpec::parse(Path::new("p.toml"), text).unwrap();
        let p = preview(&spec).unwrap();
        let rungs: Vec<(u64, u64)> = p.brackets[0]
            .rungs
            .iter()
            .map(|r| (r.length, r.trials))
            .collect();
        assert_eq!(rungs, vec![(1, 64), (4, 16), (16, 4), (64, 1)]);
        // 64*1 + 16*3 + 4*12 + 1*48
        assert_eq!(p.budget, 64 + 48 + 48 + 48);
        assert!(p
            .render(&spec)
            .contains("rung 3:     1 trial(s) train to length 64"));
    }
}
