//! The discrete Gaussian: integer noise for secure aggregation, where shares are integers mod
//! 2^B and continuous noise would not survive the modular sum.
//!
//! N_Z(0, σ²) puts mass ∝ exp(−x²/(2σ²)) on every integer x. For integer vectors whose L2
//! distance is at most Δ, adding independent N_Z(0, σ²) to every coordinate satisfies
//! Δ²/(2σ²)-zero-concentrated DP, the same Rényi curve as the continuous Gaussian (Canonne,
//! Kamath & Steinke, "The Discrete Gaussian for Differential Privacy", NeurIPS 2020,
//! arXiv:2004.00010, Thm. 14). It is sampled by their Algorithm 3: a discrete Laplace proposal
//! with scale t = ⌊σ⌋ + 1, accepted with probability exp(−(|y| − σ²/t)²/(2σ²)).
//!
//! Like the continuous sampler in [`crate::privacy::noise`], the Bernoulli and geometric draws
//! use f64 arithmetic on 53-bit CSPRNG uniforms rather than the paper's exact rational
//! arithmetic: the distribution is the discrete Gaussian up to floating-point rounding.

use crate::error::{Result, UpdateError};
use crate::privacy::noise::{ByteSource, Sampler};

/// One draw of N_Z(0, σ²); σ = 0 gives 0. `sigma` must be finite and non-negative.
pub fn sample<S: ByteSource>(sigma: f64, rng: &mut Sampler<S>) -> Result<i64> {
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(UpdateError::NoiseStd(sigma).into());
    }
    if sigma == 0.0 {
        return Ok(0);
    }
    let t = sigma.floor() + 1.0;
    let var = sigma * sigma;
    loop {
        let y = discrete_laplace(t, rng)?;
        let gap = y.unsigned_abs() as f64 - var / t;
        if rng.uniform()? < (-gap * gap / (2.0 * var)).exp() {
            return Ok(y);
        }
    }
}

/// Adds independent N_Z(0, σ²) to every value, mod 2^32 (the caller reduces to its share width).
pub fn add_mod<S: ByteSource>(values: &mut [u32], sigma: f64, rng: &mut Sampler<S>) -> Result<()> {
    for v in values.iter_mut() {
        // Two's complement: adding the i64's low 32 bits is adding it mod 2^32.
        *v = v.wrapping_add(sample(sigma, rng)? as u32);
    }
    Ok(())
}

/// Discrete Laplace with P(y) ∝ exp(−|y|/t): a geometric magnitude with success probability
/// 1 − e^(−1/t) and a fair sign, the draw "−0" rejected so that 0 is not counted twice.
fn discrete_laplace<S: ByteSource>(t: f64, rng: &mut Sampler<S>) -> Result<i64> {
    loop {
        // 1 − uniform is in (0, 1], so the logarithm is finite; ⌊−t ln U⌋ is geometric.
        let magnitude = (-t * (1.0 - rng.uniform()?).ln()).floor();
        let negative = rng.uniform()? < 0.5;
        if negative && magnitude == 0.0 {
            continue;
        }
        // Magnitudes past 2^62 have probability below e^(−2^62/t): saturating is harmless.
        let m = magnitude.min(f64::from(1u32 << 31) * f64::from(1u32 << 31)) as i64;
        return Ok(if negative { -m } else { m });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::noise::OsRandom;

    #[test]
    fn moments_match_the_discrete_gaussian() {
        let mut rng = Sampler::from_source(OsRandom);
        for sigma in [0.6, 3.0, 40.0] {
            let n = 100_000;
            let draws: Vec<f64> = (0..n).map(|_| sample(sigma, &mut rng).unwrap() as f64).collect();
            let mean = draws.iter().sum::<f64>() / n as f64;
            let var = draws.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
            // The discrete Gaussian's variance is σ² to within e^(−2π²σ²) for σ ≥ 0.6.
            let expected: f64 =
                (-60i64..=60).map(|k| ((k * k) as f64) * (-((k * k) as f64) / (2.0 * sigma * sigma)).exp()).sum::<f64>()
                    / (-60i64..=60).map(|k| (-((k * k) as f64) / (2.0 * sigma * sigma)).exp()).sum::<f64>();
            let expected = if sigma > 10.0 { sigma * sigma } else { expected };
            assert!(mean.abs() < 5.0 * sigma / (n as f64).sqrt(), "σ {sigma}: mean {mean}");
            assert!((var / expected - 1.0).abs() < 0.03, "σ {sigma}: variance {var}, expected {expected}");
        }
    }

    #[test]
    fn the_probability_of_each_small_value_matches() {
        let mut rng = Sampler::from_source(OsRandom);
        let sigma: f64 = 1.5;
        let n = 200_000;
        let mut counts = [0u32; 11];
        for _ in 0..n {
            let x = sample(sigma, &mut rng).unwrap();
            if x.abs() <= 5 {
                counts[(x + 5) as usize] += 1;
            }
        }
        let weight = |k: i64| (-((k * k) as f64) / (2.0 * sigma * sigma)).exp();
        let total: f64 = (-40..=40).map(weight).sum();
        // χ² over the 11 central cells; the 0.999 quantile with 10 degrees of freedom is 29.6.
        let chi2: f64 = (-5i64..=5)
            .map(|k| {
                let expected = n as f64 * weight(k) / total;
                let d = f64::from(counts[(k + 5) as usize]) - expected;
                d * d / expected
            })
            .sum();
        assert!(chi2 < 29.6, "χ² = {chi2}, counts {counts:?}");
    }

    #[test]
    fn bad_sigma_is_refused_and_zero_adds_nothing() {
        let mut rng = Sampler::from_source(OsRandom);
        assert!(sample(f64::NAN, &mut rng).is_err());
        assert!(sample(-1.0, &mut rng).is_err());
        let mut v = vec![7u32; 4];
        add_mod(&mut v, 0.0, &mut rng).unwrap();
        assert_eq!(v, vec![7; 4]);
    }
}
