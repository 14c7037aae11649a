//! Runs a searcher against a multi-fidelity benchmark function (`crate::functions`, chosen
//! by the file's `[simulation]` table) in simulated time: `workers` slots, a trial costs one
//! time unit per unit of length it trains, a stopped trial resumes from its checkpoint (no work
//! is repeated). The metric at length `L` is the function at fidelity `L` (fidelities
//! `1..=max_length`), so the full length is the exact function. The experiment's numeric
//! hyperparameters (sorted by name, as many as the function has coordinates) are the
//! coordinates, each scaled to `[0, 1]` over its range (log ones in the exponent).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::functions::{Function, MultiFidelity};
use crate::searcher::{build, Decision, Next};
use crate::space::Values;
use crate::spec::{ExperimentSpec, Hparam};

/// How to simulate.
#[derive(Debug, Clone, Copy)]
pub struct SimOptions {
    /// Parallel workers.
    pub workers: u64,
    /// The benchmark function.
    pub function: Function,
    /// Fidelity bias of the function.
    pub bias: f64,
    /// Fidelity noise of the function.
    pub noise: f64,
    /// Seed of the noise (the searcher's own seed is the file's).
    pub seed: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            workers: 16,
            function: Function::default(),
            bias: 0.5,
            noise: 0.1,
            seed: 1,
        }
    }
}

impl SimOptions {
    /// The options an experiment file's `[simulation]` table asks for (the defaults where it
    /// says nothing), with `workers` slots.
    pub fn for_spec(spec: &ExperimentSpec, workers: u64) -> SimOptions {
        let defaults = SimOptions::default();
        SimOptions {
            workers,
            function: spec.simulation.function,
            bias: spec.simulation.bias.unwrap_or(defaults.bias),
            noise: spec.simulation.noise.unwrap_or(defaults.noise),
            seed: defaults.seed,
        }
    }
}

/// One point of the regret curve: after `budget` units of training (and `time` of simulated
/// wall time), the best trial at full length has this regret.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CurvePoint {
    /// Units trained so far, all trials together.
    pub budget: u64,
    /// Simulated time.
    pub time: u64,
    /// The incumbent's value minus the global minimum.
    pub regret: f64,
}

/// What a simulation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimResult {
    /// Trials started.
    pub trials: u64,
    /// Units trained in all.
    pub budget: u64,
    /// Simulated time until the search ended.
    pub time: u64,
    /// The final regret (infinite when no trial reached the full length).
    pub regret: f64,
    /// The regret each time it improved.
    pub curve: Vec<CurvePoint>,
    /// Trials that reached the full length.
    pub completed: u64,
}

impl SimResult {
    /// The regret once `budget` units were spent (infinite before any trial completed).
    pub fn regret_at(&self, budget: u64) -> f64 {
        self.curve
            .iter()
            .take_while(|p| p.budget <= budget)
            .last()
            .map_or(f64::INFINITY, |p| p.regret)
    }
}

/// Simulates the search `repeat` times: run `i` (from 0) with the file's searcher seed plus
/// `i` and the noise seed `options.seed` plus `i`, so runs differ and each is reproducible.
pub fn simulate_repeated(
    spec: &ExperimentSpec,
    options: &SimOptions,
    repeat: u64,
) -> Result<Vec<SimResult>, String> {
    (0..repeat)
        .map(|i| {
            let mut spec = spec.clone();
            spec.searcher.seed = spec.searcher.seed.wrapping_add(i);
            simulate(
                &spec,
                &SimOptions {
                    seed: options.seed.wrapping_add(i),
                    ..*options
                },
            )
        })
        .collect()
}

/// The mean of `values` (NaN when there are none).
pub fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0.0), |(s, n), v| (s + v, n + 1.0));
    if n > 0.0 {
        sum / n
    } else {
        f64::NAN
    }
}

/// The mean regret of `runs` once `budget` units were spent.
pub fn mean_regret_at(runs: &[SimResult], budget: u64) -> f64 {
    mean(runs.iter().map(|r| r.regret_at(budget)))
}

fn coordinates(
    spec: &ExperimentSpec,
    function: Function,
    values: &Values,
) -> Result<Vec<f64>, String> {
    let numeric: Vec<(&String, &Hparam)> = spec
        .hparams
        .iter()
        .filter(|(_, h)| {
            matches!(
                h,
                Hparam::Int { .. } | Hparam::Double { .. } | Hparam::Log { .. }
            )
        })
        .collect();
    if numeric.len() != function.dims() {
        return Err(format!(
            "the simulation needs exactly {} numeric hyperparameters (int, double or log) for {}; {} has {}",
            function.dims(),
            function.title(),
            spec.file.display(),
            numeric.len()
        ));
    }
    let mut x = vec![0.0; function.dims()];
    for (slot, (name, hparam)) in x.iter_mut().zip(numeric) {
        let v = values
            .get(name)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0);
        #[allow(clippy::cast_precision_loss)]
        let (lo, hi, v) = match hparam {
            Hparam::Int { min, max, .. } => (*min as f64, *max as f64, v),
            Hparam::Double { min, max, .. } => (*min, *max, v),
            Hparam::Log { base, min, max, .. } => (*min, *max, v.ln() / base.ln()),
            _ => (0.0, 1.0, v),
        };
        *slot = if hi > lo {
            ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.5
        };
    }
    Ok(x)
}

/// Simulates the search the experiment file describes.
pub fn simulate(spec: &ExperimentSpec, options: &SimOptions) -> Result<SimResult, String> {
    let mut searcher = build(spec)?;
    let max_length = spec.searcher.max_length;
    #[allow(clippy::cast_precision_loss)]
    let function = MultiFidelity {
        function: options.function,
        z_min: 1.0,
        z_max: max_length as f64,
        bias: options.bias,
        noise: options.noise,
        seed: options.seed,
    };
    let slots = options
        .workers
        .min(spec.searcher.max_concurrent_trials)
        .max(1);
    let global_min = options.function.global_min();
    let mut points: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    let mut trained: BTreeMap<u64, u64> = BTreeMap::new();
    // (finish time, trial, length it reaches)
    let mut events: BinaryHeap<Reverse<(u64, u64, u64)>> = BinaryHeap::new();
    let mut result = SimResult {
        trials: 0,
        budget: 0,
        time: 0,
        regret: f64::INFINITY,
        curve: Vec::new(),
        completed: 0,
    };
    let mut best = f64::INFINITY;
    let sign = if spec.searcher.smaller_is_better {
        1.0
    } else {
        -1.0
    };
    let mut now = 0u64;
    let start = |trial: u64,
                 until: u64,
                 now: u64,
                 events: &mut BinaryHeap<Reverse<(u64, u64, u64)>>,
                 trained: &BTreeMap<u64, u64>,
                 result: &mut SimResult| {
        let done = trained.get(&trial).copied().unwrap_or(0);
        let cost = until.saturating_sub(done).max(1);
        result.budget += cost;
        events.push(Reverse((now + cost, trial, until)));
    };
    loop {
        while (events.len() as u64) < slots {
            match searcher.next() {
                Next::Train {
                    trial,
                    hparams,
                    until,
                } => {
                    if let Some(values) = hparams {
                        points.insert(trial, coordinates(spec, options.function, &values)?);
                        result.trials += 1;
                    }
                    start(trial, until, now, &mut events, &trained, &mut result);
                }
                Next::Wait | Next::Done => break,
            }
        }
        let Some(Reverse((time, trial, until))) = events.pop() else {
            break;
        };
        now = time;
        trained.insert(trial, until);
        let Some(x) = points.get(&trial) else {
            return Err(format!(
                "the searcher reported trial {trial}, never started"
            ));
        };
        #[allow(clippy::cast_precision_loss)]
        let observed = function.value(until as f64, x);
        // The searcher sees the metric in the experiment's direction; the functions are
        // minimised.
        let decision = searcher.report(trial, until, observed * sign);
        if until >= max_length {
            result.completed += 1;
            if observed < best {
                best = observed;
                result.curve.push(CurvePoint {
                    budget: result.budget,
                    time: now,
                    regret: observed - global_min,
                });
            }
        }
        if let Decision::Continue(next) = decision {
            start(trial, next, now, &mut events, &trained, &mut result);
        }
    }
    result.time = now;
    result.regret = best - global_min;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec(searcher: &str, extra: &str) -> ExperimentSpec {
        let text = format!(
            r#"
name = "sim"
command = ["true"]
[searcher]
name = "{searcher}"
metric = "loss"
max_trials = 64
max_concurrent_trials = 16
max_length = 256
seed = 3
{extra}
[hyperparameters]
x1 = {{ type = "double", minval = 0.0, maxval = 1.0 }}
x2 = {{ type = "double", minval = 0.0, maxval = 1.0 }}
x3 = {{ type = "double", minval = 0.0, maxval = 1.0 }}
x4 = {{ type = "double", minval = 0.0, maxval = 1.0 }}
x5 = {{ type = "double", minval = 0.0, maxval = 1.0 }}
x6 = {{ type = "double", minval = 0.0, maxval = 1.0 }}
"#
        );
        ExperimentSpec::parse(Path::new("sim.toml"), &text).unwrap()
    }

    #[test]
    fn random_search_trains_every_trial_the_full_length() {
        let result = simulate(&spec("random", ""), &SimOptions::default()).unwrap();
        assert_eq!(
            (result.trials, result.completed, result.budget),
            (64, 64, 64 * 256)
        );
        // 16 workers, 4 waves of 256.
        assert_eq!(result.time, 4 * 256);
        assert!(result.regret.is_finite() && result.regret >= 0.0);
        assert!(result.curve.windows(2).all(|w| w[1].regret < w[0].regret));
    }

    #[test]
    fn asha_spends_less_and_is_deterministic() {
        let asha = spec("asha", "divisor = 4\nmax_rungs = 4\nmode = \"aggressive\"");
        let a = simulate(&asha, &SimOptions::default()).unwrap();
        let b = simulate(&asha, &SimOptions::default()).unwrap();
        assert_eq!(a.budget, b.budget);
        assert_eq!(a.regret, b.regret);
        assert_eq!(a.trials, 64);
        assert!(a.budget < 64 * 256 / 3, "{}", a.budget);
        assert!(a.completed >= 1);
    }

    #[test]
    fn the_simulation_needs_six_numeric_hyperparameters() {
        let text = r#"
name = "sim"
command = ["true"]
[searcher]
name = "random"
metric = "loss"
max_length = 10
[hyperparameters]
x = { type = "double", minval = 0.0, maxval = 1.0 }
"#;
        let spec = ExperimentSpec::parse(Path::new("s.toml"), text).unwrap();
        let err = simulate(&spec, &SimOptions::default()).unwrap_err();
        assert!(err.contains("exactly 6 numeric"), "{err}");
        assert!(err.contains("for Hartmann 6-D"), "{err}");
    }

    #[test]
    fn the_file_chooses_the_function_by_its_simulation_table() {
        let text = r#"
name = "sim"
command = ["true"]
[searcher]
name = "random"
metric = "loss"
max_trials = 32
max_length = 16
seed = 2
[hyperparameters]
a = { type = "double", minval = -1.0, maxval = 1.0 }
b = { type = "int", minval = 0, maxval = 100 }
[simulation]
function = "branin"
bias = 0.25
"#;
        let spec = ExperimentSpec::parse(Path::new("b.toml"), text).unwrap();
        let options = SimOptions::for_spec(&spec, 4);
        assert_eq!(
            (
                options.function,
                options.bias,
                options.noise,
                options.workers
            ),
            (Function::Branin, 0.25, 0.1, 4)
        );
        let result = simulate(&spec, &options).unwrap();
        assert_eq!((result.trials, result.completed), (32, 32));
        // Random search's 32 points of Branin: the best is above the minimum, and not far.
        assert!(
            result.regret > 0.0 && result.regret < 20.0,
            "{}",
            result.regret
        );
        // Six hyperparameters do not fit Branin's two coordinates.
        let err = simulate(
            &spec,
            &SimOptions {
                function: Function::Hartmann3,
                ..options
            },
        )
        .unwrap_err();
        assert!(
            err.contains("exactly 3 numeric") && err.contains("b.toml has 2"),
            "{err}"
        );
    }
}
