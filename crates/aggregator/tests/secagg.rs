//! The leader and helper as two processes over loopback HTTP: a round through both, the
//! helper's refusals, and the n−1 attack that plaintext aggregation fell to.

mod common;

use common::*;
use hearth_aggregator::helper::{AggregateRequest, SealedSeed};
use hearth_aggregator::noise::TEST_SEED_VARIABLE;
use hearth_core::device::engine::Engine;
use hearth_core::device::event::{AdRef, Event, EventKind};
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::learning::round::{HelperConfig, RoundTask};
use hearth_core::privacy::accountant::seen_epsilon;
use hearth_core::privacy::noise::Sampler;
use hearth_core::privacy::seal::{HelperKey, KeyPair};
use hearth_core::privacy::shares::{Binding, Report, SecAggTask, build_report, read_values};

const K: u64 = 10;
const LR: f64 = 0.01;
const SEED: u64 = 20_261_202;

fn binding(task: &RoundTask, params: usize) -> Binding {
    task.binding(params).expect("a leader's task is a secure round")
}

/// A device that reads and clicks, trained on its own events against `pack`.
fn trained_delta(pack: hearth_core::model::pack::ModelPack, task: &RoundTask) -> Vec<f32> {
    let mut e = Engine::new(pack, Profile::new(ProfileConfig::default()).unwrap()).unwrap();
    let ad =
        AdRef { ad_id: "a1".into(), campaign: Some("c1".into()), advertiser: Some("v1".into()), category: Some("travel".into()) };
    let mut ts = 1_700_000_000_000i64;
    for i in 0..30 {
        ts += 60_000;
        e.record(Event { kind: EventKind::PageView, ts, topics: vec!["travel".into()], keywords: vec![], ad: None }).unwrap();
        e.record(Event { kind: EventKind::Impression, ts: ts + 1, topics: vec![], keywords: vec![], ad: Some(ad.clone()) })
            .unwrap();
        if i % 2 == 0 {
            e.record(Event { kind: EventKind::Click, ts: ts + 2, topics: vec![], keywords: vec![], ad: Some(ad.clone()) })
                .unwrap();
        }
    }
    let examples = e.examples().unwrap();
    e.train(&examples, &task.train).unwrap().delta
}

fn pair(name: &str, pack: impl Fn(&std::path::Path) -> std::path::PathBuf, env: &[(&str, &str)]) -> (Server, Server) {
    pair_on(Backend::Sqlite, name, pack, env)
}

/// A helper and its leader, each with its own database on `backend`.
fn pair_on(
    backend: Backend,
    name: &str,
    pack: impl Fn(&std::path::Path) -> std::path::PathBuf,
    env: &[(&str, &str)],
) -> (Server, Server) {
    let root = scratch_on(name, backend);
    let (hdir, ldir) = (root.join("helper"), root.join("leader"));
    std::fs::create_dir_all(&hdir).unwrap();
    std::fs::create_dir_all(&ldir).unwrap();
    if backend == Backend::Postgres {
        std::fs::write(hdir.join("database.url"), postgres_database(&format!("{name}-helper"))).unwrap();
        std::fs::write(ldir.join("database.url"), postgres_database(&format!("{name}-leader"))).unwrap();
    }
    let helper = Server::start_with_env(&hdir, &helper_config(K, 4.0), env);
    let leader = Server::start_with_env(&ldir, &leader_config(&pack(&ldir), K, &helper, 5.0), env);
    (helper, leader)
}

fn a_round_through_both_servers_moves_the_model_by_the_sum_plus_both_noises(backend: Backend) {
    let seed = SEED.to_string();
    let (helper, leader) = pair_on(backend, "secagg-round", |_| default_pack(), &[(TEST_SEED_VARIABLE, &seed)]);
    let task = leader.task();
    let secagg = task.secagg.expect("the leader's task names the secure round");
    assert_eq!((secagg.clients, secagg.leader_noise, secagg.helper_noise), (K, 5.0, 4.0));
    let (before, _) = fetch_pack(&leader);
    let d = before.params.values.len();
    let b = binding(&task, d);
    let plan = b.plan().unwrap();
    // The device takes the key from the helper itself.
    let key = HelperKey::from_config(&fetch_helper_config(&helper).hpke).unwrap();

    let mut grids = Vec::new();
    let real = build_report(trained_delta(before.clone(), &task), &b, &key, &mut Sampler::os()).unwrap();
    assert!(real.pre_clip_norm > 0.0, "the trained device has something to say");
    assert_eq!(leader.post_report(&real.report.encode()).0, 202);
    grids.push(real.grid);
    for seed in 1..K {
        let (r, grid) = random_report(&b, &key, seed);
        let (status, reply) = leader.post_report(&r.encode());
        assert_eq!(status, 202, "{reply}");
        grids.push(grid);
    }
    let next = leader.wait_round_after(task.round_id);
    assert_eq!(next.model_version, task.model_version + 1);
    let (after, _) = fetch_pack(&leader);

    // What the release must be: Σ grid + leader noise + helper noise, mod 2^24, centred, × γ / n.
    let mean = expected_secure_mean(&plan, &grids, task.round_id, SEED, K);
    assert_fedavg(&before.params, &after.params, LR, &mean);
    // And the noise is really there: the model moved by more than the updates alone would move it.
    let signal: f64 = (0..d).map(|j| (grids.iter().map(|g| g[j]).sum::<i64>() as f64 * plan.step / K as f64).powi(2)).sum();
    let moved: f64 = mean.iter().map(|m| m * m).sum();
    assert!(moved > 4.0 * signal, "moved² {moved}, signal² {signal}");
    drop(helper);
}

#[test]
fn the_helper_refuses_bad_batches_and_releases_nothing_for_them() {
    let root = scratch("secagg-refusals");
    let helper = Server::start(&root, &helper_config(K, 4.0));
    let config: HelperConfig = fetch_helper_config(&helper);
    let key = HelperKey::from_config(&config.hpke).unwrap();
    let secagg = SecAggTask { clients: K, leader_noise: 5.0, helper_noise: 4.0 };
    let b = Binding { round_id: 5, model_version: 1, params: 300, clip_norm: 1.0, local_noise: 0.0, secagg };
    let reports: Vec<Report> = (0..K).map(|s| random_report(&b, &key, s).0).collect();
    let seeds: Vec<SealedSeed> = reports.iter().map(SealedSeed::of).collect();
    let ask = |binding: Binding, reports: Vec<SealedSeed>, token: &str| {
        let body = serde_json::to_vec(&AggregateRequest { binding, reports }).unwrap();
        let auth = format!("Bearer {token}");
        let (status, body) =
            post_with(&helper.url("/v1/aggregate"), &[("Authorization", &auth), ("Content-Type", "application/json")], &body);
        let error = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["error"].as_str().map(String::from));
        (status, error, body)
    };
    let refused = |what: &str, binding: Binding, reports: Vec<SealedSeed>, token: &str, status: u16, code: &str| {
        let (got, error, _) = ask(binding, reports, token);
        assert_eq!((got, error.as_deref()), (status, Some(code)), "{what}");
    };

    refused("fewer than K", b, seeds[..9].to_vec(), TOKEN, 422, "too_few_reports");
    let mut twice = seeds.clone();
    twice[9] = twice[0].clone();
    refused("an id twice", b, twice, TOKEN, 409, "repeated_report");
    // A report the leader made up: sealed to a key of its own, or bytes that were never sealed.
    let leader_own = HelperKey::from_config(&KeyPair::from_secret(config.hpke.key_id, &[1; 32]).config()).unwrap();
    let mut forged = seeds.clone();
    forged[3] = SealedSeed::of(&random_report(&b, &leader_own, 77).0);
    refused("a seed sealed to the leader's own key", b, forged, TOKEN, 422, "unopenable_report");
    let mut garbage = seeds.clone();
    garbage[4].sealed = "00".repeat(48);
    refused("a seed never sealed", b, garbage, TOKEN, 422, "unopenable_report");
    refused("another round's batch", Binding { round_id: 6, ..b }, seeds.clone(), TOKEN, 422, "unopenable_report");
    refused(
        "a plan with more clients (a coarser grid, less helper noise per unit of sensitivity)",
        Binding { secagg: SecAggTask { clients: 11, ..secagg }, ..b },
        seeds.iter().cloned().chain([SealedSeed::of(&random_report(&b, &key, 99).0)]).collect(),
        TOKEN,
        422,
        "unopenable_report",
    );
    refused(
        "another helper noise",
        Binding { secagg: SecAggTask { helper_noise: 1.0, ..secagg }, ..b },
        seeds.clone(),
        TOKEN,
        422,
        "binding_mismatch",
    );
    refused("no token", b, seeds.clone(), "wrong-token-0123456789", 401, "unauthorized");

    // Nothing above was recorded: the real batch still releases, once, the same bytes each time.
    let (status, _, share) = ask(b, seeds.clone(), TOKEN);
    assert_eq!(status, 200);
    assert_eq!(read_values(&share).len(), 300);
    assert_eq!(ask(b, seeds.clone(), TOKEN).2, share, "a retry gets the stored release, not a fresh noise draw");
    let reordered: Vec<SealedSeed> = seeds.iter().rev().cloned().collect();
    assert_eq!(ask(b, reordered, TOKEN).2, share, "a restarted leader may relay the same reports in another order");
    refused(
        "another batch for a released round",
        b,
        seeds[..9].iter().cloned().chain([SealedSeed::of(&random_report(&b, &key, 50).0)]).collect(),
        TOKEN,
        409,
        "round_already_aggregated",
    );
    refused("released reports in a later round", Binding { round_id: 7, ..b }, seeds, TOKEN, 409, "repeated_report");
}

#[test]
fn the_n_minus_one_attack_learns_the_victim_only_through_both_noises() {
    let (helper, leader) = pair("secagg-n-1", small_pack, &[]);
    let task = leader.task();
    let (before, _) = fetch_pack(&leader);
    let d = before.params.values.len();
    let b = binding(&task, d);
    let plan = b.plan().unwrap();
    let key = HelperKey::from_config(&fetch_helper_config(&helper).hpke).unwrap();
    // The attacker fills K − 1 places with reports it knows, then an honest device closes the round.
    let mut known = vec![0i64; d];
    for seed in 0..K - 1 {
        let (r, grid) = random_report(&b, &key, 1000 + seed);
        assert_eq!(leader.post_report(&r.encode()).0, 202);
        known.iter_mut().zip(&grid).for_each(|(k, g)| *k += g);
    }
    let (victim, victim_grid) = random_report(&b, &key, 1);
    assert_eq!(leader.post_report(&victim.encode()).0, 202);
    leader.wait_round_after(task.round_id);
    let (after, _) = fetch_pack(&leader);
    // The attacker's best estimate of the victim's update, in grid units.
    let errors: Vec<f64> = (0..d)
        .map(|j| {
            let released = (f64::from(after.params.values[j]) - f64::from(before.params.values[j])) / LR * K as f64 / plan.step;
            released - known[j] as f64 - victim_grid[j] as f64
        })
        .collect();
    let rms = (errors.iter().map(|e| e * e).sum::<f64>() / d as f64).sqrt();
    let both = (plan.sigma_leader.powi(2) + plan.sigma_helper.powi(2)).sqrt();
    assert!(rms >= plan.sigma_leader.min(plan.sigma_helper), "error {rms} grid units is below a server's noise");
    assert!((rms / both - 1.0).abs() < 0.1, "error {rms} is not the two noises' {both}");
    assert!(rms > 3.0 * plan.bound, "the estimate ({rms}) is noise several times the victim's whole norm ({})", plan.bound);
    // The ε printed for a curious server or a Sybil is the accountant's for that noise.
    let privacy: serde_json::Value = serde_json::from_slice(&get(&leader.url("/v1/privacy")).2).unwrap();
    let threat = &privacy["threats"][1];
    assert!(threat["observer"].as_str().unwrap().contains("Sybil"), "{threat}");
    let expected = seen_epsilon(&[4.0], 1e-6).unwrap();
    assert_eq!(threat["epsilon"].as_f64(), Some(expected));
    assert_eq!(threat["noise_multiplier"].as_f64(), Some(4.0));
}

#[test]
fn the_leader_refuses_reports_sealed_to_another_key_or_plaintext_updates() {
    let (helper, leader) = pair("secagg-leader-input", small_pack, &[]);
    let task = leader.task();
    let d = fetch_pack(&leader).0.params.values.len();
    let b = binding(&task, d);
    let config = fetch_helper_config(&helper);
    let other = KeyPair::from_secret(config.hpke.key_id.wrapping_add(1), &[2; 32]);
    let (r, _) = random_report(&b, &HelperKey::from_config(&other.config()).unwrap(), 3);
    let (status, reply) = leader.post_report(&r.encode());
    assert_eq!((status, reply["error"].as_str()), (422, Some("wrong_helper_key")));
    let (status, reply) = leader.post(&[0u8; 64]);
    assert_eq!((status, reply["error"].as_str()), (415, Some("unsupported_media_type")));
    let (r, _) = random_report(&b, &HelperKey::from_config(&config.hpke).unwrap(), 3);
    let mut cut = r.encode();
    cut.pop();
    let (status, reply) = leader.post_report(&cut);
    assert_eq!((status, reply["error"].as_str()), (400, Some("malformed_update")));
    assert_eq!(leader.post_report(&r.encode()).0, 202);
    let (status, reply) = leader.post_report(&r.encode());
    assert_eq!((status, reply["error"].as_str()), (409, Some("duplicate_nonce")), "a resent report is counted once");
}

#[test]
fn a_poisoned_round_is_abandoned_and_releases_nothing() {
    let (helper, leader) = pair("secagg-poison", small_pack, &[]);
    let task = leader.task();
    let (before, _) = fetch_pack(&leader);
    let d = before.params.values.len();
    let b = binding(&task, d);
    let key = HelperKey::from_config(&fetch_helper_config(&helper).hpke).unwrap();
    for seed in 0..K {
        let (mut r, _) = random_report(&b, &key, seed);
        if seed == 0 {
            // Every coordinate pushed by 2^22 grid units: a share the modular encoding lets any
            // client send, far past what K honest reports can sum to.
            r.share.iter_mut().for_each(|v| *v = v.wrapping_add(1 << 22) & hearth_core::privacy::shares::MASK);
        }
        assert_eq!(leader.post_report(&r.encode()).0, 202, "the leader cannot see a masked share's values");
    }
    let next = leader.wait_round_after(task.round_id);
    assert_eq!(next.model_version, task.model_version, "an abandoned round publishes no model");
    assert_eq!(fetch_pack(&leader).0.params.values, before.params.values);
    assert_eq!(leader.metric("hearth_rounds_abandoned_total"), 1.0);
    let log = std::fs::read_to_string(leader.dir.join("stderr.log")).unwrap();
    assert!(log.contains("implausible aggregate"), "{log}");
}

on_both_backends!(a_round_through_both_servers_moves_the_model_by_the_sum_plus_both_noises);
