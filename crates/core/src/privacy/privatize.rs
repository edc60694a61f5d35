//! The private pipeline: from a raw model delta to the update a device uploads, by clipping
//! and Gaussian noise.
//!
//! Both encodings are the Gaussian mechanism with noise multiplier z: the vector that receives
//! noise has an L2 norm of at most a bound S whatever the device's data, and the noise on every
//! coordinate has standard deviation z·S.
//!
//! - `F32`: Δ is clipped to C (S = C) and N(0, (zC)²) is added to every coordinate.
//! - `QuantizedI16`: Δ is clipped to C and expressed in grid units of step γ, so its norm is at
//!   most c = C/γ. Each coordinate is then rounded stochastically (up with probability equal to
//!   its fractional part, which keeps the expectation) and the whole rounding is re-drawn while
//!   its norm exceeds C̃ = sqrt(c² + d/4 + sqrt(2 ln(1/β))·(c + √d/2)) with β = e^(-1/2): the
//!   conditional randomized rounding of Kairouz, Liu & Steinke, "The Distributed Discrete
//!   Gaussian Mechanism for Federated Learning with Secure Aggregation" (ICML 2021,
//!   arXiv:2102.06387, Section 4), whose lemma bounds each draw's chance of exceeding C̃ by β.
//!   After [`MAX_ROUNDING_DRAWS`] failed draws the rounding is toward zero, which never grows the
//!   norm. So every possible rounded vector lies within C̃ ≥ c, and noise with standard deviation
//!   z·C̃ is the Gaussian mechanism at sensitivity C̃ for each of them; a mixture over roundings
//!   is no less private (privacy divergences are convex), and rounding the noisy values to
//!   integers and saturating them to i16 are post-processing. The guarantee is therefore that
//!   of the `F32` path with the same z, at the price of slightly more noise (C̃·γ > C).
//!   Conditioning makes the rounding very slightly biased, only through the rare re-draws.
//!
//! Noise is continuous Gaussian from floating point ([`crate::privacy::noise`]), not an exact sampler.

use crate::error::{HearthError, Result};
use crate::model::params::MAX_PARAMS;
use crate::privacy::noise::{ByteSource, Sampler, add_noise, clip, l2_norm};
use crate::privacy::wire::{Encoding, Payload, Update, check_clip_norm, check_noise_multiplier, check_step};

/// Stochastic roundings tried before falling back to rounding toward zero.
pub const MAX_ROUNDING_DRAWS: u32 = 64;
/// Noise beyond this many standard deviations saturates the i16 grid; the grid step is chosen
/// so that such draws are rare (about 8e-11 per coordinate).
const HEADROOM_SIGMAS: f64 = 6.5;

/// What [`build_update`] did, for logs and tests; none of it is uploaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildStats {
    /// ‖Δ‖ as trained.
    pub pre_clip_norm: f64,
    /// Norm of the vector that received noise, in parameter units (quantized: ‖rounded‖·γ).
    pub clipped_norm: f64,
    /// Noise standard deviation per coordinate, in parameter units.
    pub noise_std: f64,
    /// Stochastic roundings rejected for exceeding C̃ (0 for f32).
    pub rounding_retries: u32,
}

/// The grid step γ for the quantized encoding: c = C/γ grid units with c·(1 + 6.5·z) = 32767,
/// so a clipped coordinate plus 6.5 standard deviations of noise still fits an i16.
pub fn grid_step(clip_norm: f32, noise_multiplier: f32) -> Result<f32> {
    let c = f64::from(i16::MAX) / (1.0 + HEADROOM_SIGMAS * f64::from(noise_multiplier));
    check_step((f64::from(clip_norm) / c) as f32)
}

/// C̃: the largest norm, in grid units, that conditional rounding of a d-dimensional vector of
/// norm at most c lets through (Kairouz, Liu & Steinke 2021, with β = e^(-1/2), so that
/// sqrt(2 ln(1/β)) = 1). At least c.
pub fn rounding_bound(c: f64, d: usize) -> f64 {
    let d = d as f64;
    let sqrt_2_ln_inv_beta = 1.0;
    (c * c + d / 4.0 + sqrt_2_ln_inv_beta * (c + d.sqrt() / 2.0)).sqrt()
}

/// The private pipeline: from a raw model delta to the update to upload (see the module doc).
/// The nonce and all noise come from `rng`; the product passes [`Sampler::os`].
pub fn build_update<S: ByteSource>(
    mut delta: Vec<f32>,
    model_version: u64,
    round_id: u64,
    clip_norm: f32,
    noise_multiplier: f32,
    encoding: Encoding,
    rng: &mut Sampler<S>,
) -> Result<(Update, BuildStats)> {
    check_clip_norm(clip_norm)?;
    check_noise_multiplier(noise_multiplier)?;
    if delta.len() > MAX_PARAMS {
        return Err(HearthError::TooLarge { what: "update parameters", found: delta.len(), limit: MAX_PARAMS });
    }
    if let Some(index) = delta.iter().position(|x| !x.is_finite()) {
        return Err(HearthError::NonFinite { name: "model delta".into(), index });
    }
    let pre_clip_norm = clip(&mut delta, clip_norm);
    let z = f64::from(noise_multiplier);
    let (payload, stats) = match encoding {
        Encoding::F32 => {
            let clipped_norm = l2_norm(&delta);
            let noise_std = z * f64::from(clip_norm);
            add_noise(&mut delta, noise_std, rng)?;
            (Payload::F32(delta), BuildStats { pre_clip_norm, clipped_norm, noise_std, rounding_retries: 0 })
        }
        Encoding::QuantizedI16 => {
            let step = grid_step(clip_norm, noise_multiplier)?;
            let gamma = f64::from(step);
            let bound = rounding_bound(f64::from(clip_norm) / gamma, delta.len());
            let (mut grid, rounding_retries) = round_conditionally(&delta, gamma, bound, rng)?;
            let clipped_norm = l2_norm(&grid) * gamma;
            add_noise(&mut grid, z * bound, rng)?;
            // `as` saturates out-of-range floats to i16::MIN / i16::MAX.
            let values = grid.iter().map(|&y| y.round() as i16).collect();
            let stats = BuildStats { pre_clip_norm, clipped_norm, noise_std: z * bound * gamma, rounding_retries };
            (Payload::QuantizedI16 { step, values }, stats)
        }
    };
    let mut nonce = [0; 16];
    rng.fill_bytes(&mut nonce)?;
    let update = Update { model_version, round_id, nonce, clip_norm, noise_multiplier, payload };
    Ok((update, stats))
}

/// Δ/γ rounded to integers (held as f32, exact below 2^24) with norm at most `bound`, and the
/// number of rejected draws.
pub(crate) fn round_conditionally<S: ByteSource>(
    delta: &[f32],
    gamma: f64,
    bound: f64,
    rng: &mut Sampler<S>,
) -> Result<(Vec<f32>, u32)> {
    for retries in 0..MAX_ROUNDING_DRAWS {
        let grid = delta
            .iter()
            .map(|&x| {
                let t = f64::from(x) / gamma;
                let floor = t.floor();
                Ok((floor + f64::from(u8::from(rng.uniform()? < t - floor))) as f32)
            })
            .collect::<Result<Vec<f32>>>()?;
        if l2_norm(&grid) <= bound {
            return Ok((grid, retries));
        }
    }
    // Practically unreachable (probability below β^64 ≈ 1e-14), but it keeps every outcome
    // within the bound without an observable failure.
    Ok((delta.iter().map(|&x| (f64::from(x) / gamma).trunc() as f32).collect(), MAX_ROUNDING_DRAWS))
}
