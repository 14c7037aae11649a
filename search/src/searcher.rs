//! Searchers as deterministic state machines: they hand out work for a free slot (`next`) and
//! judge each result (`report`). No processes, no clocks: the controller and the simulator
//! drive them alike.
//!
//! ASHA is the promotion variant of asynchronous successive halving (Li et al., "A System for
//! Massively Parallel Hyperparameter Tuning", MLSys 2020): a trial that finishes rung `k` goes
//! on at once if it is among the best `1/divisor` of the results rung `k` has so far, and is
//! otherwise stopped (it keeps its checkpoint); whenever a slot frees, the searcher first
//! promotes a stopped trial that has since entered the top `1/divisor` of its rung (it
//! resumes from its checkpoint), highest rung first, and only then starts a new trial. No
//! rung ever waits to fill, so no worker idles. Brackets follow Hyperband: bracket `b` starts
//! its trials at rung `b` of the most aggressive bracket, and trials are shared between
//! brackets in Hyperband's proportions (`divisor^s / (s + 1)` for a bracket of `s + 1`
//! rungs).

use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::space::{self, Values};
use crate::spec::{AshaSettings, ExperimentSpec, Mode, Sampler, SearcherKind};

/// Work for a free slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Train `trial` until it has trained `until` units; `hparams` is set for a new trial.
    Train {
        /// The trial (numbered from 1 in creation order).
        trial: u64,
        /// Its hyperparameters when it is new; `None` when it resumes.
        hparams: Option<Values>,
        /// Total length to reach.
        until: u64,
    },
    /// Nothing until a running trial reports.
    Wait,
    /// The search is over.
    Done,
}

/// What a trial does after reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Train on to this total length.
    Continue(u64),
    /// Stop now, keeping the checkpoint (it may be promoted later).
    Stop,
    /// It has trained the full length: done.
    Complete,
}

/// A searcher.
pub trait Searcher: Send + std::fmt::Debug {
    /// Work for one free slot.
    fn next(&mut self) -> Next;
    /// `trial` reached `length` with `metric`; says whether it goes on.
    fn report(&mut self, trial: u64, length: u64, metric: f64) -> Decision;
    /// `trial` failed for good (its restarts are used up): it leaves the search.
    fn failed(&mut self, trial: u64);
    /// Where `trial` stands: `(bracket, rung)` for ASHA, `(0, 0)` otherwise.
    fn position(&self, trial: u64) -> Option<(usize, usize)>;
    /// What the model was fitted on when it chose the latest new trial; `None` when that trial
    /// was drawn at random (always, for searchers without a model).
    fn last_fit(&self) -> Option<crate::tpe::Fit> {
        None
    }
}

/// Makes the searcher an experiment file asks for.
pub fn build(spec: &ExperimentSpec) -> Result<Box<dyn Searcher>, String> {
    let s = &spec.searcher;
    let sign = if s.smaller_is_better { 1.0 } else { -1.0 };
    Ok(match &s.kind {
        SearcherKind::Single => Box::new(ListSearcher::new(
            vec![space::midpoint(&spec.hparams)],
            s.max_length,
        )),
        SearcherKind::Grid => {
            let points = space::grid(&spec.hparams)
                .map_err(|(name, problem)| format!("hyperparameters.{name}: {problem}"))?;
            Box::new(ListSearcher::new(points, s.max_length))
        }
        // Model-based random search: trials of the full length, each drawn from the model of
        // the results so far (ASHA with one rung stops none).
        SearcherKind::Random if s.sampler == Sampler::Tpe => Box::new(
            Asha::new(
                spec.hparams.clone(),
                &AshaSettings {
                    divisor: 2,
                    max_rungs: 1,
                    mode: Mode::Aggressive,
                },
                s.max_trials,
                s.max_length,
                sign,
                s.seed,
            )
            .with_sampler(Sampler::Tpe),
        ),
        SearcherKind::Random => {
            let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
            let points = (0..s.max_trials)
                .map(|_| space::sample(&spec.hparams, &mut rng))
                .collect();
            Box::new(ListSearcher::new(points, s.max_length))
        }
        SearcherKind::Asha(settings) => Box::new(
            Asha::new(
                spec.hparams.clone(),
                settings,
                s.max_trials,
                s.max_length,
                sign,
                s.seed,
            )
            .with_sampler(s.sampler),
        ),
    })
}

/// Grid, random and single: a fixed list of trials, each trained the full length.
#[derive(Debug)]
pub struct ListSearcher {
    points: Vec<Values>,
    next: usize,
    max_length: u64,
    running: BTreeSet<u64>,
}

impl ListSearcher {
    /// Trials with these hyperparameters.
    pub fn new(points: Vec<Values>, max_length: u64) -> Self {
        ListSearcher {
            points,
            next: 0,
            max_length,
            running: BTreeSet::new(),
        }
    }
}

impl Searcher for ListSearcher {
    fn next(&mut self) -> Next {
        if let Some(point) = self.points.get(self.next) {
            self.next += 1;
            let trial = self.next as u64;
            self.running.insert(trial);
            return Next::Train {
                trial,
                hparams: Some(point.clone()),
                until: self.max_length,
            };
        }
        if self.running.is_empty() {
            Next::Done
        } else {
            Next::Wait
        }
    }

    fn report(&mut self, trial: u64, length: u64, _metric: f64) -> Decision {
        if length >= self.max_length {
            self.running.remove(&trial);
            Decision::Complete
        } else {
            Decision::Continue(self.max_length)
        }
    }

    fn failed(&mut self, trial: u64) {
        self.running.remove(&trial);
    }

    fn position(&self, trial: u64) -> Option<(usize, usize)> {
        (trial >= 1 && trial <= self.next as u64).then_some((0, 0))
    }
}

/// One bracket of ASHA.
#[derive(Debug, Clone)]
pub struct Bracket {
    /// Training length at the end of each rung (increasing; the last is `max_length`).
    pub lengths: Vec<u64>,
    /// Trials this bracket may create.
    pub max_trials: u64,
    /// Trials created.
    created: u64,
    /// Per rung: results `(signed metric, trial)`.
    results: Vec<Vec<(f64, u64)>>,
    /// Per rung: trials promoted out of it.
    promoted: Vec<BTreeSet<u64>>,
}

/// Asynchronous successive halving over Hyperband brackets.
#[derive(Debug)]
pub struct Asha {
    hparams: BTreeMap<String, crate::spec::Hparam>,
    divisor: u64,
    brackets: Vec<Bracket>,
    sign: f64,
    rng: ChaCha8Rng,
    created: u64,
    /// Trial -> (bracket, rung it is training towards or stopped at).
    trials: BTreeMap<u64, (usize, usize)>,
    running: BTreeSet<u64>,
    gone: BTreeSet<u64>,
    /// How new trials are drawn.
    sampler: Sampler,
    /// Every created trial's hyperparameters (for the model).
    values: BTreeMap<u64, Values>,
    /// What the model was last fitted on, when it chose the latest new trial.
    last_fit: Option<crate::tpe::Fit>,
    /// Counts the results reported: the model is fitted again only when it changes.
    reported: u64,
    /// The model fitted when `reported` was the first value: `None` with too few results;
    /// with how many results it was fitted on and their length.
    fitted: Option<(u64, Option<crate::tpe::Model>, usize, u64)>,
}

/// Number of brackets a mode uses out of `max_rungs`.
pub fn bracket_count(mode: Mode, max_rungs: u32) -> u32 {
    match mode {
        Mode::Aggressive => 1,
        Mode::Standard => max_rungs.div_ceil(2),
        Mode::Conservative => max_rungs,
    }
}

/// Splits `max_trials` between brackets of `rungs[b]` rungs in Hyperband's proportions
/// (`divisor^s / (s + 1)` with `s = rungs - 1`), largest remainders first, at least one each
/// while there are trials to give.
pub fn allocate(max_trials: u64, rungs: &[u32], divisor: u64) -> Vec<u64> {
    #[allow(clippy::cast_precision_loss)]
    let weights: Vec<f64> = rungs
        .iter()
        .map(|&r| (divisor as f64).powi(i32::try_from(r).unwrap_or(i32::MAX) - 1) / f64::from(r))
        .collect();
    let total: f64 = weights.iter().sum();
    #[allow(clippy::cast_precision_loss)]
    let exact: Vec<f64> = weights
        .iter()
        .map(|w| w / total * max_trials as f64)
        .collect();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let mut counts: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    // Beyond 2^53 trials the shares are not exact and may add up to more than there are: the
    // excess goes back from the largest.
    let given = counts.iter().fold(0u64, |sum, &c| sum.saturating_add(c));
    if let Some(largest) = (0..counts.len()).max_by_key(|&j| counts[j]) {
        counts[largest] = counts[largest].saturating_sub(given.saturating_sub(max_trials));
    }
    let mut left = max_trials.saturating_sub(given);
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    for &i in &order {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    // Every bracket gets a trial if there are enough, taken from the largest.
    for i in 0..counts.len() {
        if counts[i] == 0 {
            if let Some(largest) = (0..counts.len())
                .max_by_key(|&j| counts[j])
                .filter(|&j| counts[j] > 1)
            {
                counts[largest] -= 1;
                counts[i] += 1;
            }
        }
    }
    counts
}

impl Asha {
    /// ASHA over `hparams` with `settings`.
    pub fn new(
        hparams: BTreeMap<String, crate::spec::Hparam>,
        settings: &AshaSettings,
        max_trials: u64,
        max_length: u64,
        sign: f64,
        seed: u64,
    ) -> Asha {
        let divisor = u64::from(settings.divisor);
        let n_brackets = bracket_count(settings.mode, settings.max_rungs);
        let rungs: Vec<u32> = (0..n_brackets).map(|b| settings.max_rungs - b).collect();
        let counts = allocate(max_trials, &rungs, divisor);
        let brackets = rungs
            .iter()
            .zip(counts)
            .map(|(&r, n)| {
                let lengths = (0..r)
                    .map(|k| (max_length / divisor.saturating_pow(r - 1 - k)).max(1))
                    .collect();
                Bracket {
                    lengths,
                    max_trials: n,
                    created: 0,
                    results: vec![Vec::new(); r as usize],
                    promoted: vec![BTreeSet::new(); r as usize],
                }
            })
            .collect();
        Asha {
            hparams,
            divisor,
            brackets,
            sign,
            rng: ChaCha8Rng::seed_from_u64(seed),
            created: 0,
            trials: BTreeMap::new(),
            running: BTreeSet::new(),
            gone: BTreeSet::new(),
            sampler: Sampler::Random,
            values: BTreeMap::new(),
            last_fit: None,
            reported: 0,
            fitted: None,
        }
    }

    /// Draws new trials' hyperparameters with `sampler`.
    #[must_use]
    pub fn with_sampler(mut self, sampler: Sampler) -> Asha {
        self.sampler = sampler;
        self
    }

    /// A new trial's hyperparameters, by the sampler.
    fn draw(&mut self) -> Values {
        match self.sampler {
            Sampler::Random => space::sample(&self.hparams, &mut self.rng),
            Sampler::Tpe => {
                let settings = crate::tpe::TpeSettings::default();
                // One fit per set of results: a round's new trials are drawn from the same
                // model, as fitting again on the same results would give it.
                if self.fitted.as_ref().map(|f| f.0) != Some(self.reported) {
                    let (results, length) = model_results(&self.brackets, &self.values);
                    let model = crate::tpe::Model::fit(&self.hparams, &results, &settings);
                    self.fitted = Some((self.reported, model, results.len(), length));
                }
                let Some((_, model, results, length)) = &self.fitted else {
                    return space::sample(&self.hparams, &mut self.rng);
                };
                let (values, fit) = crate::tpe::next_from(
                    &self.hparams,
                    model.as_ref(),
                    *results,
                    *length,
                    &settings,
                    &mut self.rng,
                );
                self.last_fit = fit;
                values
            }
        }
    }

    /// The brackets (for previews and status).
    pub fn brackets(&self) -> &[Bracket] {
        &self.brackets
    }

    /// The best `len / divisor` of a rung that were not promoted yet, best first.
    fn promotable(&self, bracket: usize, rung: usize) -> Vec<u64> {
        let b = &self.brackets[bracket];
        let mut results = b.results[rung].clone();
        results.sort_by(|(a, ta), (c, tc)| a.total_cmp(c).then(ta.cmp(tc)));
        let top = results.len() / usize::try_from(self.divisor).unwrap_or(usize::MAX);
        results
            .into_iter()
            .take(top)
            .map(|(_, t)| t)
            .filter(|t| {
                !b.promoted[rung].contains(t) && !self.gone.contains(t) && !self.running.contains(t)
            })
            .collect()
    }
}

/// The results the model fits on, ranked as Optuna ranks pruned trials: each trial by the
/// longest length it reported at, then by its metric there (trials stopped early rank
/// behind those that went on), as `(hyperparameters, rank)` with 0 the best; and the longest
/// length. Fitted on one rung alone (BOHB's rule), the bad group of a high rung would sit
/// next to the good one, and the model would favour wherever no trial went far.
fn model_results<'a>(
    brackets: &[Bracket],
    values: &'a BTreeMap<u64, Values>,
) -> (Vec<(&'a Values, f64)>, u64) {
    let mut reached: BTreeMap<u64, (u64, f64)> = BTreeMap::new();
    for bracket in brackets {
        for (&length, results) in bracket.lengths.iter().zip(&bracket.results) {
            for &(metric, trial) in results {
                let best = reached.entry(trial).or_insert((length, metric));
                if length > best.0 {
                    *best = (length, metric);
                }
            }
        }
    }
    let mut ranked: Vec<(u64, u64, f64)> = reached
        .into_iter()
        .map(|(trial, (length, metric))| (trial, length, metric))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.total_cmp(&b.2)).then(a.0.cmp(&b.0)));
    let longest = ranked.first().map_or(0, |r| r.1);
    #[allow(clippy::cast_precision_loss)]
    let results = ranked
        .iter()
        .enumerate()
        .filter_map(|(rank, (trial, _, _))| values.get(trial).map(|v| (v, rank as f64)))
        .collect();
    (results, longest)
}

impl Searcher for Asha {
    fn next(&mut self) -> Next {
        // Promotions first, from the highest rung down, in every bracket.
        let mut best: Option<(usize, usize, u64)> = None;
        for (bi, bracket) in self.brackets.iter().enumerate() {
            for rung in (0..bracket.lengths.len().saturating_sub(1)).rev() {
                if let Some(&trial) = self.promotable(bi, rung).first() {
                    let higher = best.is_none_or(|(_, r, _)| rung > r);
                    if higher {
                        best = Some((bi, rung, trial));
                    }
                    break;
                }
            }
        }
        if let Some((bi, rung, trial)) = best {
            self.brackets[bi].promoted[rung].insert(trial);
            self.trials.insert(trial, (bi, rung + 1));
            self.running.insert(trial);
            return Next::Train {
                trial,
                hparams: None,
                until: self.brackets[bi].lengths[rung + 1],
            };
        }
        // Then a new trial, in the bracket furthest behind its share.
        let choice = self
            .brackets
            .iter()
            .enumerate()
            .filter(|(_, b)| b.created < b.max_trials)
            .min_by(|(ia, a), (ib, b)| {
                #[allow(clippy::cast_precision_loss)]
                let fa = a.created as f64 / a.max_trials as f64;
                #[allow(clippy::cast_precision_loss)]
                let fb = b.created as f64 / b.max_trials as f64;
                fa.total_cmp(&fb).then(ia.cmp(ib))
            })
            .map(|(i, _)| i);
        if let Some(bi) = choice {
            self.created += 1;
            let trial = self.created;
            self.brackets[bi].created += 1;
            self.trials.insert(trial, (bi, 0));
            self.running.insert(trial);
            let hparams = self.draw();
            self.values.insert(trial, hparams.clone());
            return Next::Train {
                trial,
                hparams: Some(hparams),
                until: self.brackets[bi].lengths[0],
            };
        }
        if self.running.is_empty() {
            Next::Done
        } else {
            Next::Wait
        }
    }

    fn report(&mut self, trial: u64, length: u64, metric: f64) -> Decision {
        let Some(&(bi, rung)) = self.trials.get(&trial) else {
            return Decision::Stop;
        };
        let target = self.brackets[bi].lengths[rung];
        let next = self.brackets[bi].lengths.get(rung + 1).copied();
        if length < target {
            return Decision::Continue(target);
        }
        let signed = if metric.is_finite() {
            metric * self.sign
        } else {
            f64::INFINITY
        };
        self.brackets[bi].results[rung].push((signed, trial));
        self.reported += 1;
        self.running.remove(&trial);
        let Some(next) = next else {
            return Decision::Complete;
        };
        // Goes on at once if it is promotable now; otherwise it stops and may be promoted later.
        if self.promotable(bi, rung).contains(&trial) {
            self.brackets[bi].promoted[rung].insert(trial);
            self.trials.insert(trial, (bi, rung + 1));
            self.running.insert(trial);
            Decision::Continue(next)
        } else {
            Decision::Stop
        }
    }

    fn failed(&mut self, trial: u64) {
        self.running.remove(&trial);
        self.gone.insert(trial);
    }

    fn position(&self, trial: u64) -> Option<(usize, usize)> {
        self.trials.get(&trial).copied()
    }

    fn last_fit(&self) -> Option<crate::tpe::Fit> {
        self.last_fit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asha(mode: Mode, max_trials: u64, max_rungs: u32, divisor: u32) -> Asha {
        let hparams = [(
            "x".to_owned(),
            crate::spec::Hparam::Double {
                min: 0.0,
                max: 1.0,
                count: None,
            },
        )]
        .into();
        Asha::new(
            hparams,
            &AshaSettings {
                divisor,
                max_rungs,
                mode,
            },
            max_trials,
            16,
            1.0,
            7,
        )
    }

    fn take(s: &mut dyn Searcher) -> (u64, u64) {
        match s.next() {
            Next::Train { trial, until, .. } => (trial, until),
            other => panic!("expected work, got {other:?}"),
        }
    }

    #[test]
    fn asha_promotes_the_top_quarter_as_results_arrive() {
        // One bracket, rungs at 1, 4, 16 (divisor 4, 3 rungs).
        let mut s = asha(Mode::Aggressive, 8, 3, 4);
        assert_eq!(s.brackets()[0].lengths, vec![1, 4, 16]);
        let started: Vec<(u64, u64)> = (0..4).map(|_| take(&mut s)).collect();
        assert_eq!(started, vec![(1, 1), (2, 1), (3, 1), (4, 1)]);
        // Trial 1 reports first: 1 result, top 1/4 of 1 is nobody: it stops.
        assert_eq!(s.report(1, 1, 0.9), Decision::Stop);
        assert_eq!(s.report(2, 1, 0.5), Decision::Stop);
        assert_eq!(s.report(3, 1, 0.7), Decision::Stop);
        // The fourth result makes the top 1/4 one trial: trial 4 (0.1) is it, and goes on.
        assert_eq!(s.report(4, 1, 0.1), Decision::Continue(4));
        // A free slot: no promotable trial (4 is running), so a new trial.
        assert_eq!(take(&mut s), (5, 1));
        assert_eq!(s.report(5, 1, 0.6), Decision::Stop);
        assert_eq!(take(&mut s), (6, 1));
        assert_eq!(s.report(6, 1, 0.8), Decision::Stop);
        assert_eq!(take(&mut s), (7, 1));
        assert_eq!(s.report(7, 1, 0.95), Decision::Stop);
        // 7 results: the top one (trial 4) is promoted already, so a new trial.
        assert_eq!(take(&mut s), (8, 1));
        assert_eq!(s.report(8, 1, 0.99), Decision::Stop);
        // 8 results: the top two are 4 (promoted) and 2 (0.5): 2 resumes from its checkpoint.
        assert_eq!(take(&mut s), (2, 4));
        assert_eq!(s.report(4, 4, 0.05), Decision::Stop);
        assert_eq!(s.report(2, 4, 0.3), Decision::Stop);
        // No trials left to create; rung 1 has 2 results, the top 1/4 of 2 is nobody.
        assert_eq!(s.next(), Next::Done);
    }

    #[test]
    fn larger_is_better_flips_the_ranking() {
        let hparams = [(
            "x".to_owned(),
            crate::spec::Hparam::Double {
                min: 0.0,
                max: 1.0,
                count: None,
            },
        )]
        .into();
        let mut s = Asha::new(
            hparams,
            &AshaSettings {
                divisor: 2,
                max_rungs: 2,
                mode: Mode::Aggressive,
            },
            4,
            4,
            -1.0,
            1,
        );
        for _ in 0..2 {
            take(&mut s);
        }
        assert_eq!(s.report(1, 2, 0.9), Decision::Stop);
        // Accuracy 0.95 beats 0.9.
        assert_eq!(s.report(2, 2, 0.95), Decision::Continue(4));
        assert_eq!(s.report(2, 4, 0.97), Decision::Complete);
    }

    #[test]
    fn brackets_follow_hyperband() {
        // Divisor 3, brackets of 4, 3, 2, 1 rungs: weights 3^s / (s+1) = 6.75, 3, 1.5, 1, so
        // 81 trials split 44.6, 19.8, 9.9, 6.6 -> largest remainders -> 45, 20, 10, 6.
        assert_eq!(allocate(81, &[4, 3, 2, 1], 3), vec![45, 20, 10, 6]);
        assert_eq!(bracket_count(Mode::Aggressive, 5), 1);
        assert_eq!(bracket_count(Mode::Standard, 5), 3);
        assert_eq!(bracket_count(Mode::Conservative, 5), 5);
        let s = asha(Mode::Conservative, 20, 3, 4);
        let lengths: Vec<Vec<u64>> = s.brackets().iter().map(|b| b.lengths.clone()).collect();
        assert_eq!(lengths, vec![vec![1, 4, 16], vec![4, 16], vec![16]]);
        let shares: Vec<u64> = s.brackets().iter().map(|b| b.max_trials).collect();
        assert_eq!(shares.iter().sum::<u64>(), 20);
        assert!(
            shares[0] > shares[1] && shares[1] >= shares[2] && shares[2] >= 1,
            "{shares:?}"
        );
    }

    #[test]
    fn list_searchers_hand_out_every_point_once() {
        let points: Vec<Values> = (0..3)
            .map(|i| [("i".to_owned(), serde_json::json!(i))].into())
            .collect();
        let mut s = ListSearcher::new(points, 10);
        let a = take(&mut s);
        let b = take(&mut s);
        let c = take(&mut s);
        assert_eq!((a, b, c), ((1, 10), (2, 10), (3, 10)));
        assert_eq!(s.next(), Next::Wait);
        assert_eq!(s.report(1, 10, 0.0), Decision::Complete);
        s.failed(2);
        assert_eq!(s.report(3, 5, 0.0), Decision::Continue(10));
        assert_eq!(s.report(3, 10, 0.0), Decision::Complete);
        assert_eq!(s.next(), Next::Done);
    }

    /// Runs a TPE-sampled ASHA to the end, each trial's metric its distance from x = 0.7, and
    /// returns every new trial's x with whether the model chose it.
    fn run_tpe(seed: u64) -> Vec<(f64, bool)> {
        let mut searcher = asha(Mode::Aggressive, 60, 2, 2).with_sampler(Sampler::Tpe);
        searcher.rng = ChaCha8Rng::seed_from_u64(seed);
        let mut drawn = Vec::new();
        loop {
            match searcher.next() {
                Next::Train {
                    trial,
                    hparams,
                    until,
                } => {
                    let x = match hparams {
                        Some(h) => {
                            let x = h["x"].as_f64().unwrap();
                            drawn.push((x, searcher.last_fit().is_some()));
                            x
                        }
                        None => searcher.values[&trial]["x"].as_f64().unwrap(),
                    };
                    let mut length = until;
                    while let Decision::Continue(next) =
                        searcher.report(trial, length, (x - 0.7).abs())
                    {
                        length = next;
                    }
                }
                Next::Wait => unreachable!("trials finish at once here"),
                Next::Done => break,
            }
        }
        drawn
    }

    #[test]
    fn tpe_samples_at_random_until_a_rung_has_enough_results_then_models() {
        let drawn = run_tpe(5);
        assert_eq!(drawn.len(), 60);
        // One hyperparameter: the model needs 10 results; the first trials are random.
        assert!(drawn[..10].iter().all(|(_, model)| !model), "{drawn:?}");
        let modelled: Vec<f64> = drawn.iter().filter(|(_, m)| *m).map(|(x, _)| *x).collect();
        assert!(modelled.len() >= 30, "{drawn:?}");
        // Once it has results, the model's choices gather near the best x (random draws land
        // within 0.15 of it 30% of the time).
        let late = &modelled[modelled.len() - 20..];
        let near = late.iter().filter(|x| (*x - 0.7).abs() < 0.15).count();
        assert!(
            near >= 14,
            "{near} of the last 20 model choices near 0.7: {drawn:?}"
        );
        // The same seed and results replay the same choices; another seed differs.
        assert_eq!(drawn, run_tpe(5));
        assert_ne!(drawn, run_tpe(6));
    }
}
