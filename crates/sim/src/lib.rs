//! hearth-sim: does Hearth learn, and what does privacy cost? Federated simulation on real
//! interaction data with the same hearth-core code the browser runs (see the modules).

pub mod data;
pub mod eval;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod rng;
pub mod runs;
pub mod secagg;
pub mod task;

use hearth_core::learning::server::Optimizer;
use hearth_core::learning::train::TrainConfig;
use hearth_core::model::features::FeatureSpec;
use hearth_core::model::params::{Arch, DEFAULT_ARCH, Params};
use hearth_core::privacy::accountant::{published_epsilon, seen_epsilon};
use hearth_core::privacy::ledger::DevicePolicy;
use report::{DpRecord, Report, Run};
use runs::{FedConfig, Participation};
use secagg::{Dp, server_noise_for};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Everything one invocation runs with; all of it goes into the report.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub data: PathBuf,
    pub seed: u64,
    pub arch: Arch,
    pub user_slots: usize,
    pub ad_slots: usize,
    pub test_fraction: f64,
    pub rounds: usize,
    /// K: devices a round expects; 0 means every device.
    pub clients_per_round: usize,
    /// q, each device's chance of joining a round by its own coin; `None`: K/N, so a round
    /// expects `clients_per_round` devices.
    pub sampling_rate: Option<f64>,
    /// The aggregator's server optimizer.
    pub server: Optimizer,
    pub centralized_epochs: usize,
    pub eval_every: usize,
    pub clip_norm: f32,
    /// ε of the published models of each DP run.
    pub epsilons: Vec<f64>,
    /// z of each device's own discrete Gaussian in the DP runs, in units of C̃: what protects
    /// it if both servers collude.
    pub local_noise: f32,
    pub train: TrainConfig,
}

impl Options {
    /// The product's default model shape and training settings.
    pub fn new(data: PathBuf) -> Options {
        Options {
            data,
            seed: 1,
            arch: DEFAULT_ARCH,
            user_slots: 64,
            ad_slots: 16,
            test_fraction: 0.2,
            rounds: 20,
            clients_per_round: 0,
            sampling_rate: None,
            // Tuned on movielens-small (docs/quality.md): FedAdam's per-coordinate steps keep
            // rarely shared rows (a movie few users saw) from being diluted by the mean.
            server: Optimizer::FedAdam { lr: 0.05, beta1: 0.9, beta2: 0.99, tau: 1e-3 },
            // Centralized training overfits after one epoch here (AUC 0.765 -> 0.751 at 3).
            centralized_epochs: 1,
            eval_every: 5,
            clip_norm: 0.5,
            epsilons: vec![1.0, 3.0, 8.0],
            local_noise: 0.0,
            train: TrainConfig::default(),
        }
    }

    pub fn spec(&self) -> FeatureSpec {
        FeatureSpec { user_slots: self.user_slots, ad_slots: self.ad_slots, ..FeatureSpec::product(self.arch.buckets) }
    }
}

/// Runs popularity, centralized, federated and federated + DP (through secure aggregation) at
/// each ε; `external` runs (from scripts on the same split) are appended as they are.
pub fn run(opts: &Options, external: Vec<Run>) -> Result<Report, String> {
    let spec = opts.spec();
    let data = data::Dataset::load(&opts.data).map_err(|e| e.to_string())?;
    let task = task::Task::build(&data, &spec, opts.test_fraction, opts.seed)?;
    let n = task.devices.len();
    eprintln!(
        "{} devices, {} ads, {} training and {} held-out ratings",
        n,
        task.catalog.len(),
        task.train_ratings,
        task.test_ratings
    );
    let init = Params::init(opts.arch, opts.seed);
    // Every trained run starts from the same model; its metrics are round 0 of each history.
    let mut start = Vec::new();
    runs::record(&mut start, 0, &init, &spec, &task, &opts.train)?;
    let mut runs = Vec::new();

    let t = Instant::now();
    runs.push(Run::new("popularity", eval::popularity(&task)?, 0, t.elapsed().as_secs_f64(), Vec::new()));

    let t = Instant::now();
    let (_, history) = runs::centralized(&init, &start, &task, opts)?;
    runs.push(final_run("centralized", history, opts.centralized_epochs, t));

    let k = if opts.clients_per_round == 0 { n } else { opts.clients_per_round.min(n) };
    let q = opts.sampling_rate.unwrap_or(k as f64 / n as f64);
    let fed = FedConfig {
        devices: 0,
        rounds: opts.rounds,
        sampling_rate: q,
        server: opts.server,
        train: opts.train.clone(),
        dp: None,
        eval_every: opts.eval_every,
        seed: opts.seed,
    };
    let t = Instant::now();
    let out = runs::federated(&init, &start, &spec, &task, &fed, "federated")?;
    let mut r = final_run("federated", out.history, opts.rounds, t);
    r.participation = Some(out.participation);
    r.timing = Some(out.timing);
    runs.push(r);

    // δ = 1/N^1.1 at the true population. Each server's noise is the least that keeps the
    // published models within ε over all the run's rounds (skipped ones release nothing, so
    // counting them errs on the safe side).
    let delta = 1.0 / (n as f64).powf(1.1);
    for &epsilon in &opts.epsilons {
        let z = server_noise_for(epsilon, q, opts.rounds as u64, delta)?;
        let dp = Dp { clip_norm: opts.clip_norm, server_noise: z, local_noise: opts.local_noise };
        let name = format!("dp-eps-{epsilon}");
        let t = Instant::now();
        let out = runs::federated(&init, &start, &spec, &task, &FedConfig { dp: Some(dp), ..fed.clone() }, &name)?;
        let mut r = final_run(&name, out.history, opts.rounds, t);
        r.epsilon = Some(epsilon);
        r.delta = Some(delta);
        dp_figures(&mut r, dp, opts.rounds as u64, delta, out.participation)?;
        r.timing = Some(out.timing);
        runs.push(r);
    }
    runs.extend(external);
    Ok(Report {
        dataset: opts.data.display().to_string(),
        seed: opts.seed,
        config: serde_json::to_value(opts).map_err(|e| e.to_string())?,
        runs,
    })
}

/// A DP run's three ε: the published models' (the run's `epsilon`, the threat it names), one
/// curious server's and both servers' together, per device over the rounds an average device
/// joined; the curious server's also for the device that joined the most.
fn dp_figures(r: &mut Run, dp: Dp, rounds: u64, delta: f64, participation: Participation) -> Result<(), String> {
    let joined = &participation.joined;
    let mean = joined.iter().map(|&j| f64::from(j)).sum::<f64>() / joined.len().max(1) as f64;
    let max = joined.iter().copied().max().unwrap_or(0);
    let seen = |z: f32, joined: u32| seen_epsilon(&vec![f64::from(z); joined as usize], delta).map_err(|e| e.to_string());
    let typical = mean.round() as u32;
    r.threat = Some("published models");
    r.curious_server_epsilon = Some(seen(dp.server_noise, typical)?);
    r.collusion_epsilon = Some(seen(dp.local_noise, typical)?);
    r.noise = Some(DpRecord {
        mechanism: dp,
        published_epsilon: published_epsilon(participation.sampling_rate, f64::from(dp.server_noise), rounds, delta)
            .map_err(|e| e.to_string())?,
        rounds_joined_mean: mean,
        rounds_joined_max: max,
        curious_server_epsilon_max: seen(dp.server_noise, max)?,
        refused_by_device_floor: DevicePolicy::RELEASE
            .check(dp.clip_norm, dp.local_noise, Some([dp.server_noise; 2]))
            .err()
            .map(|e| e.to_string()),
    });
    r.participation = Some(participation);
    Ok(())
}

fn final_run(name: &str, history: Vec<runs::Point>, rounds: usize, started: Instant) -> Run {
    let last = history.last().map(|p| p.metrics).unwrap_or_default();
    Run::new(name, last, rounds, started.elapsed().as_secs_f64(), history)
}

/// The split and the HR/NDCG candidates as CSV, so external baselines score exactly what the
/// runs here score: train.csv (user,movie,label), test.csv (user,movie,label) and
/// candidates.csv (user, then the held-out positive and its sampled negatives).
pub fn write_split(opts: &Options, out: &std::path::Path) -> Result<(), String> {
    use std::fmt::Write;
    let data = data::Dataset::load(&opts.data).map_err(|e| e.to_string())?;
    let task = task::Task::build(&data, &opts.spec(), opts.test_fraction, opts.seed)?;
    let movie = |i: usize| task.catalog.ads[i].id.trim_start_matches('m').to_string();
    let (mut train, mut test, mut candidates) =
        ("user,movie,label\n".to_string(), "user,movie,label\n".to_string(), String::new());
    for d in &task.devices {
        for &(i, y) in &d.train {
            let _ = writeln!(train, "{},{},{y}", d.user, movie(i));
        }
        for &(i, y) in &d.test {
            let _ = writeln!(test, "{},{},{y}", d.user, movie(i));
        }
        for c in &d.candidates {
            let _ = writeln!(candidates, "{},{}", d.user, c.iter().map(|&i| movie(i)).collect::<Vec<_>>().join(" "));
        }
    }
    for (name, text) in [("train.csv", train), ("test.csv", test), ("candidates.csv", candidates)] {
        std::fs::write(out.join(name), text).map_err(|e| e.to_string())?;
    }
    println!("wrote {}/train.csv, test.csv, candidates.csv", out.display());
    Ok(())
}

/// One federated round with `devices` simulated devices all taking part (users replayed as
/// needed), no evaluation: (seconds, peak resident bytes of this process).
pub fn scale(opts: &Options, devices: usize) -> Result<(f64, u64), String> {
    let spec = opts.spec();
    let data = data::Dataset::load(&opts.data).map_err(|e| e.to_string())?;
    let task = task::Task::build(&data, &spec, opts.test_fraction, opts.seed)?;
    let init = Params::init(opts.arch, opts.seed);
    let cfg = FedConfig {
        devices,
        rounds: 1,
        sampling_rate: 1.0,
        server: opts.server,
        train: opts.train.clone(),
        dp: None,
        eval_every: 0,
        seed: opts.seed,
    };
    let t = Instant::now();
    runs::federated(&init, &[], &spec, &task, &cfg, "scale")?;
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
        })
        .map_or(0, |kb| kb * 1024);
    Ok((t.elapsed().as_secs_f64(), peak))
}
