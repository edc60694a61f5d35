//! One device's part in a federated round: the task the aggregator announces, and the path from
//! the device's events to the bytes it uploads (train, then clip, noise and encode).

use crate::device::catalog::Ad;
use crate::device::engine::Engine;
use crate::error::{HearthError, Result};
use crate::learning::train::{self, Example, TrainConfig, Trained};
use crate::privacy::noise::{ByteSource, Sampler};
use crate::privacy::privatize::{BuildStats, build_update};
use crate::privacy::wire::{Encoding, check_clip_norm, check_noise_multiplier};
use serde::{Deserialize, Serialize};

/// What the aggregator asks of a device this round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundTask {
    /// The round's id; written into the update header so the aggregator can match it.
    pub round_id: u64,
    /// The model the update must be computed against.
    pub model_version: u64,
    /// L2 clip norm C of the update.
    pub clip_norm: f32,
    /// Noise standard deviation per coordinate is `noise_multiplier × clip_norm`.
    pub noise_multiplier: f32,
    /// Devices with fewer labelled local events sit the round out.
    #[serde(default)]
    pub min_events: usize,
    /// How the update's values are written (default `f32`).
    #[serde(default)]
    pub encoding: Encoding,
    /// Local training settings (defaults for any left out).
    #[serde(default)]
    pub train: TrainConfig,
    /// Unix time (ms) after which the aggregator abandons the round; a device that cannot
    /// finish by then may sit it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
}

/// The upload and what went into it (the latter stays on the device).
#[derive(Debug, Clone)]
pub struct Participation {
    /// The encoded update: the only thing that leaves the device.
    pub upload: Vec<u8>,
    /// Norms and noise of the privatisation, for local logs.
    pub stats: BuildStats,
    /// The local training result, `local_u` and the raw delta included.
    pub trained: Trained,
    /// Labelled examples trained on.
    pub examples: usize,
}

/// Trains on the device's events and builds the clipped, noised, encoded update for `task`.
/// Refuses a malformed task, a task for another model or a device with too few labelled
/// events before training, so a refused round leaves the device as it was.
pub fn participate<S: ByteSource>(engine: &mut Engine, task: &RoundTask, rng: &mut Sampler<S>) -> Result<Participation> {
    check_clip_norm(task.clip_norm)?;
    check_noise_multiplier(task.noise_multiplier)?;
    task.train.validate()?;
    let have = engine.pack().manifest.model_version;
    if task.model_version != have {
        return Err(HearthError::WrongModel { round: task.round_id, wanted: task.model_version, have });
    }
    let examples = engine.examples()?;
    if examples.len() < task.min_events {
        return Err(HearthError::TooFewEvents { round: task.round_id, have: examples.len(), needed: task.min_events });
    }
    let trained = engine.train(&examples, &task.train)?;
    let (update, stats) = build_update(
        trained.delta.clone(),
        task.model_version,
        task.round_id,
        task.clip_norm,
        task.noise_multiplier,
        task.encoding,
        rng,
    )?;
    Ok(Participation { upload: update.encode(), stats, trained, examples: examples.len() })
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
