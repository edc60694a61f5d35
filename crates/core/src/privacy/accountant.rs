//! Differential-privacy accounting for federated training with two-server secure aggregation:
//! how much what each party sees can reveal about any one device.
//!
//! A device's update is clipped to norm C, conditionally rounded onto an integer grid (norm at
//! most C̃ after rounding) and secret-shared between a leader and a helper server; each server
//! adds discrete Gaussian noise of standard deviation z_server·C̃ to its share of the aggregate,
//! and the device may add its own z_local·C̃ first. Devices join each round by their own coin,
//! with probability q (Poisson sampling). Everything here is in units of the clip norm C̃: the
//! sensitivity of one device's contribution is 1, a noise standard deviation is its multiplier z.
//!
//! Every figure names who observes and which datasets count as neighbours:
//!
//! | function | observer | neighbours | protecting noise | amplification |
//! | --- | --- | --- | --- | --- |
//! | [`published_epsilon`] | anyone who sees the released models | add/remove one device, Δ = 1 | one server's discrete Gaussian (the other's only helps, by post-processing) | Poisson subsampling at q |
//! | [`seen_epsilon`] | one curious server, or a Sybil filling a round | replace one device (its two possible histories), Δ = 2 | the other server's discrete Gaussian (the device's own noise only helps) | none: uploads are seen arriving; composes over the rounds the device joined |
//! | [`seen_epsilon`] | both servers colluding | replace one, Δ = 2 | the device's local noise only; infinite without it | none |
//! | [`local_epsilon`] | whoever reads one continuous-Gaussian upload | replace one, Δ = 2 | that upload's noise | none |
//! | [`epsilon`], [`report`] | the released models of a single aggregator adding continuous Gaussian noise | add/remove one, Δ = 1 | the aggregator's Gaussian | Poisson subsampling at q |
//!
//! The discrete Gaussian over the integers has the same Rényi divergences as the continuous one
//! at most: ρ = Δ²/(2σ²) zero-concentrated DP for integer vectors at L2 distance Δ (Canonne,
//! Kamath & Steinke 2020, "The Discrete Gaussian for Differential Privacy", Thm. 14), but not
//! necessarily the continuous Gaussian's exact (ε, δ) curve. So the views of the servers compose
//! ρ over rounds ([`gaussian_rho`]) and convert once ([`zcdp_epsilon`]); the published view feeds
//! the RDP curve ε(α) = αρ to the general Poisson-subsampling bound of Zhu & Wang 2019 ("Poisson
//! Subsampled Rényi Differential Privacy", ICML, Thm. 6; [`subsampled_rdp`]), composes by adding
//! over rounds and converts at integer orders. Both conversions are the one of Canonne, Kamath &
//! Steinke 2020 (Prop. 12) and Asoodeh et al. 2020, also used by Google's dp-accounting.
//! [`rounds_within`] turns any of these into the number of rounds a budget affords.
//!
//! The continuous accountant ([`epsilon`]) is the Rényi-DP accountant of the Poisson-subsampled
//! Gaussian mechanism (Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy of the Sampled
//! Gaussian Mechanism", arXiv:1908.10530) on dp-accounting's orders and conversion. It agrees
//! with dp-accounting's `RdpAccountant` within 1% on the committed fixtures, but it is not a
//! copy of it: at fractional orders dp-accounting adds the magnitudes of an alternating series,
//! which overstates A_α, and where such an order wins (large q, many rounds) Hearth's ε is lower
//! than dp-accounting's, by up to about 16% on the settings checked (q = 0.2, z = 2, 10 000
//! rounds). Hearth's fractional-order terms match a numerical integral of A_α to 2.2e-11 (worst of 13 settings);
//! `crates/core/tests/accountant.rs` checks both. The local ε of one upload is exact, by the
//! analytic Gaussian mechanism (Balle & Wang 2018, "Improving the Gaussian Mechanism for
//! Differential Privacy: Analytical Calibration and Optimal Denoising").

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
    /// ε of one device's upload seen alone by whoever receives it, before aggregation: no
    /// sampling amplification, and replace-one neighbours (the two possible uploads of the
    /// device differ by up to twice the clip norm, sensitivity 2). See [`local_epsilon`].
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

/// The orders `published_epsilon` minimises over. Zhu & Wang's bound needs integers; the best
/// order grows roughly as ln(1/δ)/ε, so 2 to 256 serves ε down to about 0.2 at δ = 1e-9, and the
/// sparser tail up to 1024 the smaller ε (beyond it, at most a sliver of ε below 0.01 is lost).
fn integer_orders() -> impl Iterator<Item = u32> {
    (2..=256).chain((288..=1024).step_by(32))
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
    check_rate(sampling_rate)?;
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

/// ε of one device's upload on its own, as whoever receives it sees it: one release, no
/// sampling amplification, and replace-one neighbours. The receiver must not tell apart two
/// possible histories of the device, whose clipped updates can point in opposite directions, so
/// they differ by up to 2C: sensitivity 2 in units of the clip norm, the Gaussian mechanism with
/// σ = `noise_multiplier` and Δ = 2. Exact by the analytic Gaussian mechanism (Balle & Wang 2018,
/// Thm. 8): δ(ε) = Φ(Δ/(2σ) − εσ/Δ) − e^ε Φ(−Δ/(2σ) − εσ/Δ), decreasing in ε and solved by
/// bisection. That is the sensitivity-1 curve at noise multiplier z/2 (about 11.0 at z = 1,
/// δ = 1e-6). Infinite when the noise is too small for any finite ε, as `epsilon` is then.
///
/// The analytic curve is the continuous Gaussian's; a discrete-Gaussian upload is accounted by
/// [`seen_epsilon`] instead.
pub fn local_epsilon(noise_multiplier: f64, delta: f64) -> Result<f64> {
    check_noise(noise_multiplier)?;
    check_delta(delta)?;
    // Δ = 2 at σ = z is Δ = 1 at σ = z/2: the curve depends only on σ/Δ.
    let z = 0.5 * noise_multiplier;
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

/// ρ of zero-concentrated DP for the Gaussian mechanism, continuous or discrete, with L2
/// sensitivity Δ = `sensitivity` and noise standard deviation `noise_multiplier` (both in units
/// of the clip norm): ρ = Δ²/(2z²) (Bun & Steinke 2016, Prop. 1.6; for the discrete Gaussian on
/// integer vectors, Canonne, Kamath & Steinke 2020, Thm. 14). Infinite if z is so small that ρ
/// overflows.
pub fn gaussian_rho(sensitivity: f64, noise_multiplier: f64) -> Result<f64> {
    if !(sensitivity > 0.0 && sensitivity.is_finite()) {
        return invalid(format!("sensitivity {sensitivity} must be finite and positive"));
    }
    check_noise(noise_multiplier)?;
    let ratio = sensitivity / noise_multiplier;
    Ok(0.5 * ratio * ratio)
}

/// The (ε, δ) guarantee of ρ-zCDP: ε = min over real α > 1 of
/// αρ + ln(1 − 1/α) − (ln δ + ln α)/(α − 1), the conversion of Canonne, Kamath & Steinke 2020
/// (Prop. 12) and Asoodeh et al. 2020 that `epsilon` applies per order, here minimised over all
/// real orders since ρ-zCDP bounds every one of them.
///
/// With t = α − 1 the derivative of the objective is ρ − (ln(1/δ) − ln(1 + t))/t², so it falls
/// and then rises with exactly one stationary point, where ρt² + ln(1 + t) = ln(1/δ); that root is
/// bracketed in closed form and found by bisection to a relative 1e-14 in t. The objective is
/// flat there, so the value is the continuous minimum to rounding error (below 1e-13 relative);
/// and since every α gives a valid bound, an inaccurate α could only overstate ε.
///
/// ρ = 0 gives 0 and ρ = +∞ (no noise at all) gives +∞; a negative ε is reported as 0.
pub fn zcdp_epsilon(rho: f64, delta: f64) -> Result<f64> {
    check_delta(delta)?;
    check_rho(rho)?;
    if rho == 0.0 || rho == f64::INFINITY {
        return Ok(rho);
    }
    let ln_inv_delta = -delta.ln();
    let stationary = |t: f64| rho * t * t + t.ln_1p() - ln_inv_delta;
    // h(t) = ρt² + ln(1 + t) − ln(1/δ) is increasing. At s = min(ln(1/δ), √(ln(1/δ)/ρ))/2 it is at
    // most (1/4 + 1/2 − 1)·ln(1/δ) < 0, since ln(1 + s) ≤ s; at √(ln(1/δ)/ρ) and at 1/δ − 1 it is
    // positive.
    let scale = (ln_inv_delta / rho).sqrt();
    let (mut lo, mut hi) = (0.5 * scale.min(ln_inv_delta), scale.min(ln_inv_delta.exp_m1()));
    // Geometric midpoints: t spans many decades as ρ does. 200 steps cover any bracket.
    for _ in 0..200 {
        if hi / lo - 1.0 <= 1e-14 {
            break;
        }
        let mid = lo.sqrt() * hi.sqrt();
        if stationary(mid) < 0.0 { lo = mid } else { hi = mid }
    }
    // α = 1 + t, written in t so that orders just above 1 keep their precision.
    let at = |t: f64| rho * (1.0 + t) + t.ln() - t.ln_1p() + (ln_inv_delta - t.ln_1p()) / t;
    Ok(at(lo).min(at(hi)).max(0.0))
}

/// Rényi DP at integer `order` α ≥ 2 of one round of Poisson subsampling at rate q applied to a
/// mechanism with ε(α) = αρ, such as the discrete Gaussian (ρ-zCDP): the general upper bound of
/// Zhu & Wang 2019 ("Poisson Subsampled Rényi Differential Privacy", Thm. 6), for add/remove-one
/// neighbours,
///   ε'(α) ≤ 1/(α − 1) · ln[ (1 − q)^(α−1) (αq − q + 1) + C(α, 2) q² (1 − q)^(α−2) e^(ε(2))
///                          + 3 Σ_{ℓ=3..α} C(α, ℓ) (1 − q)^(α−ℓ) q^ℓ e^((ℓ−1) ε(ℓ)) ],
/// summed in log space. It is capped at the unsampled αρ, which also holds: Rényi divergence is
/// jointly quasi-convex (van Erven & Harremoës 2014, "Rényi Divergence and Kullback-Leibler
/// Divergence", Thm. 13), so mixing over the sampled subsets, and with the output that omits the
/// device, cannot exceed the base mechanism's divergence. q = 1 returns αρ exactly; ρ = +∞ gives
/// +∞. The cost is linear in α.
pub fn subsampled_rdp(sampling_rate: f64, rho: f64, order: u32) -> Result<f64> {
    check_rate(sampling_rate)?;
    check_rho(rho)?;
    if order < 2 {
        return invalid(format!("Rényi order {order} must be an integer of at least 2"));
    }
    Ok(subsampled_rdp_checked(sampling_rate, rho, order))
}

/// ε against anyone who sees the published models (the model after each of `rounds` rounds)
/// but not who took part: add/remove-one neighbours, sensitivity 1, Poisson sampling at q
/// amplifying. Only one server's discrete Gaussian, `noise_multiplier`, is counted; the other
/// server's noise is independent and can only help (post-processing). One round is
/// [`subsampled_rdp`] of ρ = 1/(2z²); rounds add; the (ε, δ) conversion of `epsilon` is then
/// minimised over the integer orders 2 to 256 and every 32nd from 288 to 1024. Zero rounds
/// release nothing and cost 0.
pub fn published_epsilon(sampling_rate: f64, noise_multiplier: f64, rounds: u64, delta: f64) -> Result<f64> {
    check_rate(sampling_rate)?;
    let rho = gaussian_rho(1.0, noise_multiplier)?;
    check_delta(delta)?;
    if rounds == 0 {
        return Ok(0.0);
    }
    let best = integer_orders()
        .map(|a| convert(rounds as f64 * subsampled_rdp_checked(sampling_rate, rho, a), f64::from(a), delta))
        .fold(f64::INFINITY, f64::min);
    Ok(best.max(0.0))
}

/// ε against whoever sees each of the device's uploads arrive: one curious server or a Sybil
/// filling a round (the entries are the other server's noise multipliers), or both servers
/// colluding (the entries are the device's own local noise multipliers). Such an observer sees
/// which rounds the device joined, so there is no sampling amplification: one entry per round
/// the device actually joined. Neighbours are replace-one (two possible histories of the
/// device), sensitivity 2 per round, so ρ = Σ 2/z_i² composes by adding (Bun & Steinke 2016,
/// Lemma 2.3) and converts by [`zcdp_epsilon`].
///
/// An entry of 0 (no noise, e.g. no local noise against colluding servers) makes ε infinite, as
/// does one so small that its ρ overflows. No entries cost 0.
pub fn seen_epsilon(noise_multipliers: &[f64], delta: f64) -> Result<f64> {
    check_delta(delta)?;
    let mut rho = 0.0;
    for &z in noise_multipliers {
        rho += if z == 0.0 { f64::INFINITY } else { gaussian_rho(2.0, z)? };
    }
    zcdp_epsilon(rho, delta)
}

/// The most rounds r ≤ `max_rounds` whose ε, `eps(r)`, is within `budget`: a bisection that
/// takes ε to be non-decreasing in r, as all ε here are. `eps` is called about log₂(max_rounds)
/// times. Fails if ε(0) already exceeds the budget, or if `eps` fails or returns NaN.
pub fn rounds_within(budget: f64, max_rounds: u64, eps: impl Fn(u64) -> Result<f64>) -> Result<u64> {
    // An infinite budget affords everything.
    if budget.is_nan() || budget < 0.0 {
        return invalid(format!("ε budget {budget} must be non-negative"));
    }
    let affordable = |r: u64| -> Result<bool> {
        let e = eps(r)?;
        if e.is_nan() {
            return invalid(format!("ε of {r} rounds is NaN"));
        }
        Ok(e <= budget)
    };
    if affordable(max_rounds)? {
        return Ok(max_rounds);
    }
    if !affordable(0)? {
        return invalid(format!("not even zero rounds fit within ε {budget}"));
    }
    // ε(lo) ≤ budget < ε(hi) throughout.
    let (mut lo, mut hi) = (0, max_rounds);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if affordable(mid)? { lo = mid } else { hi = mid }
    }
    Ok(lo)
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
        let eps = convert(d.rounds as f64 * rdp_checked(q, d.noise_multiplier, a), a, d.delta);
        // Strict: ties keep the lower order, as dp-accounting's argmin does.
        if eps < best {
            (best, best_order) = (eps, a);
        }
    }
    Ok((best.max(0.0), best_order, q))
}

/// The (ε, δ) conversion of an RDP guarantee at one order (Canonne, Kamath & Steinke 2020,
/// Prop. 12; Asoodeh et al. 2020), as dp-accounting computes it.
fn convert(rdp: f64, order: f64, delta: f64) -> f64 {
    rdp + (-1.0 / order).ln_1p() - (delta.ln() + order.ln()) / (order - 1.0)
}

/// Zhu & Wang's bound (see `subsampled_rdp`) for valid arguments.
fn subsampled_rdp_checked(q: f64, rho: f64, order: u32) -> f64 {
    let a = f64::from(order);
    let unsampled = a * rho;
    if q == 1.0 || rho == 0.0 || rho == f64::INFINITY {
        return unsampled;
    }
    let (ln_q, ln_1mq) = (q.ln(), (-q).ln_1p());
    // ℓ = 0 and 1 together: (1 − q)^(α−1) (1 + (α − 1) q).
    let mut sum = (a - 1.0) * ln_1mq + ((a - 1.0) * q).ln_1p();
    // ℓ = 2: C(α, 2) q² (1 − q)^(α−2) e^(2ρ).
    let mut ln_binom = (0.5 * a * (a - 1.0)).ln();
    sum = ln_add(sum, ln_binom + 2.0 * ln_q + (a - 2.0) * ln_1mq + 2.0 * rho);
    // ℓ ≥ 3, tripled: 3 C(α, ℓ) q^ℓ (1 − q)^(α−ℓ) e^((ℓ−1)ℓρ).
    let ln_3 = 3.0f64.ln();
    for l in 3..=order {
        let l = f64::from(l);
        ln_binom += ((a - l + 1.0) / l).ln();
        sum = ln_add(sum, ln_3 + ln_binom + l * ln_q + (a - l) * ln_1mq + (l - 1.0) * l * rho);
    }
    (sum / (a - 1.0)).min(unsampled)
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
/// summed apart. dp-accounting adds magnitudes instead, an overestimate: up to 0.3% in ε on the
/// committed fixtures, up to about 16% where low fractional orders win (module doc). The
/// stopping rule is its rule, so the same orders drop out; at large q and z those are the lowest
/// orders, which can leave ε above the exact minimum over the grid (conservative, and measured
/// in the tests).
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

fn check_rate(q: f64) -> Result<()> {
    // Written so that NaN fails too.
    if q > 0.0 && q <= 1.0 { Ok(()) } else { invalid(format!("sampling rate {q} is outside (0, 1]")) }
}

fn check_rho(rho: f64) -> Result<()> {
    if rho.is_nan() || rho < 0.0 { invalid(format!("ρ {rho} must be non-negative")) } else { Ok(()) }
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
