//! The device's own privacy floor and ledger: what this SDK release refuses whatever a server
//! asks, and what the device has already spent.
//!
//! A server could ask for no noise, a huge clip or every round; the device never takes its word
//! for its own protection. [`DevicePolicy::RELEASE`] is fixed in the SDK: round tasks below its
//! noise floor or above its clip ceiling are refused before training, and the ledger stops
//! participation at the policy's ε budget or round ceiling.
//!
//! The ledger counts what the servers can see. A server sees each upload arrive, so sampling
//! hides nothing from it: its view composes every round the device joined, with replace-one
//! neighbours (two possible histories of this device, sensitivity 2C̃), by zero-concentrated DP
//! (`accountant::seen_epsilon`). Two figures are kept:
//! - **one curious server** (or a Sybil filling a round): protected by the other server's noise
//!   (secure aggregation) or by the device's own noise (a plaintext upload);
//! - **both servers colluding**: protected by the device's own noise only.
//!
//! The budget applies to the first. Only rounds the device actually joined (its coin came up
//! and an upload was built) are entries; nothing about the device's events is kept.

use crate::error::{HearthError, Result};
use crate::privacy::accountant;
use crate::privacy::noise::{ByteSource, Sampler};
use serde::{Deserialize, Serialize};

/// Limits the SDK holds the servers to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DevicePolicy {
    /// Least noise multiplier each server of a secure-aggregation round must declare: what
    /// protects the device from the other server.
    pub min_server_noise: f32,
    /// Least noise multiplier of a plaintext upload, which a curious server reads whole.
    pub min_plaintext_noise: f32,
    /// Largest clip norm C accepted.
    pub max_clip_norm: f32,
    /// ε the device may spend against one curious server, over all rounds it joins.
    pub epsilon_budget: f64,
    /// δ of that ε.
    pub delta: f64,
    /// Rounds the device joins at most, whatever the ε.
    pub max_rounds: u32,
}

impl DevicePolicy {
    /// The policy of this SDK release.
    pub const RELEASE: DevicePolicy = DevicePolicy {
        min_server_noise: 4.0,
        min_plaintext_noise: 1.0,
        max_clip_norm: 10.0,
        epsilon_budget: 8.0,
        delta: 1e-6,
        max_rounds: 100,
    };

    /// Refuses a round's noise and clip: `servers` are the two servers' declared noise
    /// multipliers (`None` for a plaintext upload), `local` the device's own.
    pub fn check(&self, clip_norm: f32, local: f32, servers: Option<[f32; 2]>) -> Result<()> {
        let refuse = |m: String| Err(HearthError::BelowDeviceFloor(m));
        if !(clip_norm.is_finite() && clip_norm > 0.0 && clip_norm <= self.max_clip_norm) {
            return refuse(format!("clip norm {clip_norm} is outside (0, {}]", self.max_clip_norm));
        }
        if !(local.is_finite() && local >= 0.0) {
            return refuse(format!("local noise multiplier {local} is not finite and non-negative"));
        }
        match servers {
            Some(zs) if zs.iter().any(|z| !(z.is_finite() && *z >= self.min_server_noise)) => {
                refuse(format!("server noise multipliers {zs:?}; this device needs each at least {}", self.min_server_noise))
            }
            None if local < self.min_plaintext_noise => refuse(format!(
                "a plaintext upload with noise multiplier {local}; this device needs at least {}",
                self.min_plaintext_noise
            )),
            _ => Ok(()),
        }
    }
}

/// Flips the device's coin for one round: true with probability `sampling_rate` (in (0, 1]),
/// from the CSPRNG. The accountant's amplification by sampling for the published models rests
/// on this coin being the device's own.
pub fn coin<S: ByteSource>(sampling_rate: f64, rng: &mut Sampler<S>) -> Result<bool> {
    if !(sampling_rate > 0.0 && sampling_rate <= 1.0) {
        return Err(HearthError::BelowDeviceFloor(format!("sampling rate {sampling_rate} is outside (0, 1]")));
    }
    Ok(rng.uniform()? < sampling_rate)
}

/// One round the device joined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contribution {
    /// The round.
    pub round_id: u64,
    /// Its sampling rate q.
    pub sampling_rate: f64,
    /// Its clip norm C.
    pub clip_norm: f32,
    /// Noise multiplier protecting the upload from one curious server (the other server's, or
    /// the device's own for a plaintext upload).
    pub curious_server_noise: f64,
    /// Noise multiplier protecting it when both servers collude (the device's own).
    pub collusion_noise: f64,
    /// Whether it went through secure aggregation.
    pub secure: bool,
}

/// The device's contributions, as stored beside its profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    /// Rounds joined, oldest first.
    pub entries: Vec<Contribution>,
    /// The coin of the latest round the device considered: flipped once, so that reloading a
    /// page cannot flip again for the same round (which would raise the real sampling rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coin: Option<Coin>,
}

/// One round's coin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coin {
    /// The round.
    pub round_id: u64,
    /// Whether it said take part.
    pub heads: bool,
}

/// What the ledger adds up to, for the profile page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spent {
    /// Rounds joined.
    pub rounds: usize,
    /// ε against one curious server or a Sybil (replace-one, no amplification).
    pub curious_server_epsilon: f64,
    /// ε if both servers colluded (infinite without local noise).
    pub collusion_epsilon: f64,
    /// The policy's budget for `curious_server_epsilon`.
    pub epsilon_budget: f64,
    /// δ of both ε.
    pub delta: f64,
    /// The policy's ceiling on rounds.
    pub max_rounds: u32,
    /// Whether one more round at the same noise still fits.
    pub may_join: bool,
}

impl Ledger {
    /// ε of the ledger's entries, and one more when `next` is given.
    fn epsilons(&self, policy: &DevicePolicy, next: Option<&Contribution>) -> Result<(f64, f64)> {
        let all = || self.entries.iter().chain(next);
        let curious: Vec<f64> = all().map(|c| c.curious_server_noise).collect();
        let collusion: Vec<f64> = all().map(|c| c.collusion_noise).collect();
        Ok((accountant::seen_epsilon(&curious, policy.delta)?, accountant::seen_epsilon(&collusion, policy.delta)?))
    }

    /// Refuses `next` when recording it would pass the budget or the round ceiling.
    pub fn admit(&self, next: &Contribution, policy: &DevicePolicy) -> Result<()> {
        // Once per round, whatever else the device forgot (an erase drops its round bookkeeping):
        // the published models' ε assumes one report per device per round.
        if self.entries.iter().any(|c| c.round_id == next.round_id) {
            return Err(HearthError::DeviceBudgetSpent(format!("already took part in round {}", next.round_id)));
        }
        if self.entries.len() >= policy.max_rounds as usize {
            return Err(HearthError::DeviceBudgetSpent(format!(
                "joined {} rounds, the most this device joins",
                self.entries.len()
            )));
        }
        let (after, _) = self.epsilons(policy, Some(next))?;
        if after > policy.epsilon_budget {
            return Err(HearthError::DeviceBudgetSpent(format!(
                "one more round would make ε against one curious server {after:.3}, over the budget of {}",
                policy.epsilon_budget
            )));
        }
        Ok(())
    }

    /// The device's coin for `round_id` at rate `sampling_rate`: the stored one when this round
    /// was flipped before, else a fresh flip ([`coin`]), stored.
    pub fn coin_for<S: ByteSource>(&mut self, round_id: u64, sampling_rate: f64, rng: &mut Sampler<S>) -> Result<bool> {
        if let Some(c) = self.coin.filter(|c| c.round_id == round_id) {
            return Ok(c.heads);
        }
        let heads = coin(sampling_rate, rng)?;
        self.coin = Some(Coin { round_id, heads });
        Ok(heads)
    }

    /// Records a round joined.
    pub fn record(&mut self, c: Contribution) {
        self.entries.push(c);
    }

    /// The totals; `may_join` assumes the next round protects like the last one.
    pub fn spent(&self, policy: &DevicePolicy) -> Result<Spent> {
        let (curious, collusion) = self.epsilons(policy, None)?;
        let may_join = match self.entries.last() {
            Some(last) => self.admit(&Contribution { round_id: last.round_id.wrapping_add(1), ..last.clone() }, policy).is_ok(),
            None => true,
        };
        Ok(Spent {
            rounds: self.entries.len(),
            curious_server_epsilon: curious,
            collusion_epsilon: collusion,
            epsilon_budget: policy.epsilon_budget,
            delta: policy.delta,
            max_rounds: policy.max_rounds,
            may_join,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secure(round_id: u64, z: f64) -> Contribution {
        Contribution { round_id, sampling_rate: 0.1, clip_norm: 1.0, curious_server_noise: z, collusion_noise: 0.0, secure: true }
    }

    #[test]
    fn the_floor_refuses_what_a_server_cannot_be_trusted_with() {
        let p = DevicePolicy::RELEASE;
        assert!(p.check(1.0, 0.0, Some([8.0, 8.0])).is_ok());
        assert!(p.check(1.0, 1.0, None).is_ok());
        for (c, local, servers) in [
            (1.0, 0.0, None),
            (1.0, 0.5, None),
            (1.0, 0.0, Some([8.0, 0.0])),
            (1.0, 0.0, Some([3.9, 8.0])),
            (1.0, 0.0, Some([f32::NAN, 8.0])),
            (11.0, 0.0, Some([8.0, 8.0])),
            (0.0, 1.0, None),
            (1.0, -1.0, Some([8.0, 8.0])),
        ] {
            assert!(
                matches!(p.check(c, local, servers), Err(HearthError::BelowDeviceFloor(_))),
                "C {c}, local {local}, servers {servers:?} accepted"
            );
        }
    }

    #[test]
    fn the_ledger_stops_at_the_budget_and_counts_only_what_was_joined() {
        let p = DevicePolicy::RELEASE;
        let mut ledger = Ledger::default();
        assert_eq!(ledger.spent(&p).unwrap().curious_server_epsilon, 0.0);
        let mut joined = 0;
        while ledger.admit(&secure(joined, 8.0), &p).is_ok() {
            ledger.record(secure(joined, 8.0));
            joined += 1;
            assert!(joined < 1000);
        }
        let spent = ledger.spent(&p).unwrap();
        assert!(spent.curious_server_epsilon <= p.epsilon_budget && !spent.may_join, "{spent:?}");
        assert!(matches!(Ledger::default().admit(&secure(0, 8.0), &p), Ok(())));
        assert!(
            matches!(ledger.admit(&secure(0, 8.0), &p), Err(HearthError::DeviceBudgetSpent(m)) if m.contains("already took part")),
            "a round already joined is refused"
        );
        assert!(joined > 1, "z = 8 affords more than one round within ε 8");
        assert_eq!(spent.collusion_epsilon, f64::INFINITY, "no local noise: no protection from colluding servers");
        let mut more = ledger.clone();
        more.record(secure(joined, 8.0));
        assert!(more.spent(&p).unwrap().curious_server_epsilon > p.epsilon_budget);
        assert!(matches!(ledger.admit(&secure(joined, 8.0), &p), Err(HearthError::DeviceBudgetSpent(_))));
    }

    #[test]
    fn the_coin_lands_at_its_rate() {
        let mut rng = Sampler::os();
        let heads = (0..20_000).filter(|_| coin(0.1, &mut rng).unwrap()).count();
        // 0.1 ± 5 standard deviations of a binomial(20000, 0.1) proportion.
        assert!((1_700..2_300).contains(&heads), "{heads}");
        assert!(coin(0.0, &mut rng).is_err() && coin(1.5, &mut rng).is_err() && coin(f64::NAN, &mut rng).is_err());
        assert!(coin(1.0, &mut rng).unwrap());
        let mut ledger = Ledger::default();
        let first = ledger.coin_for(5, 0.5, &mut rng).unwrap();
        assert!((0..50).all(|_| ledger.coin_for(5, 0.5, &mut rng).unwrap() == first), "a round's coin is flipped once");
    }
}
