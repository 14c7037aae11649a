//! The multi-fidelity Hartmann 6-D function, as in mf-prior-bench's `MFHartmann6`: the
//! fidelity `z` in `[z_min, z_max]` is scaled logarithmically to `s` in `[0, 1]`; below the
//! highest fidelity the function is flattened (its coefficients `alpha` lowered by
//! `bias * (1 - s)`, which moves and weakens the optimum) and noisy (`|N(0, 1)| * noise *
//! (1 - s)`, the same for the same point and fidelity). At `z_max` it is the exact Hartmann 6-D
//! function, minimum -3.32237 at (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The minimum of Hartmann 6-D.
pub const GLOBAL_MIN: f64 = -3.322_368_011_391_339;
/// Where it is.
pub const OPTIMUM: [f64; 6] = [0.20169, 0.150_011, 0.476_874, 0.275_332, 0.311_652, 0.6573];

const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
const A: [[f64; 6]; 4] = [
    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
];
const P: [[f64; 6]; 4] = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
];

/// The benchmark's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MfHartmann6 {
    /// Lowest fidelity.
    pub z_min: f64,
    /// Highest fidelity (the exact function).
    pub z_max: f64,
    /// How much low fidelities flatten the function.
    pub bias: f64,
    /// Standard deviation of the noise at the lowest fidelity.
    pub noise: f64,
    /// Seed of the noise.
    pub seed: u64,
}

impl MfHartmann6 {
    /// Fidelity scaled to `[0, 1]` on a log scale.
    pub fn scaled(&self, z: f64) -> f64 {
        if self.z_max <= self.z_min {
            return 1.0;
        }
        ((z.clamp(self.z_min, self.z_max).ln() - self.z_min.ln())
            / (self.z_max.ln() - self.z_min.ln()))
        .clamp(0.0, 1.0)
    }

    /// The value at fidelity `z` and point `x` (each coordinate in `[0, 1]`).
    pub fn value(&self, z: f64, x: &[f64; 6]) -> f64 {
        let s = self.scaled(z);
        let mut h = 0.0;
        for i in 0..4 {
            let inner: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
            h -= (ALPHA[i] - self.bias * (1.0 - s)) * (-inner).exp();
        }
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

    /// The exact function (the highest fidelity).
    pub fn exact(x: &[f64; 6]) -> f64 {
        MfHartmann6 {
            z_min: 1.0,
            z_max: 1.0,
            bias: 0.0,
            noise: 0.0,
            seed: 0,
        }
        .value(1.0, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_function_has_its_known_minimum() {
        assert!((MfHartmann6::exact(&OPTIMUM) - GLOBAL_MIN).abs() < 1e-4);
        assert!(MfHartmann6::exact(&[0.5; 6]) > GLOBAL_MIN);
    }

    #[test]
    fn low_fidelities_are_flatter_and_noisier_and_repeatable() {
        let f = MfHartmann6 {
            z_min: 1.0,
            z_max: 100.0,
            bias: 0.5,
            noise: 0.1,
            seed: 1,
        };
        assert_eq!(f.value(100.0, &OPTIMUM), MfHartmann6::exact(&OPTIMUM));
        let low = f.value(1.0, &OPTIMUM);
        assert!(low > GLOBAL_MIN + 0.5, "{low}");
        assert_eq!(f.value(1.0, &OPTIMUM), low);
        assert_ne!(f.value(2.0, &OPTIMUM), low);
        assert!((f.scaled(10.0) - 0.5).abs() < 1e-12);
    }
}
