//! Model-based sampling: a Tree-structured Parzen Estimator (Bergstra et al., NeurIPS 2011)
//! inside successive halving, as BOHB (Falkner et al., ICML 2018) and Optuna's TPE with a pruner
//! use it. The caller ranks the results (ASHA: by the longest length each trial reached, then by
//! its metric there, as Optuna ranks pruned trials).
//!
//! The results are split into the best `gamma` (the good group) and the rest. Each
//! hyperparameter gets two one-dimensional densities, one per group: for ranges, a mixture of
//! Gaussians truncated to the range, one at each result plus a wide prior, each as wide as the
//! larger gap to its neighbours (Optuna's rule); for categories, each category's share with one
//! prior count spread over all. `candidates` points are drawn from the good densities, and the
//! one with the highest ratio good/bad is chosen. A `random_fraction` of new trials is still
//! drawn at random, so the search keeps exploring. Everything is drawn from the searcher's seeded
//! generator in a fixed order, so a controller that replays the same results makes the same
//! choices.

use std::collections::BTreeMap;

use rand::Rng;

use crate::space::{self, number, Hparam, Values};

/// The model's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TpeSettings {
    /// Share of the results in the good group.
    pub gamma: f64,
    /// Points drawn from the good densities per choice.
    pub candidates: usize,
    /// Share of new trials drawn at random although the model is in use.
    pub random_fraction: f64,
}

impl Default for TpeSettings {
    fn default() -> Self {
        TpeSettings {
            gamma: 0.10,
            candidates: 24,
            random_fraction: 0.1,
        }
    }
}

/// How many results the model needs over `hparams`: two more than the hyperparameters that
/// vary (BOHB's `min_points_in_model`, plus one so both groups have a point), and at least 10
/// (Optuna's random start-up trials): fitted on fewer, the densities are so wide that the ratio
/// favours wherever the bad results are not, the ends of the ranges.
pub fn min_results(hparams: &BTreeMap<String, Hparam>) -> usize {
    let varying = hparams
        .values()
        .filter(|h| !matches!(h, Hparam::Const(_)))
        .count();
    (varying + 2).max(MIN_RESULTS)
}

/// The fewest results the model is fitted on.
pub const MIN_RESULTS: usize = 10;

/// One hyperparameter as the model sees it.
#[derive(Debug, Clone)]
enum Dim {
    /// A range mapped to `[0, 1]`.
    Range(Hparam),
    /// Categories by index.
    Categories(Vec<serde_json::Value>),
}

impl Dim {
    /// The value's position in the model's space: `[0, 1]` for ranges, the category's index.
    fn encode(&self, value: &serde_json::Value) -> Option<f64> {
        match self {
            Dim::Categories(values) =>
            {
                #[allow(clippy::cast_precision_loss)]
                values.iter().position(|v| v == value).map(|i| i as f64)
            }
            Dim::Range(hparam) => {
                let v = value.as_f64()?;
                let u = match hparam {
                    Hparam::Double { min, max, .. } if max > min => (v - min) / (max - min),
                    Hparam::Log { base, min, max, .. } if max > min && v > 0.0 => {
                        (v.ln() / base.ln() - min) / (max - min)
                    }
                    #[allow(clippy::cast_precision_loss)]
                    Hparam::Int { min, max, .. } => {
                        (v - *min as f64 + 0.5) / ((max - min) as f64 + 1.0)
                    }
                    _ => 0.5,
                };
                u.is_finite().then_some(u.clamp(0.0, 1.0))
            }
        }
    }

    /// The value at a position of the model's space.
    fn decode(&self, x: f64) -> serde_json::Value {
        match self {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Dim::Categories(values) => values[(x as usize).min(values.len() - 1)].clone(),
            Dim::Range(hparam) => match hparam {
                Hparam::Double { min, max, .. } => number(min + x * (max - min)),
                Hparam::Log { base, min, max, .. } => number(base.powf(min + x * (max - min))),
                #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
                Hparam::Int { min, max, .. } => {
                    let span = (max - min) as f64 + 1.0;
                    serde_json::Value::from((*min + (x * span).floor() as i64).clamp(*min, *max))
                }
                Hparam::Const(v) => v.clone(),
                Hparam::Categorical(values) => values[0].clone(),
            },
        }
    }
}

/// A density over one dimension, fitted on one group's positions.
#[derive(Debug, Clone)]
enum Density {
    /// Truncated Gaussians on `[0, 1]`, equal weights.
    Parzen(Vec<Component>),
    /// Each category's probability.
    Shares(Vec<f64>),
}

/// One Gaussian of a Parzen estimator, with what its density needs precomputed: the log of
/// its normalisation (width, truncation to `[0, 1]`, its weight) depends on no point.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Component {
    mean: f64,
    width: f64,
    inv_width: f64,
    /// `log` of the truncated normal's constant factor times the component's weight.
    log_scale: f64,
}

/// How far below the largest term (in log) a mixture's term is left out of its sum.
const NEGLIGIBLE: f64 = 40.0;

/// The width of the prior component, and its mean, on `[0, 1]`.
const PRIOR: (f64, f64) = (0.5, 1.0);

impl Density {
    fn parzen(points: &[f64]) -> Density {
        // Each mean with whether it is the prior's (a point can sit where the prior does).
        let mut means: Vec<(f64, bool)> = points.iter().map(|&p| (p, false)).collect();
        means.push((PRIOR.0, true));
        means.sort_by(|a, b| a.0.total_cmp(&b.0));
        #[allow(clippy::cast_precision_loss)]
        let narrowest = 1.0 / (means.len() as f64).min(100.0);
        let pairs: Vec<(f64, f64)> = (0..means.len())
            .map(|i| {
                let (mean, prior) = means[i];
                if prior {
                    // The prior keeps its own width whatever its neighbours.
                    return (mean, PRIOR.1);
                }
                let left = if i == 0 { 0.0 } else { means[i - 1].0 };
                let right = means.get(i + 1).map_or(1.0, |m| m.0);
                let width = (mean - left).max(right - mean).clamp(narrowest, 1.0);
                (mean, width)
            })
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let log_weight = (pairs.len() as f64).ln();
        Density::Parzen(
            pairs
                .into_iter()
                .map(|(mean, width)| Component {
                    mean,
                    width,
                    inv_width: 1.0 / width,
                    log_scale: truncated_log_pdf(mean, mean, width) - log_weight,
                })
                .collect(),
        )
    }

    fn shares(points: &[f64], categories: usize) -> Density {
        #[allow(clippy::cast_precision_loss)]
        let prior = 1.0 / categories as f64;
        let mut counts = vec![prior; categories];
        for &p in points {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            if let Some(c) = counts.get_mut(p as usize) {
                *c += 1.0;
            }
        }
        let total: f64 = counts.iter().sum();
        Density::Shares(counts.into_iter().map(|c| c / total).collect())
    }

    fn log_pdf(&self, x: f64) -> f64 {
        match self {
            Density::Shares(p) =>
            {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                p.get(x as usize).map_or(f64::NEG_INFINITY, |p| p.ln())
            }
            Density::Parzen(components) => {
                // log Σ exp(log_scale - z²/2): the largest term first (arithmetic only), then
                // the exponentials of the terms that can matter. Those more than e^-40 below the
                // largest add less than 1e-17 relative each, and most of a wide group's
                // components are that far from any one point.
                let term = |c: &Component| {
                    let z = (x - c.mean) * c.inv_width;
                    c.log_scale - 0.5 * z * z
                };
                let top = components
                    .iter()
                    .map(term)
                    .fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = components
                    .iter()
                    .map(term)
                    .filter(|t| *t > top - NEGLIGIBLE)
                    .map(|t| (t - top).exp())
                    .sum();
                top + sum.ln()
            }
        }
    }

    fn sample(&self, rng: &mut impl Rng) -> f64 {
        match self {
            Density::Shares(p) => {
                let mut left = rng.gen_range(0.0..1.0);
                for (i, share) in p.iter().enumerate() {
                    left -= share;
                    if left < 0.0 {
                        #[allow(clippy::cast_precision_loss)]
                        return i as f64;
                    }
                }
                #[allow(clippy::cast_precision_loss)]
                let last = (p.len() - 1) as f64;
                last
            }
            Density::Parzen(components) => {
                let Component { mean, width, .. } = components[rng.gen_range(0..components.len())];
                for _ in 0..64 {
                    let x = mean + width * standard_normal(rng);
                    if (0.0..=1.0).contains(&x) {
                        return x;
                    }
                }
                mean.clamp(0.0, 1.0)
            }
        }
    }
}

/// A standard normal draw (Box-Muller), two uniforms per draw.
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `log` of the density at `x` of a normal of `mean` and `width` truncated to `[0, 1]`.
fn truncated_log_pdf(x: f64, mean: f64, width: f64) -> f64 {
    let z = (x - mean) / width;
    let mass = normal_cdf((1.0 - mean) / width) - normal_cdf(-mean / width);
    -0.5 * z * z - (width * (std::f64::consts::TAU).sqrt()).ln() - mass.max(1e-300).ln()
}

/// The standard normal's distribution function, through `erfc` (W. J. Cody's rational
/// approximation as in Numerical Recipes' `erfcc`, relative error below 1.2e-7).
fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// What the model was fitted on for one choice (as the search's event log records it).
pub use cohort_proto::search::ModelFit as Fit;

/// The densities fitted on one set of results: drawn from as often as wanted until the
/// results change (a search's controller makes a round's decisions from one fit).
#[derive(Debug, Clone)]
pub struct Model {
    /// The hyperparameters that do not vary.
    fixed: Values,
    /// Per varying hyperparameter: its name, how it maps to the model's space, and the good
    /// and bad groups' densities.
    dims: Vec<(String, Dim, Density, Density)>,
}

impl Model {
    /// The model of `results` (`(hyperparameters, score)`, smaller scores better, all at one
    /// length) over `hparams`, or `None` when there are too few results (see
    /// [`min_results`]). Draws nothing from any generator.
    pub fn fit(
        hparams: &BTreeMap<String, Hparam>,
        results: &[(&Values, f64)],
        settings: &TpeSettings,
    ) -> Option<Model> {
        if results.len() < min_results(hparams) {
            return None;
        }
        let mut order: Vec<usize> = (0..results.len()).collect();
        // Non-finite scores (failed or diverged trials) are the worst.
        let key = |i: usize| {
            let s = results[i].1;
            if s.is_finite() {
                s
            } else {
                f64::INFINITY
            }
        };
        order.sort_by(|&a, &b| key(a).total_cmp(&key(b)).then(a.cmp(&b)));
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let good =
            ((settings.gamma * results.len() as f64).ceil() as usize).clamp(1, results.len() - 1);
        let (good, bad) = order.split_at(good);
        let mut fixed = Values::new();
        let mut dims = Vec::new();
        for (name, hparam) in hparams {
            let dim = match hparam {
                Hparam::Const(value) => {
                    fixed.insert(name.clone(), value.clone());
                    continue;
                }
                Hparam::Categorical(values) => Dim::Categories(values.clone()),
                _ => Dim::Range(hparam.clone()),
            };
            let positions = |group: &[usize]| -> Vec<f64> {
                group
                    .iter()
                    .filter_map(|&i| results[i].0.get(name).and_then(|v| dim.encode(v)))
                    .collect()
            };
            let (l, g) = match &dim {
                Dim::Categories(values) => (
                    Density::shares(&positions(good), values.len()),
                    Density::shares(&positions(bad), values.len()),
                ),
                Dim::Range(_) => (
                    Density::parzen(&positions(good)),
                    Density::parzen(&positions(bad)),
                ),
            };
            dims.push((name.clone(), dim, l, g));
        }
        Some(Model { fixed, dims })
    }

    /// A new trial's hyperparameters: `candidates` points drawn from the good densities, the
    /// one with the highest ratio of good to bad density.
    pub fn draw(&self, settings: &TpeSettings, rng: &mut impl Rng) -> Values {
        let mut best: Option<(f64, Vec<f64>)> = None;
        for _ in 0..settings.candidates.max(1) {
            let point: Vec<f64> = self.dims.iter().map(|(_, _, l, _)| l.sample(rng)).collect();
            let score: f64 = self
                .dims
                .iter()
                .zip(&point)
                .map(|((_, _, l, g), &x)| l.log_pdf(x) - g.log_pdf(x))
                .sum();
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, point));
            }
        }
        let mut chosen = self.fixed.clone();
        if let Some((_, point)) = best {
            for ((name, dim, _, _), x) in self.dims.iter().zip(point) {
                chosen.insert(name.clone(), dim.decode(x));
            }
        }
        chosen
    }
}

/// A new trial's hyperparameters from the model fitted on `results` (`(hyperparameters, score)`
/// with smaller scores better, all at one length), or `None` when there are too few results
/// (see [`min_results`]) or this draw is one of the `random_fraction` kept random. Consumes the
/// generator the same way for the same inputs.
pub fn suggest(
    hparams: &BTreeMap<String, Hparam>,
    results: &[(&Values, f64)],
    settings: &TpeSettings,
    rng: &mut impl Rng,
) -> Option<Values> {
    if results.len() < min_results(hparams) {
        return None;
    }
    if rng.gen_range(0.0..1.0) < settings.random_fraction {
        return None;
    }
    Model::fit(hparams, results, settings).map(|model| model.draw(settings, rng))
}

/// [`suggest`], else a random sample: a new trial's hyperparameters, and the fit when the
/// model chose them.
pub fn next_values(
    hparams: &BTreeMap<String, Hparam>,
    results: &[(&Values, f64)],
    length: u64,
    settings: &TpeSettings,
    rng: &mut impl Rng,
) -> (Values, Option<Fit>) {
    let model = Model::fit(hparams, results, settings);
    next_from(
        hparams,
        model.as_ref(),
        results.len(),
        length,
        settings,
        rng,
    )
}

/// [`next_values`] from a model already fitted on `results` results at `length` (`None`: too
/// few results): the same choices from the same generator, without fitting again.
pub fn next_from(
    hparams: &BTreeMap<String, Hparam>,
    model: Option<&Model>,
    results: usize,
    length: u64,
    settings: &TpeSettings,
    rng: &mut impl Rng,
) -> (Values, Option<Fit>) {
    if let Some(model) = model {
        if rng.gen_range(0.0..1.0) >= settings.random_fraction {
            return (
                model.draw(settings, rng),
                Some(Fit {
                    results: results as u64,
                    length,
                }),
            );
        }
    }
    (space::sample(hparams, rng), None)
}

/// The cost of one decision, for `cohort bench sampler`: the mean time of a model choice
/// fitted on `results` results over `dims` double hyperparameters (scored by their distance to
/// the middle), of a choice drawn from one fit (as a round's decisions are), and of a random
/// sample of the same space, over `decisions` decisions each.
pub fn time_decisions(
    results: usize,
    dims: usize,
    decisions: usize,
) -> (
    std::time::Duration,
    std::time::Duration,
    std::time::Duration,
) {
    use rand::SeedableRng;
    let hparams: BTreeMap<String, Hparam> = (1..=dims)
        .map(|d| {
            (
                format!("x{d}"),
                Hparam::Double {
                    min: 0.0,
                    max: 1.0,
                    count: None,
                },
            )
        })
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let points: Vec<Values> = (0..results)
        .map(|_| space::sample(&hparams, &mut rng))
        .collect();
    let scored: Vec<(&Values, f64)> = points
        .iter()
        .map(|v| {
            let distance = v
                .values()
                .filter_map(serde_json::Value::as_f64)
                .map(|x| (x - 0.5) * (x - 0.5))
                .sum::<f64>();
            (v, distance)
        })
        .collect();
    let settings = TpeSettings {
        random_fraction: 0.0,
        ..TpeSettings::default()
    };
    let decisions = decisions.max(1);
    let start = std::time::Instant::now();
    for _ in 0..decisions {
        std::hint::black_box(suggest(&hparams, &scored, &settings, &mut rng));
    }
    let model = start.elapsed();
    let start = std::time::Instant::now();
    let fitted = Model::fit(&hparams, &scored, &settings);
    for _ in 0..decisions {
        std::hint::black_box(fitted.as_ref().map(|m| m.draw(&settings, &mut rng)));
    }
    let draw = start.elapsed();
    let start = std::time::Instant::now();
    for _ in 0..decisions {
        std::hint::black_box(space::sample(&hparams, &mut rng));
    }
    let random = start.elapsed();
    let n = u32::try_from(decisions).unwrap_or(u32::MAX);
    (model / n, draw / n, random / n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn space() -> BTreeMap<String, Hparam> {
        let mut h = BTreeMap::new();
        h.insert(
            "x".to_owned(),
            Hparam::Double {
                min: 0.0,
                max: 1.0,
                count: None,
            },
        );
        h
    }

    #[test]
    fn the_normal_distribution_function_matches_known_values() {
        for (z, want) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746),
            (-1.0, 0.158_655_254),
            (1.959_964, 0.975),
            (-3.0, 0.001_349_898),
        ] {
            assert!(
                (normal_cdf(z) - want).abs() < 2e-7,
                "{z}: {}",
                normal_cdf(z)
            );
        }
    }

    #[test]
    fn a_truncated_gaussian_integrates_to_one_on_the_unit_interval() {
        for (mean, width) in [(0.5, 1.0), (0.1, 0.05), (0.9, 0.3), (0.0, 0.01)] {
            let n = 20_000;
            #[allow(clippy::cast_precision_loss)]
            let integral: f64 = (0..n)
                .map(|i| (f64::from(i) + 0.5) / f64::from(n))
                .map(|x| truncated_log_pdf(x, mean, width).exp() / f64::from(n))
                .sum();
            assert!((integral - 1.0).abs() < 1e-3, "{mean} {width}: {integral}");
        }
    }

    #[test]
    fn a_parzen_mixture_integrates_to_one_and_matches_its_components() {
        let density = Density::parzen(&[0.05, 0.3, 0.31, 0.9]);
        let Density::Parzen(components) = &density else {
            unreachable!()
        };
        let n = 20_000;
        let integral: f64 = (0..n)
            .map(|i| (f64::from(i) + 0.5) / f64::from(n))
            .map(|x| density.log_pdf(x).exp() / f64::from(n))
            .sum();
        assert!((integral - 1.0).abs() < 1e-3, "{integral}");
        // The one-pass sum equals the plain mixture of truncated Gaussians.
        for x in [0.0, 0.2, 0.305, 0.77, 1.0] {
            #[allow(clippy::cast_precision_loss)]
            let plain: f64 = components
                .iter()
                .map(|c| truncated_log_pdf(x, c.mean, c.width).exp())
                .sum::<f64>()
                / components.len() as f64;
            assert!((density.log_pdf(x) - plain.ln()).abs() < 1e-9, "{x}");
        }
    }

    #[test]
    fn parzen_widths_are_the_larger_gap_to_a_neighbour_clipped_and_the_prior_stays_wide() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // Two points and the prior: no width below 1/3 (one over the components).
        let Density::Parzen(c) = Density::parzen(&[0.3, 0.1]) else {
            unreachable!()
        };
        assert_eq!(c.len(), 3);
        assert!(
            close(c[0].mean, 0.1) && close(c[0].width, 1.0 / 3.0),
            "{c:?}"
        );
        assert!(
            close(c[1].mean, 0.3) && close(c[1].width, 1.0 / 3.0),
            "{c:?}"
        );
        assert!(close(c[2].mean, 0.5) && close(c[2].width, 1.0), "{c:?}");
        // Nine points and the prior: widths at least 0.1, else the larger gap (to the range's
        // end for the last).
        let points = [0.05, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.25, 0.95];
        let Density::Parzen(c) = Density::parzen(&points) else {
            unreachable!()
        };
        let width = |mean: f64| c.iter().find(|k| close(k.mean, mean)).unwrap().width;
        assert!(close(width(0.14), 0.1), "{c:?}");
        assert!(close(width(0.25), 0.25), "{c:?}");
        assert!(close(width(0.95), 0.45), "{c:?}");
        assert!(close(width(0.5), 1.0), "{c:?}");
        // A point where the prior is: it gets its gaps (to 0.35 and the prior), the prior 1.
        let points = [0.1, 0.2, 0.3, 0.35, 0.5, 0.8, 0.85, 0.9, 0.95];
        let Density::Parzen(c) = Density::parzen(&points) else {
            unreachable!()
        };
        let mut at_half: Vec<f64> = c
            .iter()
            .filter(|k| close(k.mean, 0.5))
            .map(|k| k.width)
            .collect();
        at_half.sort_by(f64::total_cmp);
        assert!(
            at_half.len() == 2 && close(at_half[0], 0.15) && close(at_half[1], 1.0),
            "{c:?}"
        );
    }

    #[test]
    fn category_shares_count_the_group_with_one_prior_count_spread() {
        // Two of three categories seen: 2 of "a", 1 of "c"; a prior of 1/3 each; total 4.
        let Density::Shares(p) = Density::shares(&[0.0, 0.0, 2.0], 3) else {
            unreachable!()
        };
        let want = [
            (2.0 + 1.0 / 3.0) / 4.0,
            (1.0 / 3.0) / 4.0,
            (1.0 + 1.0 / 3.0) / 4.0,
        ];
        for (got, want) in p.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{p:?}");
        }
    }

    #[test]
    fn too_few_results_fall_back_to_random() {
        let h = space();
        assert_eq!(min_results(&h), 10);
        let a: Values = [("x".to_owned(), serde_json::json!(0.2))].into();
        let results = [(&a, 1.0), (&a, 2.0)];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert!(suggest(&h, &results, &TpeSettings::default(), &mut rng).is_none());
        let (values, fit) = next_values(&h, &results, 4, &TpeSettings::default(), &mut rng);
        assert!(fit.is_none());
        assert!(values["x"]
            .as_f64()
            .is_some_and(|x| (0.0..=1.0).contains(&x)));
    }

    /// Results whose score is the distance to 0.8: the good group sits near 0.8, so the model's
    /// choices gather there, unlike random samples.
    #[test]
    fn choices_gather_where_the_good_results_are() {
        let h = space();
        let points: Vec<Values> = (0..40)
            .map(|i| [("x".to_owned(), serde_json::json!(f64::from(i) / 39.0))].into())
            .collect();
        let results: Vec<(&Values, f64)> = points
            .iter()
            .map(|v| (v, (v["x"].as_f64().unwrap() - 0.8).abs()))
            .collect();
        let settings = TpeSettings {
            random_fraction: 0.0,
            ..TpeSettings::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let chosen: Vec<f64> = (0..50)
            .map(|_| {
                suggest(&h, &results, &settings, &mut rng).unwrap()["x"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        let near = chosen.iter().filter(|x| (*x - 0.8).abs() < 0.1).count();
        assert!(near >= 40, "only {near} of 50 near 0.8: {chosen:?}");
    }

    #[test]
    fn every_type_is_modelled_and_stays_in_its_space() {
        let mut h = BTreeMap::new();
        h.insert(
            "lr".to_owned(),
            Hparam::Log {
                base: 10.0,
                min: -4.0,
                max: -1.0,
                count: None,
            },
        );
        h.insert(
            "layers".to_owned(),
            Hparam::Int {
                min: 1,
                max: 4,
                count: None,
            },
        );
        h.insert(
            "act".to_owned(),
            Hparam::Categorical(vec![
                serde_json::json!("relu"),
                serde_json::json!("gelu"),
                serde_json::json!("tanh"),
            ]),
        );
        h.insert("batch".to_owned(), Hparam::Const(serde_json::json!(64)));
        h.insert(
            "dropout".to_owned(),
            Hparam::Double {
                min: 0.0,
                max: 0.5,
                count: None,
            },
        );
        // The best results: lr near 1e-2, 3 layers, gelu.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let points: Vec<Values> = (0..60).map(|_| space::sample(&h, &mut rng)).collect();
        let score = |v: &Values| {
            let lr = v["lr"].as_f64().unwrap().log10();
            let layers = v["layers"].as_i64().unwrap();
            (lr + 2.0).abs()
                + 0.5 * (layers - 3).unsigned_abs() as f64
                + if v["act"] == "gelu" { 0.0 } else { 1.0 }
        };
        let results: Vec<(&Values, f64)> = points.iter().map(|v| (v, score(v))).collect();
        let settings = TpeSettings {
            random_fraction: 0.0,
            ..TpeSettings::default()
        };
        let mut gelu = 0;
        for _ in 0..40 {
            let v = suggest(&h, &results, &settings, &mut rng).unwrap();
            assert_eq!(v["batch"], 64);
            let lr = v["lr"].as_f64().unwrap();
            assert!((1e-4..=1e-1).contains(&lr), "{v:?}");
            assert!((1..=4).contains(&v["layers"].as_i64().unwrap()), "{v:?}");
            let d = v["dropout"].as_f64().unwrap();
            assert!((0.0..=0.5).contains(&d), "{v:?}");
            gelu += usize::from(v["act"] == "gelu");
        }
        assert!(gelu >= 30, "gelu chosen {gelu} times of 40");
    }

    #[test]
    fn the_same_seed_and_results_give_the_same_choices() {
        let h = space();
        let points: Vec<Values> = (0..10)
            .map(|i| [("x".to_owned(), serde_json::json!(f64::from(i) / 9.0))].into())
            .collect();
        let results: Vec<(&Values, f64)> = points
            .iter()
            .map(|v| (v, v["x"].as_f64().unwrap()))
            .collect();
        let run = || {
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            (0..20)
                .map(|_| next_values(&h, &results, 8, &TpeSettings::default(), &mut rng))
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        // Some were the model's, some kept random (random_fraction 0.1).
        assert!(first.iter().any(|(_, fit)| fit.is_some()));
        assert!(first.iter().any(|(_, fit)| fit.is_none()));
        // One fit drawn from twenty times chooses what twenty fits would.
        let model = Model::fit(&h, &results, &TpeSettings::default());
        assert!(model.is_some());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let from_one_fit: Vec<_> = (0..20)
            .map(|_| {
                next_from(
                    &h,
                    model.as_ref(),
                    results.len(),
                    8,
                    &TpeSettings::default(),
                    &mut rng,
                )
            })
            .collect();
        assert_eq!(first, from_one_fit);
        // Too few results: no model, random samples, and the generator used the same way.
        let few = &results[..3];
        assert!(Model::fit(&h, few, &TpeSettings::default()).is_none());
        let mut a = ChaCha8Rng::seed_from_u64(5);
        let mut b = ChaCha8Rng::seed_from_u64(5);
        assert_eq!(
            next_values(&h, few, 8, &TpeSettings::default(), &mut a),
            next_from(&h, None, 3, 8, &TpeSettings::default(), &mut b)
        );
    }
}
