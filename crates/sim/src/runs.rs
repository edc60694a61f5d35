//! The training runs: federated rounds (optionally with DP through the product's secure
//! aggregation) and centralized training, both of the product's model with the product's code
//! (train.rs, privacy::shares, the aggregator's server step).

use crate::Options;
use crate::eval::evaluate;
use crate::metrics::Metrics;
use crate::rng::{Purpose, stream};
use crate::secagg::{Dp, Mechanism, Release, Servers};
use crate::task::Task;
use hearth_core::learning::server::{Optimizer, RoundSum};
use hearth_core::learning::train::{self, AdamState, TrainConfig, example_loss};
use hearth_core::model::features::FeatureSpec;
use hearth_core::model::params::{Gaussian, Params};
use hearth_core::privacy::ledger::coin;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Devices trained per parallel task; partial results are handed on in this fixed order, so
/// results do not depend on the thread count.
const CHUNK: usize = 8;
/// Chunks in flight at once: bounds memory to a few partial sums (or 64 reports) whatever the
/// device count.
const GROUP: usize = 8;
/// A round whose coins gave fewer participants than this is skipped: nothing is trained or
/// released, and the model stays as it was. The product's leader instead waits until exactly
/// K reports have arrived; a simulation cannot wait for more devices, so it releases the n it
/// got, and a release of very few reports would be mostly noise.
pub const MIN_REPORTS: usize = 10;

#[derive(Debug, Clone)]
pub struct FedConfig {
    /// Simulated devices; beyond the dataset's users, device c replays user c mod N (its own
    /// local embedding, the shared events). 0: one device per user.
    pub devices: usize,
    pub rounds: usize,
    /// q: each device joins each round by its own coin with this probability.
    pub sampling_rate: f64,
    /// The aggregator's server step (FedAvg or FedAdam), with its state carried across rounds.
    pub server: Optimizer,
    pub train: TrainConfig,
    /// With DP, devices upload secure-aggregation reports and two simulated servers add noise;
    /// without, devices upload their raw deltas to one server.
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

/// Who took part in a federated run, round by round.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Participation {
    /// q: each device's chance of joining a round.
    pub sampling_rate: f64,
    /// Heads per round: the devices that took part, n of the round's release.
    pub per_round: Vec<usize>,
    /// Rounds with fewer than [`MIN_REPORTS`] heads: nothing released.
    pub skipped: usize,
    /// Rounds whose decoded sum failed the poisoning check: nothing released.
    pub abandoned: usize,
    /// Rounds each device uploaded in, by device.
    #[serde(skip)]
    pub joined: Vec<u32>,
}

/// Where a federated run's time went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timing {
    /// Wall seconds of each round, evaluation excluded.
    pub round_s: Vec<f64>,
    /// Seconds devices spent building their reports (clip, round, mask, seal, encode): each
    /// device's call timed and summed over devices and rounds, so with devices trained side by
    /// side it can exceed the rounds' wall time; 0 without DP.
    pub reports_s: f64,
    /// Wall seconds both servers spent on all rounds: parsing and summing shares, opening seeds
    /// and unmasking, their noise, decoding and the check; 0 without DP.
    pub servers_s: f64,
}

/// A federated run's result.
pub struct Federated {
    pub params: Params,
    pub history: Vec<Point>,
    pub participation: Participation,
    pub timing: Timing,
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

/// The devices taking part in `round`: those whose own coin at rate q comes up heads
/// (`ledger::coin`, as the product's devices flip it), each from its own seeded stream.
pub fn participants(devices: usize, sampling_rate: f64, seed: u64, round: u64) -> Result<Vec<usize>, String> {
    let mut heads = Vec::new();
    for c in 0..devices {
        if coin(sampling_rate, &mut stream(seed, Purpose::Coin, round, c as u64)).map_err(|e| e.to_string())? {
            heads.push(c);
        }
    }
    Ok(heads)
}

/// Trains each of `clients` from `params` and its stored local embedding (train::train), in
/// parallel chunks: `add` folds one device's delta into its chunk's part (made by `new_part`),
/// and `merge` receives the parts in the clients' order.
#[allow(clippy::too_many_arguments)]
fn train_clients<P: Send>(
    params: &Params,
    local_u: &mut [Vec<f32>],
    task: &Task,
    cfg: &TrainConfig,
    clients: &[usize],
    new_part: impl Fn() -> P + Sync,
    add: impl Fn(&mut P, usize, Vec<f32>) -> Result<(), String> + Sync,
    mut merge: impl FnMut(P) -> Result<(), String>,
) -> Result<(), String> {
    let chunks: Vec<&[usize]> = clients.chunks(CHUNK).collect();
    for group in chunks.chunks(GROUP) {
        let local = &*local_u;
        let parts = group
            .par_iter()
            .map(|chunk| {
                let mut part = new_part();
                let mut us = Vec::with_capacity(chunk.len());
                for &c in *chunk {
                    let t = train::train(params, &local[c], &task.devices[c % task.devices.len()].examples, cfg)
                        .map_err(|e| e.to_string())?;
                    add(&mut part, c, t.delta)?;
                    us.push((c, t.local_u));
                }
                Ok((part, us))
            })
            .collect::<Result<Vec<_>, String>>()?;
        for (part, us) in parts {
            merge(part)?;
            us.into_iter().for_each(|(c, u)| local_u[c] = u);
        }
    }
    Ok(())
}

/// Federated rounds. Each round every device flips its coin ([`participants`]); those with heads
/// train from the current model. Without DP the server averages their deltas. With DP each
/// uploads a secure-aggregation report bound to the round's realised n, and the simulated leader
/// and helper release the noised mean ([`crate::secagg`]). The mean moves the model through the
/// server step the aggregator runs (hearth-core's learning::server). `start` is the history so
/// far (the initial model's point). `eval_every` 0 evaluates never.
pub fn federated(
    init: &Params,
    start: &[Point],
    spec: &FeatureSpec,
    task: &Task,
    cfg: &FedConfig,
    name: &str,
) -> Result<Federated, String> {
    let mut params = init.clone();
    let devices = if cfg.devices == 0 { task.devices.len() } else { cfg.devices };
    let mechanism = cfg.dp.map(|dp| Mechanism::new(dp, cfg.seed)).transpose()?;
    let mut local_u = vec![vec![0.0f32; params.arch.dim]; devices];
    let mut history = start.to_vec();
    let mut server_state = None;
    let mut participation =
        Participation { sampling_rate: cfg.sampling_rate, joined: vec![0; devices], ..Participation::default() };
    // The version of the model devices train against: the initial one, then one per release.
    let mut model_version = 1;
    let d = params.values.len();
    let mut timing = Timing::default();
    let reports_ns = AtomicU64::new(0);
    let pb = bar(cfg.rounds, name);
    for round in 1..=cfg.rounds {
        let started = Instant::now();
        let clients = participants(devices, cfg.sampling_rate, cfg.seed, round as u64)?;
        participation.per_round.push(clients.len());
        if clients.len() < MIN_REPORTS {
            participation.skipped += 1;
        } else {
            clients.iter().for_each(|&c| participation.joined[c] += 1);
            let (p, u) = (&params, &mut local_u[..]);
            let release = match &mechanism {
                None => {
                    let mut sum = RoundSum::new(d);
                    let add = |part: &mut RoundSum, _, delta: Vec<f32>| {
                        part.add(delta);
                        Ok(())
                    };
                    let merge = |part: RoundSum| {
                        sum.merge(&part);
                        Ok(())
                    };
                    train_clients(p, u, task, &cfg.train, &clients, || RoundSum::new(d), add, merge)?;
                    Release::Mean(sum.mean())
                }
                Some(m) => {
                    let binding = m.binding(round as u64, model_version, d, clients.len());
                    let mut servers = Servers::new(m, binding)?;
                    let mut servers_time = Duration::ZERO;
                    let add = |reports: &mut Vec<Vec<u8>>, c, delta| {
                        let t = Instant::now();
                        reports.push(m.upload(delta, &binding, cfg.seed, c)?);
                        reports_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        Ok(())
                    };
                    let merge = |reports: Vec<Vec<u8>>| {
                        let t = Instant::now();
                        reports.iter().try_for_each(|r| servers.receive(r))?;
                        servers_time += t.elapsed();
                        Ok(())
                    };
                    train_clients(p, u, task, &cfg.train, &clients, Vec::new, add, merge)?;
                    let t = Instant::now();
                    let release = servers.release(cfg.seed, &params.layout)?;
                    timing.servers_s += (servers_time + t.elapsed()).as_secs_f64();
                    release
                }
            };
            match release {
                Release::Mean(mean) => {
                    server_state = cfg.server.step(&mut params.values, &mean, server_state);
                    model_version += 1;
                }
                Release::Abandoned(why) => {
                    pb.println(format!("{name}: round {round} abandoned: {why}"));
                    participation.abandoned += 1;
                }
            }
        }
        timing.round_s.push(started.elapsed().as_secs_f64());
        if cfg.eval_every > 0 && (round % cfg.eval_every == 0 || round == cfg.rounds) {
            record(&mut history, round, &params, spec, task, &cfg.train)?;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    timing.reports_s = reports_ns.into_inner() as f64 * 1e-9;
    Ok(Federated { params, history, participation, timing })
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
