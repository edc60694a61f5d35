//! Differential-privacy accounting for federated training: how much a released model can reveal
//! about any one device, given how many devices there are, how many take part in each round, how
//! many rounds run and how much Gaussian noise the aggregator adds.
//!
//! The central ε is the Rényi-DP accountant of the Poisson-subsampled Gaussian mechanism
//! (Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
//! Mechanism", arXiv:1908.10530), composed over rounds and converted to (ε, δ) over the same
//! orders and with the same conversion as Google's dp-accounting `RdpAccountant`, which
//! `crates/core/tests/accountant.rs` checks it against. The local ε of a single upload is exact,
//! by the analytic Gaussian mechanism (Balle & Wang 2018, "Improving the Gaussian Mechanism for
//! Differential Privacy: Analytical Calibration and Optimal Denoising").
//!
//! Everything is in units of the clip norm: sensitivity 1, noise standard deviation z.

use serde::{Deserialize, Serialize};

use crate::{HearthError, Result};

/// How the devices of a round are chosen: each device joins independently (Poisson sampling)
/// with rate q, given directly or as the expected number of clients per round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// Expected clients per round; q = clients / population.
    ClientsPerRound(u64),
    /// The sampling rate q itself.
    Rate(f64),
}

/// A federated training deployment, as far as privacy is concerned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Devices that may be sampled.
    pub population: u64,
    /// How each round's devices are chosen.
    pub sampling: Sampling,
    /// Aggregation rounds whose results are released (the model after each one).
    pub rounds: u64,
    /// Noise standard deviation divided by the clip norm.
    pub noise_multiplier: f64,
    /// The δ of the (ε, δ) guarantee, in (0, 1); by convention well below 1/population.
    pub delta: f64,
}

/// What a deployment promises, ready to show a publisher or a user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacyReport {
    /// ε of the released model, over all rounds.
    pub central_epsilon: f64,
    /// ε of one device's upload seen alone, before aggregation (no sampling amplification).
    pub local_epsilon: f64,
    /// The δ both ε hold at.
    pub delta: f64,
    /// The deployment's noise multiplier z.
    pub noise_multiplier: f64,
    /// The per-round sampling rate q in (0, 1].
    pub sampling_rate: f64,
    /// Released rounds composed.
    pub rounds: u64,
    /// Devices that may be sampled.
    pub population: u64,
    /// The Rényi order at which the central ε was attained.
    pub best_order: f64,
}

/// The noise multipliers `noise_for` searches; outside them a target is reported unreachable.
const NOISE_RANGE: (f64, f64) = (1e-2, 1e3);

/// The fractional-order series stops after this many terms and the order is then left out, as
/// dp-accounting does.
const MAX_SERIES_TERMS: u32 = 1000;

/// The Rényi orders searched: dp-accounting's `DEFAULT_RDP_ORDERS` (1.1 to 10.9 in steps of
/// 0.1, 11 to 63, then 128, 256, 512 and 1024), built the same way so the floats are identical.
pub fn orders() -> impl Iterator<Item = f64> {
    (1..100u32).map(|x| 1.0 + f64::from(x) / 10.0).chain((11..64u32).map(f64::from)).chain([128.0, 256.0, 512.0, 1024.0])
}

/// The sampling rate q of a deployment, validated.
pub fn sampling_rate(population: u64, sampling: Sampling) -> Result<f64> {
    if population == 0 {
        return invalid("population must be at least 1".into());
    }
    let q = match sampling {
        Sampling::ClientsPerRound(c) if c > population => {
            return invalid(format!("{c} clients per round exceeds the population of {population}"));
        }
        Sampling::ClientsPerRound(c) => c as f64 / population as f64,
        Sampling::Rate(q) => q,
    };
    // Written so that NaN fails too.
    if !(q > 0.0 && q <= 1.0) {
        return invalid(format!("sampling rate {q} is outside (0, 1]"));
    }
    Ok(q)
}

/// Rényi DP of one round of the Poisson-subsampled Gaussian mechanism at `order` (α > 1):
/// ln(A_α)/(α − 1) with A_α the α-th moment of the likelihood ratio (Mironov et al. 2019).
/// At q = 1 this is the plain Gaussian mechanism's α/(2z²). Infinite where the fractional
/// series does not settle within its term budget.
pub fn rdp(sampling_rate: f64, noise_multiplier: f64, order: f64) -> Result<f64> {
    if !(sampling_rate > 0.0 && sampling_rate <= 1.0) {
        return invalid(format!("sampling rate {sampling_rate} is outside (0, 1]"));
    }
    check_noise(noise_multiplier)?;
    if !(order > 1.0 && order.is_finite()) {
        return invalid(format!("Rényi order {order} must be finite and above 1"));
    }
    Ok(rdp_checked(sampling_rate, noise_multiplier, order))
}

/// The central ε of the released model at the deployment's δ.
pub fn epsilon(d: &Deployment) -> Result<f64> {
    Ok(central(d)?.0)
}

/// ε of one device's upload on its own: the Gaussian mechanism with sensitivity 1 and
/// σ = `noise_multiplier`, exact by the analytic Gaussian mechanism (Balle & Wang 2018, Thm. 8):
/// δ(ε) = Φ(1/(2z) − εz) − e^ε Φ(−1/(2z) − εz), decreasing in ε and solved by bisection.
/// Infinite when the noise is too small for any finite ε, as `epsilon` is then.
pub fn local_epsilon(noise_multiplier: f64, delta: f64) -> Result<f64> {
    check_noise(noise_multiplier)?;
    check_delta(delta)?;
    let z = noise_multiplier;
    let delta_at = |eps: f64| {
        let c = 0.5 / z;
        // The second term in log space: e^ε overflows long before Φ underflows.
        ln_normal_cdf(c - eps * z).exp() - (eps + ln_normal_cdf(-c - eps * z)).exp()
    };
    if delta_at(0.0) <= delta {
        return Ok(0.0);
    }
    let mut hi = 1.0;
    while delta_at(hi) > delta {
        hi *= 2.0;
        // Noise so small that no finite ε holds (z ≲ 1e-154).
        if hi.is_infinite() {
            return Ok(hi);
        }
    }
    let mut lo = 0.0;
    while hi - lo > 1e-12 * hi {
        let mid = 0.5 * (lo + hi);
        if delta_at(mid) > delta { lo = mid } else { hi = mid }
    }
    // The upper end: δ(hi) ≤ δ holds there, so the answer never understates ε.
    Ok(hi)
}

/// The smallest noise multiplier whose central ε is at most `target_epsilon`, by bisection on
/// z (ε decreases as z grows), searched within [0.01, 1000].
pub fn noise_for(target_epsilon: f64, population: u64, sampling: Sampling, rounds: u64, delta: f64) -> Result<f64> {
    if !(target_epsilon > 0.0 && target_epsilon.is_finite()) {
        return invalid(format!("target ε {target_epsilon} must be finite and positive"));
    }
    let eps_at = |noise_multiplier| epsilon(&Deployment { population, sampling, rounds, noise_multiplier, delta });
    let (mut lo, mut hi) = NOISE_RANGE;
    if eps_at(hi)? > target_epsilon {
        return invalid(format!("ε ≤ {target_epsilon} is out of reach even with noise multiplier {hi}"));
    }
    if eps_at(lo)? <= target_epsilon {
        return invalid(format!("ε ≤ {target_epsilon} holds even with noise multiplier {lo}; the target constrains nothing"));
    }
    // Geometric midpoints: the range spans five decades.
    while hi / lo - 1.0 > 1e-10 {
        let mid = (lo * hi).sqrt();
        if eps_at(mid)? > target_epsilon { lo = mid } else { hi = mid }
    }
    Ok(hi)
}

/// The central and local guarantees of a deployment together.
pub fn report(d: &Deployment) -> Result<PrivacyReport> {
    let (central_epsilon, best_order, sampling_rate) = central(d)?;
    Ok(PrivacyReport {
        central_epsilon,
        local_epsilon: local_epsilon(d.noise_multiplier, d.delta)?,
        delta: d.delta,
        noise_multiplier: d.noise_multiplier,
        sampling_rate,
        rounds: d.rounds,
        population: d.population,
        best_order,
    })
}

/// (ε, the order attaining it, q). RDP composes by adding, so `rounds` rounds cost rounds × rdp.
/// The conversion is the one dp-accounting uses (Canonne, Kamath & Steinke 2020, Prop. 12;
/// Asoodeh et al. 2020): ε = rdp − (ln δ + ln α)/(α − 1) + ln((α − 1)/α), minimised over α.
fn central(d: &Deployment) -> Result<(f64, f64, f64)> {
    let q = sampling_rate(d.population, d.sampling)?;
    check_noise(d.noise_multiplier)?;
    check_delta(d.delta)?;
    if d.rounds == 0 {
        return invalid("rounds must be at least 1".into());
    }
    let (mut best, mut best_order) = (f64::INFINITY, f64::NAN);
    for a in orders() {
        let total = d.rounds as f64 * rdp_checked(q, d.noise_multiplier, a);
        let eps = total + (-1.0 / a).ln_1p() - (d.delta.ln() + a.ln()) / (a - 1.0);
        // Strict: ties keep the lower order, as dp-accounting's argmin does.
        if eps < best {
            (best, best_order) = (eps, a);
        }
    }
    Ok((best.max(0.0), best_order, q))
}

fn rdp_checked(q: f64, z: f64, a: f64) -> f64 {
    if q == 1.0 {
        return a / (2.0 * z * z);
    }
    let ln_a = if a.fract() == 0.0 { ln_a_integer(q, z, a as u64) } else { ln_a_fractional(q, z, a) };
    ln_a / (a - 1.0)
}

/// ln A_α for integer α, the finite binomial expansion
/// A_α = Σ_{k=0..α} C(α, k) (1 − q)^(α−k) q^k exp((k² − k)/(2z²)), every term positive.
fn ln_a_integer(q: f64, z: f64, a: u64) -> f64 {
    let (ln_q, ln_1mq, two_var) = (q.ln(), (-q).ln_1p(), 2.0 * z * z);
    let mut ln_binom = 0.0;
    let mut sum = f64::NEG_INFINITY;
    for k in 0..=a {
        if k > 0 {
            ln_binom += ((a - k + 1) as f64 / k as f64).ln();
        }
        let k = k as f64;
        sum = ln_add(sum, ln_binom + k * ln_q + (a as f64 - k) * ln_1mq + (k * k - k) / two_var);
    }
    sum
}

/// ln A_α for fractional α (Mironov et al. 2019, Sec. 3.3): split the integral at
/// z₀ = z² ln(1/q − 1) + 1/2, where the mixture's two weighted densities cross, and expand each
/// side as a binomial series that converges there:
///   A_α = Σ_k C(α, k) [ q^k (1 − q)^(α−k) e^((k² − k)/(2z²)) Φ((z₀ − k)/z)
///                     + q^(α−k) (1 − q)^k e^((j² − j)/(2z²)) Φ((j − z₀)/z) ],  j = α − k.
/// The generalised C(α, k) alternates in sign once k > α, so positive and negative terms are
/// summed apart. dp-accounting adds magnitudes instead, a slight overestimate (up to 0.3% in ε
/// on the fixtures, at large q); the stopping rule is its rule, so the same orders drop out.
fn ln_a_fractional(q: f64, z: f64, a: f64) -> f64 {
    let (ln_q, ln_1mq, two_var) = (q.ln(), (-q).ln_1p(), 2.0 * z * z);
    let z0 = z * z * (1.0 / q - 1.0).ln() + 0.5;
    let (mut pos, mut neg, mut magnitude) = (f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut ln_binom, mut positive) = (0.0, true);
    let (mut last0, mut last1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for k in 0..MAX_SERIES_TERMS {
        let k = f64::from(k);
        if k > 0.0 {
            let ratio = (a - k + 1.0) / k;
            ln_binom += ratio.abs().ln();
            positive ^= ratio < 0.0;
        }
        let j = a - k;
        let s0 = ln_binom + k * ln_q + j * ln_1mq + (k * k - k) / two_var + ln_normal_cdf((z0 - k) / z);
        let s1 = ln_binom + j * ln_q + k * ln_1mq + (j * j - j) / two_var + ln_normal_cdf((j - z0) / z);
        let term = ln_add(s0, s1);
        if positive {
            pos = ln_add(pos, term)
        } else {
            neg = ln_add(neg, term)
        }
        magnitude = ln_add(magnitude, term);
        if s0 < last0 && s1 < last1 && s0.max(s1) < magnitude - 30.0 {
            return pos + (-(neg - pos).exp()).ln_1p();
        }
        (last0, last1) = (s0, s1);
    }
    f64::INFINITY
}

/// ln(eˣ + eʸ) without overflow.
fn ln_add(x: f64, y: f64) -> f64 {
    let (lo, hi) = if x < y { (x, y) } else { (y, x) };
    if lo == f64::NEG_INFINITY || hi == f64::INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// ln Φ(x) for the standard normal CDF, accurate far into the lower tail.
fn ln_normal_cdf(x: f64) -> f64 {
    ln_erfc(-x / std::f64::consts::SQRT_2) - std::f64::consts::LN_2
}

/// ln erfc(x). libm's erfc is accurate to the last bits but underflows past x ≈ 26.5; from 25 on
/// the asymptotic expansion erfc(x) = e^(−x²)/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) +
/// 105/(16x⁸) − …) is used instead, whose next term is below 1e-12 there.
fn ln_erfc(x: f64) -> f64 {
    if x < 25.0 {
        return libm::erfc(x).ln();
    }
    let t = 1.0 / (2.0 * x * x);
    let series = -t * (1.0 - 3.0 * t * (1.0 - 5.0 * t * (1.0 - 7.0 * t)));
    -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln_1p()
}

fn check_noise(z: f64) -> Result<()> {
    if z > 0.0 && z.is_finite() { Ok(()) } else { invalid(format!("noise multiplier {z} must be finite and positive")) }
}

fn check_delta(delta: f64) -> Result<()> {
    if delta > 0.0 && delta < 1.0 { Ok(()) } else { invalid(format!("δ {delta} is outside (0, 1)")) }
}

fn invalid<T>(message: String) -> Result<T> {
    Err(HearthError::Privacy(message))
}
