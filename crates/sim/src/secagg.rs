//! The product's two-server secure aggregation, run in-process: what a DP run's devices upload
//! and what its leader and helper do with it, with hearth-core's own code (`privacy::shares`,
//! `privacy::seal`, `privacy::discrete`) and the aggregator's order of steps.
//!
//! A device clips its delta, rounds it to the round's integer grid and uploads a report: its
//! share mod 2^24 for the leader and its seed sealed to the helper's key (`build_report`, HRTS
//! bytes). The leader sums the shares; at the round's close the helper opens every seed and sums
//! −PRG(seed); each adds its own discrete Gaussian of z·C̃; the two sums decode to the noised
//! sum, which must pass `implausible_block` before its mean (sum / n) goes to the server step.
//! What differs from the product: the random streams are seeded (`rng`), so a run repeats, and
//! the guards against misbehaving parties on a network (replayed reports, the batch digest,
//! deadlines, K) are left out, since every party here is honest and in one process.

use crate::rng::{Purpose, stream};
use hearth_core::model::params::ParamSpec;
use hearth_core::privacy::accountant::published_epsilon;
use hearth_core::privacy::seal::{ENC_LEN, HelperKey, KeyPair, SEALED_LEN};
use hearth_core::privacy::shares::{Binding, Plan, Report, SecAggTask, ShareSum, build_report};
use serde::Serialize;

/// The helper key's id in every report.
const KEY_ID: u8 = 1;

/// A DP run's mechanism: what every round's binding carries besides the round and its n.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Dp {
    /// C: each device's delta is clipped to this L2 norm.
    pub clip_norm: f32,
    /// z of each server's discrete Gaussian (leader and helper alike), in units of C̃.
    pub server_noise: f32,
    /// z of each device's own discrete Gaussian, in units of C̃ (0: none).
    pub local_noise: f32,
}

/// The least server noise multiplier, as the f32 a round task carries, whose published models
/// stay within `epsilon` after `rounds` rounds at sampling rate q (`accountant::published_epsilon`:
/// add/remove one device, one server's noise counted, amplified by sampling). ε falls as z
/// grows, so z is bisected; it is then rounded up to an f32, so the ε it gives is at most the
/// target.
pub fn server_noise_for(epsilon: f64, sampling_rate: f64, rounds: u64, delta: f64) -> Result<f32, String> {
    let eps = |z: f64| published_epsilon(sampling_rate, z, rounds, delta).map_err(|e| e.to_string());
    if !(epsilon > 0.0 && epsilon.is_finite()) {
        return Err(format!("target ε {epsilon} must be finite and positive"));
    }
    let (mut lo, mut hi) = (1e-3, 1.0);
    while eps(hi)? > epsilon {
        (lo, hi) = (hi, hi * 2.0);
        if hi > 1e7 {
            return Err(format!("no noise multiplier up to 1e7 gives ε {epsilon} over {rounds} rounds"));
        }
    }
    // ε(lo) > target ≥ ε(hi) throughout; geometric midpoints, since z spans decades.
    while hi / lo - 1.0 > 1e-7 {
        let mid = (lo * hi).sqrt();
        if eps(mid)? > epsilon { lo = mid } else { hi = mid }
    }
    let z = hi as f32;
    Ok(if f64::from(z) < hi { z.next_up() } else { z })
}

/// One DP run's secure aggregation: its noise and the helper's key pair, from the run's seed.
pub struct Mechanism {
    dp: Dp,
    helper: KeyPair,
    key: HelperKey,
}

impl Mechanism {
    /// The helper's key pair is derived from a seeded stream; devices seal to its public half
    /// as published in its configuration, as they would after fetching it from the helper.
    pub fn new(dp: Dp, seed: u64) -> Result<Mechanism, String> {
        let mut ikm = [0u8; 32];
        stream(seed, Purpose::HelperKey, 0, 0).fill_bytes(&mut ikm).map_err(|e| e.to_string())?;
        let helper = KeyPair::from_secret(KEY_ID, &ikm);
        let key = HelperKey::from_config(&helper.config()).map_err(|e| e.to_string())?;
        Ok(Mechanism { dp, helper, key })
    }

    /// The helper's public key, as devices seal to it.
    pub fn helper_key(&self) -> &HelperKey {
        &self.key
    }

    /// What a round's reports are bound to: `clients` is the number of reports the release sums
    /// (the round's realised n, known once every device has flipped its coin).
    pub fn binding(&self, round: u64, model_version: u64, params: usize, clients: usize) -> Binding {
        Binding {
            round_id: round,
            model_version,
            params: params as u64,
            clip_norm: self.dp.clip_norm,
            local_noise: self.dp.local_noise,
            secagg: SecAggTask {
                clients: clients as u64,
                leader_noise: self.dp.server_noise,
                helper_noise: self.dp.server_noise,
            },
        }
    }

    /// Device `device`'s upload for a round: the HRTS bytes of its report (`build_report`),
    /// every random draw from its own stream for the round.
    pub fn upload(&self, delta: Vec<f32>, binding: &Binding, seed: u64, device: usize) -> Result<Vec<u8>, String> {
        let mut rng = stream(seed, Purpose::Report, binding.round_id, device as u64);
        let built = build_report(delta, binding, &self.key, &mut rng).map_err(|e| e.to_string())?;
        Ok(built.report.encode())
    }
}

/// A report's sealed seed, which the leader relays to the helper unread.
struct Sealed {
    report_id: [u8; 16],
    key_id: u8,
    enc: [u8; ENC_LEN],
    sealed: [u8; SEALED_LEN],
}

/// Both servers' state for one round.
pub struct Servers<'a> {
    mechanism: &'a Mechanism,
    binding: Binding,
    plan: Plan,
    leader: ShareSum,
    seeds: Vec<Sealed>,
}

/// What a round's close gives the server step.
#[derive(Debug, Clone, PartialEq)]
pub enum Release {
    /// The noised mean update, in parameter units.
    Mean(Vec<f64>),
    /// The decoded sum failed the poisoning check (the reason): the product abandons the round.
    Abandoned(String),
}

impl<'a> Servers<'a> {
    pub fn new(mechanism: &'a Mechanism, binding: Binding) -> Result<Servers<'a>, String> {
        let plan = binding.plan().map_err(|e| e.to_string())?;
        Ok(Servers { mechanism, binding, plan, leader: ShareSum::new(plan.params), seeds: Vec::new() })
    }

    /// The round's plan: grid step, C̃ and each server's σ in grid units.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The leader receives one upload: parses it as a report of this round, adds its share and
    /// keeps its sealed seed for the helper.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<(), String> {
        let r = Report::decode(bytes).map_err(|e| e.to_string())?;
        if (r.round_id, r.model_version, r.share.len()) != (self.binding.round_id, self.binding.model_version, self.plan.params) {
            return Err(format!(
                "a report for round {}, model {} with {} values; the round is {}, model {}, {} parameters",
                r.round_id,
                r.model_version,
                r.share.len(),
                self.binding.round_id,
                self.binding.model_version,
                self.plan.params
            ));
        }
        self.leader.add(r.share);
        self.seeds.push(Sealed { report_id: r.report_id, key_id: r.key_id, enc: r.enc, sealed: r.sealed });
        Ok(())
    }

    /// The round's close: the helper opens each seed under the round's binding and sums −PRG,
    /// then each server adds its own noise from its own stream; the sums decode to the noised
    /// sum, which is checked and divided by n.
    pub fn release(self, seed: u64, layout: &[ParamSpec]) -> Result<Release, String> {
        let Servers { mechanism, binding, plan, mut leader, seeds } = self;
        if leader.count() != plan.clients {
            return Err(format!("{} reports summed for a plan of {}", leader.count(), plan.clients));
        }
        let mut helper = ShareSum::new(plan.params);
        for s in &seeds {
            let aad = Report::aad(&s.report_id, s.key_id, &binding);
            let opened = mechanism.helper.open(s.key_id, &s.enc, &s.sealed, &aad).map_err(|e| e.to_string())?;
            helper.add_unmask(&opened);
        }
        let round = binding.round_id;
        helper.add_noise(plan.sigma_helper, &mut stream(seed, Purpose::Helper, round, 0)).map_err(|e| e.to_string())?;
        leader.add_noise(plan.sigma_leader, &mut stream(seed, Purpose::Leader, round, 0)).map_err(|e| e.to_string())?;
        let sum = plan.decode(&leader.values(), &helper.values()).map_err(|e| e.to_string())?;
        if let Some(why) = plan.implausible_block(&sum, layout) {
            return Ok(Release::Abandoned(why));
        }
        let n = plan.clients as f64;
        Ok(Release::Mean(sum.iter().map(|v| v / n).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_noise_is_the_least_that_meets_the_target() {
        let delta = 1.0 / 610f64.powf(1.1);
        let mut last = f32::INFINITY;
        for epsilon in [1.0, 3.0, 8.0] {
            for (q, rounds) in [(1.0, 20), (0.1, 100)] {
                let z = server_noise_for(epsilon, q, rounds, delta).unwrap();
                let at = |z: f64| published_epsilon(q, z, rounds, delta).unwrap();
                assert!(at(f64::from(z)) <= epsilon, "ε {epsilon}, q {q}: z {z} overshoots");
                assert!(at(f64::from(z) * (1.0 - 1e-5)) > epsilon, "ε {epsilon}, q {q}: z {z} is more than needed");
            }
            // A smaller ε needs more noise.
            let z = server_noise_for(epsilon, 1.0, 20, delta).unwrap();
            assert!(z < last, "ε {epsilon}: z {z} after {last}");
            last = z;
        }
        assert!(server_noise_for(0.0, 1.0, 20, delta).is_err());
    }
}
