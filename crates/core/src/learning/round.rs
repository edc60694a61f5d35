//! One device's part in a federated round: the task the aggregator announces, and the path from
//! the device's events to the bytes it uploads: its own floor and coin, training, then either a
//! secure-aggregation report (shares for the leader, a sealed seed for the helper) or a
//! plaintext clipped and noised update, and the ledger entry it costs.

use crate::device::catalog::Ad;
use crate::device::engine::Engine;
use crate::error::{HearthError, Result};
use crate::learning::train::{self, Example, TrainConfig, Trained};
use crate::privacy::ledger::{Contribution, DevicePolicy, Ledger};
use crate::privacy::noise::{ByteSource, Sampler};
use crate::privacy::privatize::{BuildStats, build_update};
use crate::privacy::seal::{HelperKey, HpkeConfig};
use crate::privacy::shares::{Binding, SecAggTask, build_report};
use crate::privacy::wire::{Encoding, check_clip_norm, check_noise_multiplier};
use serde::{Deserialize, Serialize};

/// What the aggregator (the leader) asks of a device this round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundTask {
    /// The round's id; written into the update header so the aggregator can match it.
    pub round_id: u64,
    /// The model the update must be computed against.
    pub model_version: u64,
    /// L2 clip norm C of the update.
    pub clip_norm: f32,
    /// The noise the device adds to its own update: standard deviation `noise_multiplier × C`
    /// (plaintext), or `noise_multiplier × C̃` grid units of discrete Gaussian (secure
    /// aggregation, where it is optional defence against colluding servers).
    pub noise_multiplier: f32,
    /// Devices with fewer labelled local events sit the round out.
    #[serde(default)]
    pub min_events: usize,
    /// How a plaintext update's values are written (default `f32`); unused with `secagg`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Local training settings (defaults for any left out).
    #[serde(default)]
    pub train: TrainConfig,
    /// Unix time (ms) after which the aggregator abandons the round; a device that cannot
    /// finish by then may sit it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
    /// q: each device joins the round with this probability, by its own coin (default 1).
    #[serde(default = "always")]
    pub sampling_rate: f64,
    /// Present when the round runs through the leader and a helper: the report format replaces
    /// the plaintext update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secagg: Option<SecAggTask>,
}

fn always() -> f64 {
    1.0
}

impl RoundTask {
    /// What a secure round's reports are bound to, for a model of `params` parameters; `None`
    /// for a plaintext round.
    pub fn binding(&self, params: usize) -> Option<Binding> {
        self.secagg.map(|secagg| Binding {
            round_id: self.round_id,
            model_version: self.model_version,
            params: params as u64,
            clip_norm: self.clip_norm,
            local_noise: self.noise_multiplier,
            secagg,
        })
    }
}

/// What the helper says of itself at its own `/v1/helper_config`: its key and its noise. The
/// device takes these from the helper, never from the leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelperConfig {
    /// The key seeds are sealed to.
    pub hpke: HpkeConfig,
    /// z of the helper's discrete Gaussian per release, in units of C̃.
    pub noise_multiplier: f32,
    /// The fewest reports the helper releases an aggregate share for.
    pub min_clients: u64,
}

/// The upload and what went into it (the rest stays on the device).
#[derive(Debug, Clone)]
pub struct Participation {
    /// The encoded update or report: the only thing that leaves the device.
    pub upload: Vec<u8>,
    /// Norms and noise of a plaintext update, for local logs (`None` for a report).
    pub stats: Option<BuildStats>,
    /// The local training result, `local_u` and the raw delta included.
    pub trained: Trained,
    /// Labelled examples trained on.
    pub examples: usize,
    /// The ledger entry this upload costs.
    pub contribution: Contribution,
}

/// Checks `task` against `policy` (and the helper's own word, for a secure round) and returns
/// the ledger entry joining it would cost. Nothing is trained or drawn.
pub fn assess(task: &RoundTask, helper: Option<&HelperConfig>, policy: &DevicePolicy) -> Result<Contribution> {
    check_clip_norm(task.clip_norm)?;
    check_noise_multiplier(task.noise_multiplier)?;
    task.train.validate()?;
    if !(task.sampling_rate > 0.0 && task.sampling_rate <= 1.0) {
        return Err(HearthError::BelowDeviceFloor(format!("sampling rate {} is outside (0, 1]", task.sampling_rate)));
    }
    let local = task.noise_multiplier;
    let curious_server_noise = match (&task.secagg, helper) {
        (None, _) => {
            policy.check(task.clip_norm, local, None)?;
            f64::from(local)
        }
        (Some(_), None) => return Err(HearthError::BelowDeviceFloor("a secure round, but no helper configuration".into())),
        (Some(s), Some(h)) => {
            if s.helper_noise != h.noise_multiplier || s.clients < h.min_clients {
                return Err(HearthError::BelowDeviceFloor(format!(
                    "the task declares helper noise {} and {} clients; the helper itself says {} and at least {}",
                    s.helper_noise, s.clients, h.noise_multiplier, h.min_clients
                )));
            }
            policy.check(task.clip_norm, local, Some([s.leader_noise, s.helper_noise]))?;
            f64::from(s.leader_noise.min(s.helper_noise))
        }
    };
    Ok(Contribution {
        round_id: task.round_id,
        sampling_rate: task.sampling_rate,
        clip_norm: task.clip_norm,
        curious_server_noise,
        collusion_noise: f64::from(local),
        secure: task.secagg.is_some(),
    })
}

/// Trains on the device's events and builds the upload for `task`: a secure-aggregation
/// report when the task has `secagg` (sealed to `helper`), else a plaintext clipped and noised
/// update. Refuses a task below `policy`'s floor, for another model, or a device with too few
/// labelled events before training, so a refused round leaves the device as it was. Neither
/// flips the coin nor consults the ledger: [`take_part`] does.
pub fn participate<S: ByteSource>(
    engine: &mut Engine,
    task: &RoundTask,
    helper: Option<&HelperConfig>,
    policy: &DevicePolicy,
    rng: &mut Sampler<S>,
) -> Result<Participation> {
    let contribution = assess(task, helper, policy)?;
    let secure = match (task.binding(engine.pack().params.values.len()), helper) {
        (Some(binding), Some(h)) => {
            // Planned before training: a task no share can carry is refused with the device untouched.
            binding.plan()?;
            Some((binding, HelperKey::from_config(&h.hpke)?))
        }
        _ => None,
    };
    let have = engine.pack().manifest.model_version;
    if task.model_version != have {
        return Err(HearthError::WrongModel { round: task.round_id, wanted: task.model_version, have });
    }
    let examples = engine.examples()?;
    if examples.len() < task.min_events {
        return Err(HearthError::TooFewEvents { round: task.round_id, have: examples.len(), needed: task.min_events });
    }
    let trained = engine.train(&examples, &task.train)?;
    let (upload, stats) = match secure {
        Some((binding, key)) => {
            let built = build_report(trained.delta.clone(), &binding, &key, rng)?;
            (built.report.encode(), None)
        }
        None => {
            let (update, stats) = build_update(
                trained.delta.clone(),
                task.model_version,
                task.round_id,
                task.clip_norm,
                task.noise_multiplier,
                task.encoding,
                rng,
            )?;
            (update.encode(), Some(stats))
        }
    };
    Ok(Participation { upload, stats, trained, examples: examples.len(), contribution })
}

/// The device's whole decision for one round: its floor, its coin (flipped once per round and
/// kept in the ledger, so a reload cannot flip again), its ledger's budget, then
/// [`participate`]. `Ok(None)` when the coin says sit this round out. The ledger records the
/// round once the upload is built.
pub fn take_part<S: ByteSource>(
    engine: &mut Engine,
    task: &RoundTask,
    helper: Option<&HelperConfig>,
    ledger: &mut Ledger,
    policy: &DevicePolicy,
    rng: &mut Sampler<S>,
) -> Result<Option<Participation>> {
    let contribution = assess(task, helper, policy)?;
    if !ledger.coin_for(task.round_id, task.sampling_rate, rng)? {
        return Ok(None);
    }
    ledger.admit(&contribution, policy)?;
    let p = participate(engine, task, helper, policy, rng)?;
    ledger.record(p.contribution.clone());
    Ok(Some(p))
}

/// Learning on an engine's own state. These live here rather than in `device::engine` so that
/// the device layer never depends on learning.
impl Engine {
    /// Labelled examples from this device's events; ads still in the catalog contribute their
    /// content features.
    pub fn examples(&self) -> Result<Vec<Example>> {
        let by_id: std::collections::HashMap<&str, &Ad> = self.catalog().ads.iter().map(|a| (a.id.as_str(), a)).collect();
        train::examples(self.profile(), self.spec(), |id| by_id.get(id).copied())
    }

    /// One round of local training on `examples` (from [`Engine::examples`]). Keeps the
    /// reconstructed local embedding; returns the global delta for the caller to clip, noise
    /// and upload.
    pub fn train(&mut self, examples: &[Example], cfg: &TrainConfig) -> Result<Trained> {
        let trained = train::train(&self.pack().params, self.local_u(), examples, cfg)?;
        self.set_local_u(&trained.local_u)?;
        Ok(trained)
    }
}
