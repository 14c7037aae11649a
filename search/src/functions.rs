//! The simulation's multi-fidelity benchmark functions, each with a known global minimum, in
//! the mf-prior-bench style: a trial's length `z` in `[z_min, z_max]` is the fidelity, scaled
//! logarithmically to `s` in `[0, 1]`; below full length the function is biased (its
//! coefficients shifted by an amount proportional to `bias * (1 - s)`, which moves and weakens
//! the optimum) and noisy (`|N(0, 1)| * noise * (1 - s)` added, the same for the same point and
//! fidelity, so a point only ever looks worse); at `z_max` it is the exact function.
//!
//! - Hartmann 6-D and 3-D (Dixon and Szegő, 1978) as mf-prior-bench's `MFHartmann6` and
//!   `MFHartmann3`: each `alpha_i` lowered by `bias * (1 - s)`.
//! - Branin (Branin, 1972) as the multi-fidelity Branin of Kandasamy et al. (2017, BOCA), its
//!   three fidelity dimensions made one: `b - 0.01 k`, `c - 0.1 k`, `t + 0.05 k` with
//!   `k = 2 bias (1 - s)`, so the default bias 0.5 gives their shifts at the lowest fidelity.
//!
//! Points are given in `[0, 1]^d`; each function maps them onto its own domain.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::f64::consts::PI;

/// A benchmark function, by name in the experiment file's `[simulation]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Function {
    /// Hartmann 6-D on `[0, 1]^6`.
    #[default]
    Hartmann6,
    /// Hartmann 3-D on `[0, 1]^3`.
    Hartmann3,
    /// Branin on `[-5, 10] x [0, 15]`.
    Branin,
}

impl Function {
    /// Every function, in the order the benchmarks run them.
    pub const ALL: [Function; 3] = [Function::Hartmann6, Function::Hartmann3, Function::Branin];

    /// Its name in experiment files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Function::Hartmann6 => "hartmann6",
            Function::Hartmann3 => "hartmann3",
            Function::Branin => "branin",
        }
    }

    /// Its name in words.
    pub fn title(self) -> &'static str {
        match self {
            Function::Hartmann6 => "Hartmann 6-D",
            Function::Hartmann3 => "Hartmann 3-D",
            Function::Branin => "Branin",
        }
    }

    /// The function of this name.
    pub fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Its number of coordinates.
    pub fn dims(self) -> usize {
        match self {
            Function::Hartmann6 => 6,
            Function::Hartmann3 => 3,
            Function::Branin => 2,
        }
    }

    /// Its global minimum.
    pub fn global_min(self) -> f64 {
        match self {
            Function::Hartmann6 => -3.322_368_011_391_339,
            Function::Hartmann3 => -3.862_782_147_820_756,
            Function::Branin => 5.0 / (4.0 * PI),
        }
    }

    /// A point where the minimum is (in `[0, 1]^d`).
    pub fn optimum(self) -> Vec<f64> {
        match self {
            Function::Hartmann6 => H6_OPTIMUM.to_vec(),
            Function::Hartmann3 => H3_OPTIMUM.to_vec(),
            // (pi, 2.275) of [-5, 10] x [0, 15].
            Function::Branin => vec![(PI + 5.0) / 15.0, 2.275 / 15.0],
        }
    }

    /// The value at `x` (in `[0, 1]^d`) with the fidelity shift `k = bias * (1 - s)`.
    fn biased(self, x: &[f64], k: f64) -> f64 {
        match self {
            Function::Hartmann6 => hartmann(&H6_A, &H6_P, x, k),
            Function::Hartmann3 => hartmann(&H3_A, &H3_P, x, k),
            Function::Branin => {
                let (x1, x2) = (x[0] * 15.0 - 5.0, x[1] * 15.0);
                let k = 2.0 * k;
                let b = 5.1 / (4.0 * PI * PI) - 0.01 * k;
                let c = 5.0 / PI - 0.1 * k;
                let t = 1.0 / (8.0 * PI) + 0.05 * k;
                (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
            }
        }
    }

    /// The exact function (the highest fidelity) at `x` in `[0, 1]^d`.
    pub fn exact(self, x: &[f64]) -> f64 {
        self.biased(x, 0.0)
    }
}

const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
const H6_OPTIMUM: [f64; 6] = [0.20169, 0.150_011, 0.476_874, 0.275_332, 0.311_652, 0.6573];
const H6_A: [[f64; 6]; 4] = [
    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
];
const H6_P: [[f64; 6]; 4] = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
];
const H3_OPTIMUM: [f64; 3] = [0.114_614, 0.555_649, 0.852_547];
const H3_A: [[f64; 3]; 4] = [
    [3.0, 10.0, 30.0],
    [0.1, 10.0, 35.0],
    [3.0, 10.0, 30.0],
    [0.1, 10.0, 35.0],
];
const H3_P: [[f64; 3]; 4] = [
    [0.3689, 0.1170, 0.2673],
    [0.4699, 0.4387, 0.7470],
    [0.1091, 0.8732, 0.5547],
    [0.0381, 0.5743, 0.8828],
];

/// `- sum_i (alpha_i - k) exp(- sum_j A_ij (x_j - P_ij)^2)`.
fn hartmann<const D: usize>(a: &[[f64; D]; 4], p: &[[f64; D]; 4], x: &[f64], k: f64) -> f64 {
    let mut h = 0.0;
    for i in 0..4 {
        let inner: f64 = (0..D).map(|j| a[i][j] * (x[j] - p[i][j]).powi(2)).sum();
        h -= (ALPHA[i] - k) * (-inner).exp();
    }
    h
}

/// A benchmark function at every fidelity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiFidelity {
    /// Which function.
    pub function: Function,
    /// Lowest fidelity.
    pub z_min: f64,
    /// Highest fidelity (the exact function).
    pub z_max: f64,
    /// How much low fidelities shift the function.
    pub bias: f64,
    /// Standard deviation of the noise at the lowest fidelity.
    pub noise: f64,
    /// Seed of the noise.
    pub seed: u64,
}

impl MultiFidelity {
    /// Fidelity scaled to `[0, 1]` on a log scale.
    pub fn scaled(&self, z: f64) -> f64 {
        if self.z_max <= self.z_min {
            return 1.0;
        }
        ((z.clamp(self.z_min, self.z_max).ln() - self.z_min.ln())
            / (self.z_max.ln() - self.z_min.ln()))
        .clamp(0.0, 1.0)
    }

    /// The value at fidelity `z` and point `x` (each coordinate in `[0, 1]`, as many as the
    /// function's dimensions).
    pub fn value(&self, z: f64, x: &[f64]) -> f64 {
        let s = self.scaled(z);
        let h = self.function.biased(x, self.bias * (1.0 - s));
        if s >= 1.0 || self.noise == 0.0 {
            return h;
        }
        // The same point at the same fidelity always gets the same noise.
        let mut key = self.seed ^ z.to_bits().rotate_left(17);
        for v in x {
            key = key.rotate_left(9) ^ v.to_bits();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
        let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        h + normal.abs() * self.noise * (1.0 - s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_function_has_its_known_minimum_and_values() {
        for f in Function::ALL {
            let opt = f.optimum();
            assert_eq!(opt.len(), f.dims());
            let at = f.exact(&opt);
            assert!((at - f.global_min()).abs() < 1e-4, "{}: {at}", f.name());
            assert_eq!(Function::from_name(f.name()), Some(f));
        }
        // Tabulated values: Hartmann 6-D at the centre of the cube; Branin's other two minima
        // (-pi, 12.275) and (9.42478, 2.475); Branin at the origin of its domain, (0, 0):
        // (-6)^2 + 10 (1 - t) + 10.
        assert!((Function::Hartmann6.exact(&[0.5; 6]) - (-0.505_315)).abs() < 1e-5);
        let branin = |x1: f64, x2: f64| Function::Branin.exact(&[(x1 + 5.0) / 15.0, x2 / 15.0]);
        assert!((branin(-PI, 12.275) - 0.397_887).abs() < 1e-5);
        assert!((branin(9.424_78, 2.475) - 0.397_887).abs() < 1e-5);
        let t = 1.0 / (8.0 * PI);
        assert!((branin(0.0, 0.0) - (36.0 + 10.0 * (1.0 - t) + 10.0)).abs() < 1e-9);
        // Hartmann 3-D: -3.86278 at its optimum, and the value at (0.5, 0.5, 0.5).
        assert!((Function::Hartmann3.exact(&[0.5; 3]) - (-0.628_2)).abs() < 1e-3);
        assert_eq!(Function::from_name("levy"), None);
    }

    #[test]
    fn no_random_point_is_below_the_minimum() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for f in Function::ALL {
            let lowest = (0..20_000)
                .map(|_| {
                    let x: Vec<f64> = (0..f.dims()).map(|_| rng.gen()).collect();
                    f.exact(&x)
                })
                .fold(f64::INFINITY, f64::min);
            assert!(lowest > f.global_min(), "{}: {lowest}", f.name());
        }
    }

    #[test]
    fn low_fidelities_are_biased_noisier_and_repeatable() {
        for function in Function::ALL {
            let f = MultiFidelity {
                function,
                z_min: 1.0,
                z_max: 100.0,
                bias: 0.5,
                noise: 0.1,
                seed: 1,
            };
            let opt = function.optimum();
            assert_eq!(f.value(100.0, &opt), function.exact(&opt));
            let low = f.value(1.0, &opt);
            assert_ne!(low, function.exact(&opt), "{}", function.name());
            assert_eq!(f.value(1.0, &opt), low);
            assert_ne!(f.value(2.0, &opt), low);
            let quiet = MultiFidelity { noise: 0.0, ..f };
            assert!(f.value(3.0, &opt) >= quiet.value(3.0, &opt));
            assert!((f.scaled(10.0) - 0.5).abs() < 1e-12);
        }
        // Hartmann: every alpha_i lowered by the bias at the lowest fidelity.
        let h6 = MultiFidelity {
            function: Function::Hartmann6,
            z_min: 1.0,
            z_max: 100.0,
            bias: 0.5,
            noise: 0.0,
            seed: 1,
        };
        let opt = Function::Hartmann6.optimum();
        let want = hartmann(&H6_A, &H6_P, &opt, 0.5);
        assert_eq!(h6.value(1.0, &opt), want);
        assert!(want > Function::Hartmann6.global_min() + 0.5);
    }
}
