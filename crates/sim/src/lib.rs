//! hearth-sim: does Hearth learn, and what does privacy cost? Federated simulation on real
//! interaction data with the same hearth-core code the browser runs (see the modules).

pub mod data;
pub mod eval;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod rng;
pub mod runs;
pub mod task;

use hearth_core::learning::server::Optimizer;
use hearth_core::learning::train::TrainConfig;
use hearth_core::model::features::FeatureSpec;
use hearth_core::model::params::{Arch, DEFAULT_ARCH, Params};
use hearth_core::privacy::accountant::{Sampling, noise_for};
use report::{Report, Run};
use runs::{Dp, FedConfig};
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
    /// Devices per round; 0 means every device.
    pub clients_per_round: usize,
    /// The aggregator's server optimizer.
    pub server: Optimizer,
    pub centralized_epochs: usize,
    pub eval_every: usize,
    pub clip_norm: f32,
    pub epsilons: Vec<f64>,
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
            // Tuned on movielens-small (docs/quality.md): FedAdam's per-coordinate steps keep
            // rarely shared rows (a movie few users saw) from being diluted by the mean.
            server: Optimizer::FedAdam { lr: 0.05, beta1: 0.9, beta2: 0.99, tau: 1e-3 },
            // Centralized training overfits after one epoch here (AUC 0.765 -> 0.751 at 3).
            centralized_epochs: 1,
            eval_every: 5,
            clip_norm: 0.5,
            epsilons: vec![1.0, 3.0, 8.0],
            train: TrainConfig::default(),
        }
    }

    pub fn spec(&self) -> FeatureSpec {
        FeatureSpec { user_slots: self.user_slots, ad_slots: self.ad_slots, ..FeatureSpec::product(self.arch.buckets) }
    }
}

/// Runs popularity, centralized, federated and federated + DP at each ε; `external` runs (from
/// scripts on the same split) are appended as they are.
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
    let fed = FedConfig {
        devices: 0,
        rounds: opts.rounds,
        clients_per_round: k,
        server: opts.server,
        train: opts.train.clone(),
        dp: None,
        eval_every: opts.eval_every,
        seed: opts.seed,
    };
    let t = Instant::now();
    let (_, history) = runs::federated(&init, &start, &spec, &task, &fed, "federated")?;
    runs.push(final_run("federated", history, opts.rounds, t));

    // δ = 1/N^1.1 at the true population; the accountant picks the release noise for ε.
    let delta = 1.0 / (n as f64).powf(1.1);
    for &epsilon in &opts.epsilons {
        let release = noise_for(epsilon, n as u64, Sampling::ClientsPerRound(k as u64), opts.rounds as u64, delta)
            .map_err(|e| e.to_string())?;
        let dp = Dp {
            epsilon,
            delta,
            clip_norm: opts.clip_norm,
            device_noise: (release / (k as f64).sqrt()) as f32,
            release_noise: release,
        };
        let name = format!("dp-eps-{epsilon}");
        let t = Instant::now();
        let (_, history) = runs::federated(&init, &start, &spec, &task, &FedConfig { dp: Some(dp), ..fed.clone() }, &name)?;
        let mut r = final_run(&name, history, opts.rounds, t);
        r.epsilon = Some(epsilon);
        r.delta = Some(delta);
        r.noise = Some(serde_json::to_value(dp).map_err(|e| e.to_string())?);
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
        clients_per_round: devices,
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
