//! The training runs: federated rounds (optionally with DP) and centralized training, both of the
//! product's model with the product's code (train.rs, update.rs, the aggregator's server step).

use crate::Options;
use crate::eval::evaluate;
use crate::metrics::Metrics;
use crate::rng::Seeded;
use crate::task::Task;
use hearth_core::learning::server::{Optimizer, RoundSum};
use hearth_core::learning::train::{self, AdamState, TrainConfig, example_loss};
use hearth_core::model::features::FeatureSpec;
use hearth_core::model::params::{Gaussian, Params};
use hearth_core::privacy::noise::Sampler;
use hearth_core::privacy::privatize::build_update;
use hearth_core::privacy::wire::Encoding;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

/// Devices trained per parallel task; partial sums are added in this fixed order, so results do
/// not depend on the thread count.
const CHUNK: usize = 8;
/// Chunks in flight at once: bounds memory to a few partial sums whatever the device count.
const GROUP: usize = 8;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Dp {
    pub epsilon: f64,
    pub delta: f64,
    pub clip_norm: f32,
    /// Per-device noise multiplier: the accountant's z for the release, divided by √K.
    pub device_noise: f32,
    pub release_noise: f64,
}

#[derive(Debug, Clone)]
pub struct FedConfig {
    /// Simulated devices; beyond the dataset's users, device c replays user c mod N (its own
    /// local embedding, the shared events). 0: one device per user.
    pub devices: usize,
    pub rounds: usize,
    pub clients_per_round: usize,
    /// The aggregator's server step (FedAvg or FedAdam), with its state carried across rounds.
    pub server: Optimizer,
    pub train: TrainConfig,
    pub dp: Option<Dp>,
    pub eval_every: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub round: usize,
    #[serde(flatten)]
    pub metrics: Metrics,
}

fn bar(len: usize, name: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64).with_message(name.to_string());
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} rounds, {elapsed} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

pub fn record(
    history: &mut Vec<Point>,
    round: usize,
    params: &Params,
    spec: &FeatureSpec,
    task: &Task,
    cfg: &TrainConfig,
) -> Result<(), String> {
    history.push(Point { round, metrics: evaluate(params, spec, task, cfg)? });
    Ok(())
}

/// Devices taking part in `round`: all of them, or a seeded sample of `k`.
fn sample(n: usize, k: usize, seed: u64, round: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    if k >= n {
        return all;
    }
    let mut rng = Gaussian::new(seed ^ (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for j in 0..k {
        let pick = j + (rng.next_u64() % (n - j) as u64) as usize;
        all.swap(j, pick);
    }
    let mut chosen = all[..k].to_vec();
    chosen.sort_unstable();
    chosen
}

/// Federated rounds: each chosen device trains from the current model and its stored local
/// embedding (train::train), clips and noises its delta with DP (privatize::build_update), and the
/// mean delta moves the model through the server step the aggregator runs (hearth-core's learning::server).
/// `start` is the history so far (the initial model's point). `eval_every` 0 evaluates never.
pub fn federated(
    init: &Params,
    start: &[Point],
    spec: &FeatureSpec,
    task: &Task,
    cfg: &FedConfig,
    name: &str,
) -> Result<(Params, Vec<Point>), String> {
    let mut params = init.clone();
    let devices = if cfg.devices == 0 { task.devices.len() } else { cfg.devices };
    let mut local_u = vec![vec![0.0f32; params.arch.dim]; devices];
    let mut history = start.to_vec();
    let mut server_state = None;
    let pb = bar(cfg.rounds, name);
    for round in 1..=cfg.rounds {
        let clients = sample(devices, cfg.clients_per_round, cfg.seed, round);
        let mut sum = RoundSum::new(params.values.len());
        let chunks: Vec<&[usize]> = clients.chunks(CHUNK).collect();
        for group in chunks.chunks(GROUP) {
            let parts = group
                .par_iter()
                .map(|chunk| {
                    let mut part = RoundSum::new(params.values.len());
                    let mut us = Vec::with_capacity(chunk.len());
                    for &c in *chunk {
                        let t = train::train(&params, &local_u[c], &task.devices[c % task.devices.len()].examples, &cfg.train)
                            .map_err(|e| e.to_string())?;
                        let values = match cfg.dp {
                            None => t.delta,
                            Some(dp) => {
                                let mut rng = Sampler::from_source(Seeded::new(cfg.seed, round as u64, c as u64));
                                build_update(t.delta, 1, round as u64, dp.clip_norm, dp.device_noise, Encoding::F32, &mut rng)
                                    .map_err(|e| e.to_string())?
                                    .0
                                    .values()
                            }
                        };
                        part.add(values);
                        us.push((c, t.local_u));
                    }
                    Ok((part, us))
                })
                .collect::<Result<Vec<_>, String>>()?;
            for (part, us) in parts {
                sum.merge(&part);
                us.into_iter().for_each(|(c, u)| local_u[c] = u);
            }
        }
        server_state = cfg.server.step(&mut params.values, &sum.mean(), server_state);
        if cfg.eval_every > 0 && (round % cfg.eval_every == 0 || round == cfg.rounds) {
            record(&mut history, round, &params, spec, task, &cfg.train)?;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok((params, history))
}

/// Centralized, non-private training of the same model: all devices' examples pooled and
/// shuffled each epoch, mini-batch Adam on the global parameters and on each device's local
/// embedding (with the same L2 pull as on the device).
pub fn centralized(init: &Params, start: &[Point], task: &Task, opts: &Options) -> Result<(Params, Vec<Point>), String> {
    let (spec, cfg, epochs, eval_every) = (&opts.spec(), &opts.train, opts.centralized_epochs, opts.eval_every);
    let mut params = init.clone();
    let dim = params.arch.dim;
    let mut local_u = vec![vec![0.0f32; dim]; task.devices.len()];
    let mut u_opt: Vec<AdamState> = (0..task.devices.len()).map(|_| AdamState::new(cfg.reconstruction, dim)).collect();
    let mut opt = AdamState::new(cfg.global, params.values.len());
    let mut order: Vec<(usize, usize)> =
        task.devices.iter().enumerate().flat_map(|(d, dev)| (0..dev.examples.len()).map(move |e| (d, e))).collect();
    let mut rng = Gaussian::new(opts.seed);
    let mut grad = vec![0.0f32; params.values.len()];
    let mut history = start.to_vec();
    let pb = bar(epochs, "centralized");
    for epoch in 1..=epochs {
        for j in (1..order.len()).rev() {
            order.swap(j, (rng.next_u64() % (j as u64 + 1)) as usize);
        }
        for batch in order.chunks(cfg.batch_size) {
            let total: f32 = batch.iter().map(|&(d, e)| task.devices[d].examples[e].weight).sum();
            if total == 0.0 {
                continue;
            }
            grad.iter_mut().for_each(|g| *g = 0.0);
            let mut grad_u: Vec<(usize, Vec<f32>)> = Vec::new();
            for &(d, e) in batch {
                let at = match grad_u.iter().position(|(k, _)| *k == d) {
                    Some(i) => i,
                    None => {
                        grad_u.push((d, vec![0.0; dim]));
                        grad_u.len() - 1
                    }
                };
                example_loss(&params, &local_u[d], &task.devices[d].examples[e], Some(&mut grad), Some(&mut grad_u[at].1));
            }
            grad.iter_mut().for_each(|g| *g /= total);
            opt.step(&mut params.values, &grad);
            for (d, mut g) in grad_u {
                g.iter_mut().zip(&local_u[d]).for_each(|(g, x)| *g = *g / total + 2.0 * cfg.local_l2 * x);
                u_opt[d].step(&mut local_u[d], &g);
            }
        }
        if epoch % eval_every == 0 || epoch == epochs {
            record(&mut history, epoch, &params, spec, task, cfg)?;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok((params, history))
}
