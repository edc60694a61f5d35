//! A DP run goes through the product's secure aggregation: its uploads are HRTS reports, the
//! mean it releases is the devices' rounded updates plus exactly the two servers' seeded noise,
//! and devices join by their own coins.

mod common;

use common::{options, scratch, synthetic};
use hearth_core::learning::train;
use hearth_core::model::params::Params;
use hearth_core::privacy::discrete;
use hearth_core::privacy::shares::{REPORT_MAGIC, Report, build_report};
use hearth_sim::Options;
use hearth_sim::data::Dataset;
use hearth_sim::rng::{Purpose, stream};
use hearth_sim::runs::{FedConfig, MIN_REPORTS, federated, participants};
use hearth_sim::secagg::{Dp, Mechanism, Release, Servers};
use hearth_sim::task::Task;

const DP: Dp = Dp { clip_norm: 0.5, server_noise: 4.0, local_noise: 0.0 };

fn setup(name: &str) -> (Options, Task, Params) {
    let opts = options(synthetic(&scratch(name), None));
    let data = Dataset::load(&opts.data).unwrap();
    let task = Task::build(&data, &opts.spec(), opts.test_fraction, opts.seed).unwrap();
    let init = Params::init(opts.arch, opts.seed);
    (opts, task, init)
}

fn config(opts: &Options, rounds: usize, sampling_rate: f64) -> FedConfig {
    FedConfig {
        devices: 0,
        rounds,
        sampling_rate,
        server: opts.server,
        train: opts.train.clone(),
        dp: Some(DP),
        eval_every: 0,
        seed: opts.seed,
    }
}

#[test]
fn a_dp_round_releases_the_rounded_updates_plus_both_servers_noise() {
    let (opts, task, init) = setup("secagg-round");
    let (seed, d) = (opts.seed, init.values.len());
    let cfg = config(&opts, 1, 1.0);
    let run = federated(&init, &[], &opts.spec(), &task, &cfg, "dp").unwrap();

    // The same round step by step: every device trains from the initial model, uploads, and
    // the leader receives; what each upload must be is rebuilt from the device's stream.
    let clients = participants(task.devices.len(), 1.0, seed, 1).unwrap();
    assert_eq!(clients.len(), 40);
    let mechanism = Mechanism::new(DP, seed).unwrap();
    let binding = mechanism.binding(1, 1, d, clients.len());
    let mut servers = Servers::new(&mechanism, binding).unwrap();
    let plan = *servers.plan();
    let mut rounded = vec![0i64; d];
    for &c in &clients {
        let delta = train::train(&init, &vec![0.0; init.arch.dim], &task.devices[c].examples, &opts.train).unwrap().delta;
        let upload = mechanism.upload(delta.clone(), &binding, seed, c).unwrap();
        assert!(upload.starts_with(&REPORT_MAGIC) && upload.len() == Report::encoded_len(d), "device {c}: not a report");
        let report = Report::decode(&upload).unwrap();
        let built =
            build_report(delta, &binding, mechanism.helper_key(), &mut stream(seed, Purpose::Report, 1, c as u64)).unwrap();
        assert_eq!(report, built.report, "device {c}: the upload is the product's report from the device's stream");
        // The leader's share is masked: it is not the rounded update, which no single report reveals.
        let grid_residues = built.grid.iter().map(|&g| g as u32 & 0xFF_FFFF);
        assert!(report.share.iter().zip(grid_residues).filter(|(s, g)| *s == g).count() < d / 100, "device {c}: unmasked");
        rounded.iter_mut().zip(&built.grid).for_each(|(t, g)| *t += g);
        servers.receive(&upload).unwrap();
    }
    let Release::Mean(mean) = servers.release(seed, &init.layout).unwrap() else { panic!("an honest round was abandoned") };

    // Each server's noise, drawn independently from its stream: one discrete Gaussian per
    // coordinate at the plan's σ.
    let noise = |purpose, sigma| -> Vec<i64> {
        let mut rng = stream(seed, purpose, 1, 0);
        (0..d).map(|_| discrete::sample(sigma, &mut rng).unwrap()).collect()
    };
    let (leader, helper) = (noise(Purpose::Leader, plan.sigma_leader), noise(Purpose::Helper, plan.sigma_helper));
    assert!(plan.sigma_leader > 1.0 && plan.sigma_leader == plan.sigma_helper, "{plan:?}");
    let n = clients.len() as f64;
    for j in 0..d {
        let expected = (rounded[j] + leader[j] + helper[j]) as f64 * plan.step / n;
        assert!((mean[j] - expected).abs() <= 1e-9 * plan.step, "coordinate {j}: {} vs {expected}", mean[j]);
    }
    let variance = leader.iter().map(|&v| (v * v) as f64).sum::<f64>() / d as f64;
    assert!((variance.sqrt() / plan.sigma_leader - 1.0).abs() < 0.05, "the leader's noise has σ {}", variance.sqrt());

    // The run moved the model by exactly this mean, through the server step.
    let mut expected = init.values.clone();
    cfg.server.step(&mut expected, &mean, None);
    assert_eq!(run.params.values, expected);
    assert_eq!((run.participation.per_round.as_slice(), run.participation.abandoned), (&[40][..], 0));
}

#[test]
fn devices_join_by_their_own_coins() {
    // 60 rounds of 1,000 coins at q = 0.3: n is binomial(1000, 0.3), mean 300, σ 14.5.
    let (devices, q) = (1000, 0.3);
    let counts: Vec<usize> = (1..=60).map(|r| participants(devices, q, 7, r).unwrap().len()).collect();
    let (expected, sd) = (devices as f64 * q, (devices as f64 * q * (1.0 - q)).sqrt());
    assert!(counts.iter().all(|&c| (c as f64 - expected).abs() < 5.0 * sd), "{counts:?}");
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    assert!((mean - expected).abs() < 5.0 * sd / (counts.len() as f64).sqrt(), "mean {mean}");
    let mut distinct = counts.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() > 10, "n barely varies: {counts:?}");
    assert_eq!(participants(devices, q, 7, 1).unwrap(), participants(devices, q, 7, 1).unwrap(), "seeded");
    assert_ne!(participants(devices, q, 7, 1).unwrap(), participants(devices, q, 8, 1).unwrap());
    assert_ne!(participants(devices, q, 7, 1).unwrap(), participants(devices, q, 7, 2).unwrap());

    // A DP run at q = 0.5: each round's n is its coins' count, and each release is bound to it.
    let (opts, task, init) = setup("secagg-coins");
    let run = federated(&init, &[], &opts.spec(), &task, &config(&opts, 6, 0.5), "dp").unwrap();
    let p = &run.participation;
    let coins: Vec<usize> = (1..=6).map(|r| participants(40, 0.5, opts.seed, r).unwrap().len()).collect();
    assert_eq!(p.per_round, coins);
    assert!(coins.iter().any(|&c| c != coins[0]), "n did not vary: {coins:?}");
    assert_eq!(p.skipped, coins.iter().filter(|&&c| c < MIN_REPORTS).count());
    let uploads: usize = coins.iter().filter(|&&c| c >= MIN_REPORTS).sum();
    assert_eq!(p.joined.iter().map(|&j| j as usize).sum::<usize>(), uploads);
    assert_ne!(run.params.values, init.values);
}
