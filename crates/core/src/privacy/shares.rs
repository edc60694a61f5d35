//! Two-server secure aggregation: a device's clipped update as integers mod 2^B, split into an
//! additive share for the leader and a sealed seed for the helper, and the servers' sums.
//!
//! A device quantizes its clipped update x to a grid (conditional stochastic rounding, so
//! ‖x‖ ≤ C̃ grid units, see `privatize`), optionally adds its own discrete Gaussian noise, draws
//! a fresh 32-byte seed s and sends the leader `x + PRG(s) mod 2^B` with s sealed to the helper
//! (HPKE, `seal`). PRG is the ChaCha20 keystream (`rand_chacha`), reduced to B bits. The leader
//! sums its shares, the helper sums `−PRG(s)` over the seeds of the same reports, each adds its
//! own discrete Gaussian noise of standard deviation z·C̃, and the two sums added mod 2^B are
//! Σx plus both noises. Alone, each server's view of one report is uniform mod 2^B (a one-time
//! pad under a PRG), whatever x is.
//!
//! # The wrap-around bound
//! The sum is decoded as the integer in [−2^(B−1), 2^(B−1)) congruent to it, which is right as
//! long as |Σx + noise| < 2^(B−1) in every coordinate. Each honest x has every coordinate within
//! ‖x‖ ≤ C̃, so |Σx_j| ≤ n·C̃ for n reports. The noise on a coordinate is a sum of independent
//! discrete Gaussians (the two servers' and n devices' local ones); each is sub-Gaussian with
//! its σ (Canonne, Kamath & Steinke 2020, Cor. 9), so their sum is sub-Gaussian with
//! σ² = σ_L² + σ_H² + n·σ_local² and P(|noise_j| ≥ T) ≤ 2·exp(−T²/(2σ²)). Over d coordinates the
//! chance that any wraps is at most p = [`WRAP_PROBABILITY`] when
//! T = σ·sqrt(2 ln(2d/p)) and n·C̃ + T ≤ 2^(B−1) − 1. [`Plan::new`] picks the finest grid (the
//! largest C̃) that satisfies this for the round's n = K reports; everything scales with C̃, so
//! the condition is C̃·(n + sqrt(2 (z_L² + z_H² + n·z_local²) ln(2d/p))) ≤ 2^(B−1) − 1.

use crate::error::{HearthError, Result, SecAggError, UpdateError};
use crate::model::params::{MAX_PARAMS, ParamSpec};
use crate::privacy::discrete;
use crate::privacy::noise::{ByteSource, Sampler, clip};
use crate::privacy::privatize::{round_conditionally, rounding_bound};
use crate::privacy::seal::{ENC_LEN, HelperKey, SEALED_LEN, SEED_LEN};
use crate::privacy::wire::check_clip_norm;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// B: every share, sum and noise is an integer mod 2^B, written in B/8 bytes.
pub const SHARE_BITS: u32 = 24;
/// 2^B − 1: reduces a u32 mod 2^B.
pub const MASK: u32 = (1 << SHARE_BITS) - 1;
/// The largest chance, per release, that any coordinate of an honest sum wraps around.
pub const WRAP_PROBABILITY: f64 = 1e-9;
/// Bytes per share value.
pub const VALUE_BYTES: usize = (SHARE_BITS / 8) as usize;
/// The first four bytes of a report.
pub const REPORT_MAGIC: [u8; 4] = *b"HRTS";
/// The report format version this build writes and reads.
pub const REPORT_VERSION: u16 = 1;
/// Report header bytes before the leader's share.
pub const REPORT_HEADER_LEN: usize = 4 + 2 + 8 + 8 + 16 + 4 + 1 + ENC_LEN + SEALED_LEN;

/// The secure-aggregation part of a round task: how many reports a release sums and the noise
/// each server adds, as multiples of C̃ (the device's own noise is the task's
/// `noise_multiplier`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecAggTask {
    /// n: exactly this many reports are summed per release (the round's K).
    pub clients: u64,
    /// z of the leader's discrete Gaussian: σ_L = z_L·C̃ per coordinate.
    pub leader_noise: f32,
    /// z of the helper's discrete Gaussian; the device checks it against the helper's own
    /// configuration.
    pub helper_noise: f32,
}

/// Everything a report depends on besides the device's values: the round, the model and the
/// plan's inputs. The device seals its seed under it ([`Report::aad`]) and the leader hands it
/// to the helper with the batch, so both servers and every device agree on one plan.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The round.
    pub round_id: u64,
    /// The model trained against.
    pub model_version: u64,
    /// d: parameters per report.
    pub params: u64,
    /// C.
    pub clip_norm: f32,
    /// z of each device's own discrete Gaussian.
    pub local_noise: f32,
    /// Clients per release and the servers' noise.
    pub secagg: SecAggTask,
}

impl Binding {
    /// The round's [`Plan`].
    pub fn plan(&self) -> Result<Plan> {
        let params = usize::try_from(self.params).map_err(|_| SecAggError::Plan(format!("{} parameters", self.params)))?;
        Plan::new(self.clip_norm, params, &self.secagg, self.local_noise)
    }
}

/// The grid and noise of one round's shares, computed alike by devices and both servers from
/// the task, so no grid step travels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// d: parameters per update.
    pub params: usize,
    /// n: reports per release.
    pub clients: u64,
    /// C: the L2 clip in parameter units.
    pub clip_norm: f32,
    /// γ: parameter units per grid unit.
    pub step: f64,
    /// C̃: the largest norm, in grid units, of a device's rounded update (the sensitivity).
    pub bound: f64,
    /// σ of each server's and of each device's discrete Gaussian, in grid units.
    pub sigma_leader: f64,
    /// See `sigma_leader`.
    pub sigma_helper: f64,
    /// See `sigma_leader`.
    pub sigma_local: f64,
}

impl Plan {
    /// The finest grid whose sums stay within 2^(B−1) (see the module doc). Refuses parameters
    /// where that grid would be coarser than √d grid units per clip, where rounding alone would
    /// add more than about 12% to the noise.
    pub fn new(clip_norm: f32, params: usize, task: &SecAggTask, local_noise: f32) -> Result<Plan> {
        check_clip_norm(clip_norm)?;
        let plan_error = |m: String| -> HearthError { SecAggError::Plan(m).into() };
        if params == 0 || params > MAX_PARAMS {
            return Err(plan_error(format!("{params} parameters")));
        }
        if task.clients == 0 {
            return Err(plan_error("0 clients per round".into()));
        }
        let zs = [task.leader_noise, task.helper_noise, local_noise];
        if zs.iter().any(|z| !(z.is_finite() && *z >= 0.0)) {
            return Err(plan_error(format!("noise multipliers {zs:?} must be finite and non-negative")));
        }
        let [zl, zh, zd] = zs.map(f64::from);
        let (n, d) = (task.clients as f64, params as f64);
        let tail = (2.0 * (zl * zl + zh * zh + n * zd * zd) * (2.0 * d / WRAP_PROBABILITY).ln()).sqrt();
        let limit = f64::from((1u32 << (SHARE_BITS - 1)) - 1);
        let bound_max = limit / (n + tail);
        // C̃(c) grows with c: bisect for the largest c whose C̃ fits.
        let (mut lo, mut hi) = (0.0, bound_max);
        if rounding_bound(d.sqrt(), params) > bound_max {
            return Err(plan_error(format!(
                "{n} clients per round at noise multipliers {zs:?} leave {bound_max:.0} grid units per clip, below √d = {:.0}",
                d.sqrt()
            )));
        }
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if rounding_bound(mid, params) <= bound_max { lo = mid } else { hi = mid }
        }
        let c = lo;
        let bound = rounding_bound(c, params);
        Ok(Plan {
            params,
            clients: task.clients,
            clip_norm,
            step: f64::from(clip_norm) / c,
            bound,
            sigma_leader: zl * bound,
            sigma_helper: zh * bound,
            sigma_local: zd * bound,
        })
    }

    /// The sum of two servers' aggregate shares, decoded to parameter units: each coordinate
    /// centred into [−2^(B−1), 2^(B−1)) and scaled by γ.
    pub fn decode(&self, leader: &[u32], helper: &[u32]) -> Result<Vec<f64>> {
        if leader.len() != self.params || helper.len() != self.params {
            return Err(SecAggError::Mismatch(format!(
                "aggregate shares of {} and {} values for {} parameters",
                leader.len(),
                helper.len(),
                self.params
            ))
            .into());
        }
        Ok(leader.iter().zip(helper).map(|(a, b)| f64::from(centred(a.wrapping_add(*b))) * self.step).collect())
    }
}

impl Plan {
    /// σ of the noise on each coordinate of a release: both servers' and n devices' own.
    pub fn release_sigma(&self) -> f64 {
        (self.sigma_leader.powi(2) + self.sigma_helper.powi(2) + self.clients as f64 * self.sigma_local.powi(2)).sqrt()
    }

    /// The poisoning check on a decoded sum (parameter units, from [`Plan::decode`]): shares
    /// cannot be checked one by one, but the sum S = s + e of n honest reports (‖s‖ ≤ n·C̃ in
    /// every tensor and every row of a matrix) and the release's noise e (σ per coordinate) obeys,
    /// on a block of k coordinates, ‖S‖² = ‖s‖² + 2⟨s, e⟩ + ‖e‖² with ⟨s, e⟩ ≤ 10·σ‖s‖ (a
    /// Gaussian tail, e^(−50)) and ‖e‖² ≤ σ²(k + 2√(50k) + 100) (Laurent & Massart 2000, Lemma 1,
    /// e^(−50); the discrete Gaussians here have σ of thousands of grid units, where their
    /// moments are the Gaussian's). A block past that χ² bound is named, and the caller abandons
    /// the round. What a malicious report can still do below it is in
    /// docs/secure-aggregation.md: it can hide in the noise's fluctuation, so on large tensors it
    /// moves the sum further than all n honest reports together.
    pub fn implausible_block(&self, sum: &[f64], layout: &[ParamSpec]) -> Option<String> {
        let sigma = self.release_sigma() * self.step;
        let signal = self.clients as f64 * self.bound * self.step;
        let too_large = |values: &[f64]| {
            let k = values.len() as f64;
            let squared: f64 = values.iter().map(|v| v * v).sum();
            let limit = signal * signal + 20.0 * sigma * signal + sigma * sigma * (k + 2.0 * (50.0 * k).sqrt() + 100.0);
            (squared > limit).then(|| (squared.sqrt(), limit.sqrt()))
        };
        for p in layout {
            let Some(values) = sum.get(p.offset..p.offset + p.len()) else {
                return Some(format!("tensor {} lies outside the {} summed values", p.name, sum.len()));
            };
            if let Some((norm, limit)) = too_large(values) {
                return Some(format!("tensor {}: norm {norm:.4} exceeds {limit:.4}", p.name));
            }
            if let [_, width] = p.shape[..] {
                for (row, values) in values.chunks(width.max(1)).enumerate() {
                    if let Some((norm, limit)) = too_large(values) {
                        return Some(format!("tensor {} row {row}: norm {norm:.4} exceeds {limit:.4}", p.name));
                    }
                }
            }
        }
        None
    }
}

/// The integer in [−2^(B−1), 2^(B−1)) congruent to `v` mod 2^B.
pub fn centred(v: u32) -> i32 {
    let v = v & MASK;
    if v >= 1 << (SHARE_BITS - 1) { v as i32 - (1 << SHARE_BITS) } else { v as i32 }
}

/// PRG(seed): the ChaCha20 keystream as `params` values mod 2^B. The helper expands the same
/// seed to the same values.
pub fn expand(seed: &[u8; SEED_LEN], params: usize) -> impl Iterator<Item = u32> {
    let mut prg = ChaCha20Rng::from_seed(*seed);
    (0..params).map(move |_| prg.next_u32() & MASK)
}

/// One device's report for one round: the leader's share and the helper's sealed seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The model the update was trained against.
    pub model_version: u64,
    /// The round it answers.
    pub round_id: u64,
    /// Fresh random bytes: the report's identity for both servers (replays, the batch's id
    /// set); never the device's.
    pub report_id: [u8; 16],
    /// The helper key the seed is sealed to.
    pub key_id: u8,
    /// HPKE encapsulated key.
    pub enc: [u8; ENC_LEN],
    /// The seed, sealed to the helper with [`Report::aad`].
    pub sealed: [u8; SEALED_LEN],
    /// x + PRG(seed) mod 2^B, one value per parameter.
    pub share: Vec<u32>,
}

impl Report {
    /// The associated data the seed is sealed with: the report's identity and the whole round
    /// it was built for, so the seed opens for this report under this round's plan only. A
    /// leader that told the helper another plan (say more clients, hence a coarser grid and
    /// less helper noise per unit of the devices' sensitivity) gets no seed opened.
    pub fn aad(report_id: &[u8; 16], key_id: u8, binding: &Binding) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64);
        aad.extend(REPORT_MAGIC);
        aad.extend(report_id);
        aad.push(key_id);
        aad.extend(binding.round_id.to_le_bytes());
        aad.extend(binding.model_version.to_le_bytes());
        aad.extend(binding.params.to_le_bytes());
        aad.extend(binding.clip_norm.to_le_bytes());
        aad.extend(binding.local_noise.to_le_bytes());
        aad.extend(binding.secagg.clients.to_le_bytes());
        aad.extend(binding.secagg.leader_noise.to_le_bytes());
        aad.extend(binding.secagg.helper_noise.to_le_bytes());
        aad
    }

    /// Exact byte size of a report of `params` parameters.
    pub fn encoded_len(params: usize) -> usize {
        REPORT_HEADER_LEN + params * VALUE_BYTES
    }

    /// The wire format (little-endian):
    /// magic `HRTS` (4) · version u16 = 1 (2) · model version u64 (8) · round id u64 (8) ·
    /// report id (16) · parameter count u32 (4) · helper key id u8 (1) · HPKE encapsulated key
    /// (32) · sealed seed (48) · share: count values of B/8 bytes each.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Report::encoded_len(self.share.len()));
        out.extend(REPORT_MAGIC);
        out.extend(REPORT_VERSION.to_le_bytes());
        out.extend(self.model_version.to_le_bytes());
        out.extend(self.round_id.to_le_bytes());
        out.extend(self.report_id);
        out.extend(u32::try_from(self.share.len()).expect("at most MAX_PARAMS values").to_le_bytes());
        out.push(self.key_id);
        out.extend(self.enc);
        out.extend(self.sealed);
        write_values(&self.share, &mut out);
        out
    }

    /// Parses a report; every defect is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Report> {
        let header = bytes
            .first_chunk::<REPORT_HEADER_LEN>()
            .ok_or(UpdateError::Truncated { needed: REPORT_HEADER_LEN, found: bytes.len() })?;
        let field = |at: usize, len: usize| &header[at..at + len];
        if field(0, 4) != REPORT_MAGIC {
            return Err(SecAggError::Malformed(format!("magic {:?} is not HRTS", field(0, 4))).into());
        }
        let version = u16::from_le_bytes(field(4, 2).try_into().expect("2 bytes"));
        if version != REPORT_VERSION {
            return Err(UpdateError::UnknownVersion { found: version, supported: REPORT_VERSION }.into());
        }
        let u64_at = |at| u64::from_le_bytes(field(at, 8).try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(field(38, 4).try_into().expect("4 bytes")) as usize;
        if count > MAX_PARAMS {
            return Err(HearthError::TooLarge { what: "report parameters", found: count, limit: MAX_PARAMS });
        }
        let expected = Report::encoded_len(count);
        if bytes.len() != expected {
            return Err(UpdateError::LengthMismatch { expected, found: bytes.len() }.into());
        }
        Ok(Report {
            model_version: u64_at(6),
            round_id: u64_at(14),
            report_id: field(22, 16).try_into().expect("16 bytes"),
            key_id: header[42],
            enc: field(43, ENC_LEN).try_into().expect("32 bytes"),
            sealed: field(43 + ENC_LEN, SEALED_LEN).try_into().expect("48 bytes"),
            share: read_values(&bytes[REPORT_HEADER_LEN..]),
        })
    }
}

/// Values mod 2^B, B/8 bytes each, little-endian.
pub fn write_values(values: &[u32], out: &mut Vec<u8>) {
    for v in values {
        out.extend(&v.to_le_bytes()[..VALUE_BYTES]);
    }
}

/// The inverse of [`write_values`]; a trailing partial value is ignored (callers check lengths).
pub fn read_values(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(VALUE_BYTES).map(|b| u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16).collect()
}

/// What a device's report holds besides the bytes, for its logs and tests; nothing of it is sent.
#[derive(Debug, Clone)]
pub struct BuiltReport {
    /// The report to upload.
    pub report: Report,
    /// x: the rounded, clipped update in grid units, before the local noise.
    pub grid: Vec<i64>,
    /// ‖Δ‖ before clipping.
    pub pre_clip_norm: f64,
    /// Stochastic roundings rejected for exceeding C̃.
    pub rounding_retries: u32,
}

/// The device's half of the protocol: clip Δ to C, round to the plan's grid within C̃, add the
/// local discrete Gaussian, mask with PRG(seed) for the leader and seal the seed to the helper.
/// Every random draw comes from `rng` (the product passes the OS CSPRNG).
pub fn build_report<S: ByteSource>(
    mut delta: Vec<f32>,
    binding: &Binding,
    helper: &HelperKey,
    rng: &mut Sampler<S>,
) -> Result<BuiltReport> {
    let plan = binding.plan()?;
    if delta.len() != plan.params {
        return Err(SecAggError::Mismatch(format!("{} parameters, the plan has {}", delta.len(), plan.params)).into());
    }
    if let Some(index) = delta.iter().position(|x| !x.is_finite()) {
        return Err(HearthError::NonFinite { name: "model delta".into(), index });
    }
    let pre_clip_norm = clip(&mut delta, plan.clip_norm);
    let (rounded, rounding_retries) = round_conditionally(&delta, plan.step, plan.bound, rng)?;
    let grid: Vec<i64> = rounded.iter().map(|&v| v as i64).collect();
    let mut values: Vec<u32> = grid.iter().map(|&v| v as u32).collect();
    discrete::add_mod(&mut values, plan.sigma_local, rng)?;
    let mut seed = [0u8; SEED_LEN];
    rng.fill_bytes(&mut seed)?;
    let mut report_id = [0u8; 16];
    rng.fill_bytes(&mut report_id)?;
    for (v, m) in values.iter_mut().zip(expand(&seed, plan.params)) {
        *v = v.wrapping_add(m) & MASK;
    }
    let aad = Report::aad(&report_id, helper.key_id(), binding);
    let (enc, sealed) = helper.seal(&seed, &aad, rng)?;
    let report = Report {
        model_version: binding.model_version,
        round_id: binding.round_id,
        report_id,
        key_id: helper.key_id(),
        enc,
        sealed,
        share: values,
    };
    Ok(BuiltReport { report, grid, pre_clip_norm, rounding_retries })
}

/// A server's running sum of shares mod 2^B for one round, and how many it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareSum {
    sum: Vec<u32>,
    count: u64,
}

impl ShareSum {
    /// An empty sum of `params` values.
    pub fn new(params: usize) -> ShareSum {
        ShareSum { sum: vec![0; params], count: 0 }
    }

    /// Adds one report's values (the leader's share, or the helper's −PRG(seed)).
    pub fn add(&mut self, values: impl IntoIterator<Item = u32>) {
        for (s, v) in self.sum.iter_mut().zip(values) {
            *s = s.wrapping_add(v);
        }
        self.count += 1;
    }

    /// A partial sum as stored: `count` reports whose values add up to `sum` (mod 2^B).
    pub fn from_parts(sum: Vec<u32>, count: u64) -> ShareSum {
        ShareSum { sum, count }
    }

    /// Adds another partial sum of the same round (another replica's).
    pub fn merge(&mut self, other: &ShareSum) {
        self.sum.iter_mut().zip(&other.sum).for_each(|(s, o)| *s = s.wrapping_add(*o));
        self.count += other.count;
    }

    /// The helper's part for one report: −PRG(seed).
    pub fn add_unmask(&mut self, seed: &[u8; SEED_LEN]) {
        let params = self.sum.len();
        self.add(expand(seed, params).map(|m| m.wrapping_neg()));
    }

    /// Adds independent discrete Gaussian noise of standard deviation `sigma` (grid units) to
    /// every coordinate: a server's own noise, once per release.
    pub fn add_noise<S: ByteSource>(&mut self, sigma: f64, rng: &mut Sampler<S>) -> Result<()> {
        discrete::add_mod(&mut self.sum, sigma, rng)
    }

    /// Reports summed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum, each value reduced mod 2^B.
    pub fn values(&self) -> Vec<u32> {
        self.sum.iter().map(|v| v & MASK).collect()
    }

    /// Empties the sum for the next round.
    pub fn clear(&mut self) {
        self.sum.iter_mut().for_each(|v| *v = 0);
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::seal::KeyPair;

    fn task(clients: u64) -> SecAggTask {
        SecAggTask { clients, leader_noise: 2.0, helper_noise: 2.0 }
    }

    fn binding(params: u64) -> Binding {
        Binding { round_id: 9, model_version: 3, params, clip_norm: 1.0, local_noise: 0.0, secagg: task(10) }
    }

    #[test]
    fn the_plan_keeps_the_worst_honest_sum_inside_half_the_modulus() {
        for (n, d) in [(10, 1_000), (100, 280_129), (1000, 280_129)] {
            let p = Plan::new(1.0, d, &task(n), 0.5).unwrap();
            let sigma = (p.sigma_leader.powi(2) + p.sigma_helper.powi(2) + n as f64 * p.sigma_local.powi(2)).sqrt();
            let worst = n as f64 * p.bound + sigma * (2.0 * (2.0 * d as f64 / WRAP_PROBABILITY).ln()).sqrt();
            assert!(worst <= f64::from((1u32 << 23) - 1), "n {n}: {worst}");
            assert!(worst > 0.99 * f64::from(1u32 << 23), "n {n}: the grid could be finer ({worst})");
        }
        assert!(Plan::new(1.0, 280_129, &task(20_000), 0.0).is_err());
        assert!(Plan::new(0.0, 10, &task(10), 0.0).is_err());
        assert!(Plan::new(1.0, 10, &SecAggTask { helper_noise: f32::NAN, ..task(10) }, 0.0).is_err());
    }

    #[test]
    fn shares_of_many_reports_sum_to_the_rounded_updates() {
        let mut rng = Sampler::os();
        let helper = KeyPair::generate(4).unwrap();
        let key = HelperKey::from_config(&helper.config()).unwrap();
        let d = 500;
        let b = binding(d as u64);
        let plan = b.plan().unwrap();
        let (mut leader, mut helper_sum) = (ShareSum::new(d), ShareSum::new(d));
        let mut truth = vec![0i64; d];
        for i in 0..10 {
            let delta: Vec<f32> = (0..d).map(|j| ((i * 7 + j) % 13) as f32 - 6.0).collect();
            let built = build_report(delta, &b, &key, &mut rng).unwrap();
            let bytes = built.report.encode();
            assert_eq!(bytes.len(), Report::encoded_len(d));
            let r = Report::decode(&bytes).unwrap();
            assert_eq!(r, built.report);
            leader.add(r.share.iter().copied());
            let seed = helper.open(r.key_id, &r.enc, &r.sealed, &Report::aad(&r.report_id, r.key_id, &b)).unwrap();
            let other_plan = Binding { secagg: task(1000), ..b };
            assert!(helper.open(r.key_id, &r.enc, &r.sealed, &Report::aad(&r.report_id, r.key_id, &other_plan)).is_err());
            helper_sum.add_unmask(&seed);
            truth.iter_mut().zip(&built.grid).for_each(|(t, g)| *t += g);
        }
        let sum = plan.decode(&leader.values(), &helper_sum.values()).unwrap();
        for (s, t) in sum.iter().zip(&truth) {
            assert!((s - *t as f64 * plan.step).abs() < 1e-9, "{s} vs {t}");
        }
    }

    #[test]
    fn malformed_reports_are_refused() {
        let mut rng = Sampler::os();
        let key = HelperKey::from_config(&KeyPair::generate(1).unwrap().config()).unwrap();
        let bytes = build_report(vec![0.1; 8], &binding(8), &key, &mut rng).unwrap().report.encode();
        for cut in [0, 10, REPORT_HEADER_LEN, bytes.len() - 1] {
            assert!(Report::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Report::decode(&longer).is_err());
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(matches!(Report::decode(&magic), Err(HearthError::SecAgg(SecAggError::Malformed(_)))));
        let mut count = bytes;
        count[38..42].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Report::decode(&count), Err(HearthError::TooLarge { .. })));
    }

    #[test]
    fn centring_is_the_signed_residue() {
        assert_eq!(centred(0), 0);
        assert_eq!(centred(MASK), -1);
        assert_eq!(centred(1 << 23), -(1 << 23));
        assert_eq!(centred((1 << 23) - 1), (1 << 23) - 1);
        assert_eq!(centred((-5i32) as u32), -5);
    }
}
