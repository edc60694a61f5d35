//! Scores every device's held-out items the way the browser would: the model written as a pack,
//! loaded, and run by tract with the ad side computed once for the whole catalog. Each device
//! first reconstructs its local embedding from its own training events with the model frozen
//! (the Federated Reconstruction evaluation protocol), so every run is judged alike.

use crate::metrics::{Metrics, auc, hit_ndcg_at_10, logloss};
use crate::task::{Device, Task};
use hearth_core::device::catalog::Context;
use hearth_core::learning::train::{TrainConfig, reconstruct};
use hearth_core::model::features::FeatureSpec;
use hearth_core::model::pack::ModelPack;
use hearth_core::model::params::Params;
use hearth_core::model::scorer::{Request, Scorer};
use rayon::prelude::*;

/// Metrics from per-device click probabilities over the whole catalog.
pub fn score_devices(task: &Task, probabilities: impl Fn(&Device) -> Result<Vec<f64>, String> + Sync) -> Result<Metrics, String> {
    let parts = task
        .devices
        .par_iter()
        .map(|d| {
            let p = probabilities(d)?;
            let preds: Vec<(f64, f32)> = d.test.iter().map(|&(i, y)| (p[i], y)).collect();
            let hits: Vec<(f64, f64)> =
                d.candidates.iter().map(|c| hit_ndcg_at_10(&c.iter().map(|&i| p[i]).collect::<Vec<_>>())).collect();
            Ok((preds, hits))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let (scores, labels): (Vec<f64>, Vec<f32>) = parts.iter().flat_map(|(p, _)| p.iter().copied()).unzip();
    let hits: Vec<(f64, f64)> = parts.iter().flat_map(|(_, h)| h.iter().copied()).collect();
    let n = hits.len().max(1) as f64;
    Ok(Metrics {
        auc: auc(&scores, &labels),
        logloss: logloss(&scores, &labels),
        hr10: hits.iter().map(|h| h.0).sum::<f64>() / n,
        ndcg10: hits.iter().map(|h| h.1).sum::<f64>() / n,
    })
}

/// The model's metrics on the held-out data.
pub fn evaluate(params: &Params, spec: &FeatureSpec, task: &Task, cfg: &TrainConfig) -> Result<Metrics, String> {
    let (onnx, manifest) = ModelPack::write(params, spec, 1);
    let pack = ModelPack::load(&onnx, &manifest).map_err(|e| e.to_string())?;
    let scorer = Scorer::new(&pack).map_err(|e| e.to_string())?;
    let side = scorer.ad_side(&task.catalog.ids, &task.catalog.weights).map_err(|e| e.to_string())?;
    let context = Context::default().encode(spec).map_err(|e| e.to_string())?;
    let zeros = vec![0.0; params.arch.dim];
    score_devices(task, |d| {
        let local_u = reconstruct(params, &zeros, &d.examples, cfg);
        let req = Request { user: d.profile.user_slots(spec, d.now_ms).0, local_u, context: context.clone() };
        let logits = scorer.logits(&req, &side).map_err(|e| e.to_string())?;
        Ok(logits.iter().map(|&z| 1.0 / (1.0 + (-f64::from(z)).exp())).collect())
    })
}

/// Popularity: every device gets each movie's shrunk click rate over all training ratings.
pub fn popularity(task: &Task) -> Result<Metrics, String> {
    let n = task.catalog.len();
    let (mut clicks, mut shown) = (vec![0u64; n], vec![0u64; n]);
    // Each training rating is one impression, and a click when liked.
    for &(i, label) in task.devices.iter().flat_map(|d| &d.train) {
        shown[i] += 1;
        clicks[i] += u64::from(label > 0.0);
    }
    // Click rate shrunk toward the global rate by PRIOR pseudo-impressions: rarely seen movies
    // sit near the global rate, often seen and liked ones above it.
    const PRIOR: f64 = 10.0;
    let global = clicks.iter().sum::<u64>() as f64 / shown.iter().sum::<u64>().max(1) as f64;
    let p: Vec<f64> = (0..n).map(|i| (clicks[i] as f64 + PRIOR * global) / (shown[i] as f64 + PRIOR)).collect();
    score_devices(task, |_| Ok(p.clone()))
}
