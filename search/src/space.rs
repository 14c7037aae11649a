//! The hyperparameter space: grid points, random samples, the single midpoint.

use std::collections::BTreeMap;

use rand::Rng;

/// A hyperparameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Hparam {
    /// Always this value.
    Const(serde_json::Value),
    /// An integer in `[min, max]`; `count` points for grid search.
    Int {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
        /// Grid points.
        count: Option<u32>,
    },
    /// A float in `[min, max]`.
    Double {
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
        /// Grid points.
        count: Option<u32>,
    },
    /// `base ^ e` for `e` in `[min, max]`, uniform in the exponent.
    Log {
        /// The base.
        base: f64,
        /// Smallest exponent.
        min: f64,
        /// Largest exponent.
        max: f64,
        /// Grid points.
        count: Option<u32>,
    },
    /// One of these values.
    Categorical(Vec<serde_json::Value>),
}

/// A trial's hyperparameters.
pub type Values = BTreeMap<String, serde_json::Value>;

pub(crate) fn number(value: f64) -> serde_json::Value {
    serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The grid values of one hyperparameter, or why it has none.
fn grid_values(hparam: &Hparam) -> Result<Vec<serde_json::Value>, String> {
    let spaced = |min: f64, max: f64, count: u32| -> Vec<f64> {
        if count <= 1 || max <= min {
            return vec![min];
        }
        (0..count)
            .map(|i| min + (max - min) * f64::from(i) / f64::from(count - 1))
            .collect()
    };
    Ok(match hparam {
        Hparam::Const(value) => vec![value.clone()],
        Hparam::Categorical(values) => values.clone(),
        Hparam::Int { min, max, count } => {
            let span = max.abs_diff(*min) + 1;
            let n = count.map_or(span, |c| u64::from(c).min(span));
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let mut values: Vec<i64> = if n >= span {
                (*min..=*max).collect()
            } else {
                spaced(
                    *min as f64,
                    *max as f64,
                    u32::try_from(n).unwrap_or(u32::MAX),
                )
                .into_iter()
                .map(|v| v.round() as i64)
                .collect()
            };
            values.dedup();
            values.into_iter().map(serde_json::Value::from).collect()
        }
        Hparam::Double { min, max, count } => {
            let count = count.ok_or("a double hyperparameter needs count for grid search")?;
            spaced(*min, *max, count).into_iter().map(number).collect()
        }
        Hparam::Log {
            base,
            min,
            max,
            count,
        } => {
            let count = count.ok_or("a log hyperparameter needs count for grid search")?;
            spaced(*min, *max, count)
                .into_iter()
                .map(|e| number(base.powf(e)))
                .collect()
        }
    })
}

/// Number of grid points, or `(name, problem)` for a hyperparameter that has no grid.
pub fn grid_size(hparams: &BTreeMap<String, Hparam>) -> Result<u64, (String, String)> {
    let mut total: u64 = 1;
    for (name, hparam) in hparams {
        let n = grid_values(hparam).map_err(|p| (name.clone(), p))?.len() as u64;
        total = total.saturating_mul(n);
    }
    Ok(total)
}

/// Every grid point, in a fixed order (the last name varies fastest).
pub fn grid(hparams: &BTreeMap<String, Hparam>) -> Result<Vec<Values>, (String, String)> {
    let mut points = vec![Values::new()];
    for (name, hparam) in hparams {
        let values = grid_values(hparam).map_err(|p| (name.clone(), p))?;
        points = points
            .into_iter()
            .flat_map(|point| {
                values.iter().map(move |v| {
                    let mut next = point.clone();
                    next.insert(name.clone(), v.clone());
                    next
                })
            })
            .collect();
    }
    Ok(points)
}

/// One random sample: uniform in ranges (in the exponent for log), uniform among categories.
pub fn sample(hparams: &BTreeMap<String, Hparam>, rng: &mut impl Rng) -> Values {
    hparams
        .iter()
        .map(|(name, hparam)| {
            let value = match hparam {
                Hparam::Const(v) => v.clone(),
                Hparam::Categorical(values) => values[rng.gen_range(0..values.len())].clone(),
                Hparam::Int { min, max, .. } => serde_json::Value::from(rng.gen_range(*min..=*max)),
                Hparam::Double { min, max, .. } => number(if max > min {
                    rng.gen_range(*min..*max)
                } else {
                    *min
                }),
                Hparam::Log { base, min, max, .. } => number(base.powf(if max > min {
                    rng.gen_range(*min..*max)
                } else {
                    *min
                })),
            };
            (name.clone(), value)
        })
        .collect()
}

/// The middle of every range, the first category: the `single` searcher's trial.
pub fn midpoint(hparams: &BTreeMap<String, Hparam>) -> Values {
    hparams
        .iter()
        .map(|(name, hparam)| {
            let value = match hparam {
                Hparam::Const(v) => v.clone(),
                Hparam::Categorical(values) => values[0].clone(),
                Hparam::Int { min, max, .. } => serde_json::Value::from(min + (max - min) / 2),
                Hparam::Double { min, max, .. } => number((min + max) / 2.0),
                Hparam::Log { base, min, max, .. } => number(base.powf((min + max) / 2.0)),
            };
            (name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn space() -> BTreeMap<String, Hparam> {
        [
            (
                "a".to_owned(),
                Hparam::Int {
                    min: 1,
                    max: 3,
                    count: None,
                },
            ),
            (
                "b".to_owned(),
                Hparam::Categorical(vec!["x".into(), "y".into()]),
            ),
            (
                "c".to_owned(),
                Hparam::Log {
                    base: 10.0,
                    min: -3.0,
                    max: -1.0,
                    count: Some(3),
                },
            ),
            ("d".to_owned(), Hparam::Const(serde_json::json!(7))),
        ]
        .into()
    }

    #[test]
    fn the_grid_enumerates_every_combination_exactly_once() {
        let points = grid(&space()).unwrap();
        assert_eq!(points.len(), 3 * 2 * 3);
        assert_eq!(grid_size(&space()).unwrap(), 18);
        let mut seen: Vec<String> = points
            .iter()
            .map(|p| serde_json::to_string(p).unwrap())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 18);
        let cs: Vec<f64> = points.iter().map(|p| p["c"].as_f64().unwrap()).collect();
        for expected in [0.001, 0.01, 0.1] {
            assert!(cs.iter().any(|c| (c - expected).abs() < 1e-12), "{cs:?}");
        }
        assert!(points.iter().all(|p| p["d"] == 7));
        // An int grid with a count takes evenly spaced integers.
        let coarse: BTreeMap<String, Hparam> = [(
            "n".to_owned(),
            Hparam::Int {
                min: 0,
                max: 100,
                count: Some(5),
            },
        )]
        .into();
        let ns: Vec<i64> = grid(&coarse)
            .unwrap()
            .iter()
            .map(|p| p["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, vec![0, 25, 50, 75, 100]);
    }

    #[test]
    fn random_samples_respect_ranges_and_distributions() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let samples: Vec<Values> = (0..4000).map(|_| sample(&space(), &mut rng)).collect();
        let a: Vec<i64> = samples.iter().map(|s| s["a"].as_i64().unwrap()).collect();
        assert!(a.iter().all(|v| (1..=3).contains(v)));
        for v in 1..=3 {
            let share = a.iter().filter(|x| **x == v).count() as f64 / 4000.0;
            assert!((share - 1.0 / 3.0).abs() < 0.04, "{v}: {share}");
        }
        // Log-uniform: the exponent is uniform, so a quarter of the samples lie below 10^-2.5.
        let c: Vec<f64> = samples.iter().map(|s| s["c"].as_f64().unwrap()).collect();
        assert!(c.iter().all(|v| (0.001..=0.1).contains(v)));
        let below = c.iter().filter(|v| **v < 10f64.powf(-2.5)).count() as f64 / 4000.0;
        assert!((below - 0.25).abs() < 0.04, "{below}");
        let y = samples.iter().filter(|s| s["b"] == "y").count() as f64 / 4000.0;
        assert!((y - 0.5).abs() < 0.04, "{y}");
        // The same seed gives the same samples.
        let mut again = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        assert_eq!(sample(&space(), &mut again), samples[0]);
    }
}
