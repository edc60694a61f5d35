//! A device's whole part in a round: events -> training -> clipped, noised, encoded upload,
//! and the refusals that come before any training.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod common;

use common::{ad, ad_event, pack, sports_fan};
use hearth_core::HearthError;
use hearth_core::device::catalog::{Ad, Context};
use hearth_core::device::engine::Engine;
use hearth_core::device::event::{Event, EventKind};
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::learning::round::{HelperConfig, RoundTask, participate, take_part};
use hearth_core::learning::train::TrainConfig;
use hearth_core::privacy::ledger::{DevicePolicy, Ledger};
use hearth_core::privacy::noise::{Sampler, l2_norm};
use hearth_core::privacy::privatize::{grid_step, rounding_bound};
use hearth_core::privacy::seal::KeyPair;
use hearth_core::privacy::shares::{Report, SecAggTask};
use hearth_core::privacy::wire::{Encoding, Payload, Update};

const NOW: i64 = 1_750_000_000_000;

fn engine() -> Engine {
    let (profile, ads) = sports_fan(NOW);
    let mut e = Engine::new(pack(4), profile).unwrap();
    e.set_catalog(ads).unwrap();
    e
}

fn task(encoding: Encoding) -> RoundTask {
    serde_json::from_value(serde_json::json!({
        "round_id": 17, "model_version": 3, "clip_norm": 0.5, "noise_multiplier": 1.1, "min_events": 20,
        "encoding": encoding,
    }))
    .unwrap()
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_round_trains_and_uploads_only_the_noised_update() {
    for encoding in [Encoding::F32, Encoding::QuantizedI16] {
        let mut e = engine();
        let params = e.pack().params.values.len();
        let out = participate(&mut e, &task(encoding), None, &DevicePolicy::RELEASE, &mut Sampler::os()).unwrap();
        let stats = out.stats.expect("a plaintext round has noise statistics");
        assert!(out.trained.loss_after < out.trained.loss_before);
        assert!(stats.pre_clip_norm > 0.5, "the delta needed clipping: {}", stats.pre_clip_norm);
        // f32: the noised vector is the clipped one. Quantized: the stochastically rounded one,
        // whose norm conditional rounding holds to C̃ grid units.
        let bound = match encoding {
            Encoding::F32 => 0.5,
            Encoding::QuantizedI16 => {
                let step = f64::from(grid_step(0.5, 1.1).unwrap());
                rounding_bound(0.5 / step, params) * step
            }
        };
        assert!(stats.clipped_norm <= bound * (1.0 + 1e-6), "pre-noise norm {} > {bound}", stats.clipped_norm);
        assert!(e.local_u().iter().any(|v| *v != 0.0), "the device kept its reconstructed embedding");

        let u = Update::decode(&out.upload).unwrap();
        assert_eq!((u.round_id, u.model_version, u.clip_norm, u.noise_multiplier), (17, 3, 0.5, 1.1));
        let values = u.values();
        assert_eq!(values.len(), params);
        assert!(matches!(
            (&u.payload, encoding),
            (Payload::F32(_), Encoding::F32) | (Payload::QuantizedI16 { .. }, Encoding::QuantizedI16)
        ));
        // Noise on every coordinate: the upload's norm is dominated by z·C·√d, far above C.
        let expected = 1.1 * 0.5 * (params as f64).sqrt();
        let norm = l2_norm(&values);
        assert!((norm / expected - 1.0).abs() < 0.05, "upload norm {norm}, noise alone {expected}");
        // Nothing readable from the profile or catalog travels in the bytes.
        for needle in ["sports", "finance", "ad0", "adv-", "camp-"] {
            assert!(!out.upload.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} in upload");
        }
    }
}

fn secure_task() -> RoundTask {
    RoundTask {
        noise_multiplier: 0.0,
        sampling_rate: 0.5,
        secagg: Some(SecAggTask { clients: 10, leader_noise: 8.0, helper_noise: 6.0 }),
        ..task(Encoding::F32)
    }
}

fn helper_config(helper: &KeyPair) -> HelperConfig {
    HelperConfig { hpke: helper.config(), noise_multiplier: 6.0, min_clients: 10 }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_secure_round_uploads_a_masked_share_and_a_seed_only_the_helper_opens() {
    let mut e = engine();
    let helper = KeyPair::from_secret(1, &[9; 32]);
    let out =
        participate(&mut e, &secure_task(), Some(&helper_config(&helper)), &DevicePolicy::RELEASE, &mut Sampler::os()).unwrap();
    assert!(out.stats.is_none());
    let r = Report::decode(&out.upload).unwrap();
    assert_eq!((r.round_id, r.model_version, r.share.len()), (17, 3, e.pack().params.values.len()));
    assert_eq!(out.upload.len(), Report::encoded_len(r.share.len()));
    let binding = secure_task().binding(r.share.len()).unwrap();
    assert!(helper.open(r.key_id, &r.enc, &r.sealed, &Report::aad(&r.report_id, r.key_id, &binding)).is_ok());
    let leader_own = KeyPair::from_secret(1, &[8; 32]);
    assert!(leader_own.open(r.key_id, &r.enc, &r.sealed, &Report::aad(&r.report_id, r.key_id, &binding)).is_err());
    assert!(out.contribution.secure && out.contribution.curious_server_noise == 6.0 && out.contribution.collusion_noise == 0.0);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn the_device_floor_refuses_a_server_that_would_switch_privacy_off() {
    let mut e = engine();
    let before = e.local_u().to_vec();
    let helper = KeyPair::from_secret(1, &[9; 32]);
    let config = helper_config(&helper);
    let quiet_helper = HelperConfig { noise_multiplier: 0.0, ..config.clone() };
    let cases: Vec<(&str, RoundTask, Option<&HelperConfig>)> = vec![
        ("a plaintext round without noise", RoundTask { noise_multiplier: 0.0, ..task(Encoding::F32) }, None),
        ("a plaintext round below the floor", RoundTask { noise_multiplier: 0.5, ..task(Encoding::F32) }, None),
        ("a clip above the ceiling", RoundTask { clip_norm: 1e6, ..secure_task() }, Some(&config)),
        (
            "a leader without noise",
            RoundTask { secagg: Some(SecAggTask { leader_noise: 0.0, ..secure_task().secagg.unwrap() }), ..secure_task() },
            Some(&config),
        ),
        (
            "a task that misstates the helper's noise",
            RoundTask { secagg: Some(SecAggTask { helper_noise: 9.0, ..secure_task().secagg.unwrap() }), ..secure_task() },
            Some(&config),
        ),
        (
            "a helper without noise",
            RoundTask { secagg: Some(SecAggTask { helper_noise: 0.0, ..secure_task().secagg.unwrap() }), ..secure_task() },
            Some(&quiet_helper),
        ),
        ("a secure round without the helper's own configuration", secure_task(), None),
        ("a sampling rate of 0", RoundTask { sampling_rate: 0.0, ..secure_task() }, Some(&config)),
    ];
    for (what, t, h) in cases {
        let got = participate(&mut e, &t, h, &DevicePolicy::RELEASE, &mut Sampler::os());
        assert!(matches!(got, Err(HearthError::BelowDeviceFloor(_))), "{what}: {:?}", got.map(|p| p.upload.len()));
    }
    assert_eq!(e.local_u(), &before[..], "refused rounds leave the device as it was");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn take_part_flips_one_coin_per_round_and_stops_at_the_budget() {
    let helper = KeyPair::from_secret(1, &[9; 32]);
    let config = helper_config(&helper);
    let policy = DevicePolicy { epsilon_budget: 2.2, ..DevicePolicy::RELEASE };
    let mut ledger = Ledger::default();
    let mut e = engine();
    let mut joined = 0;
    let mut rounds = 0;
    while joined < 1 {
        rounds += 1;
        assert!(rounds < 60, "a coin at q = 0.5 came up tails 60 times");
        let t = RoundTask { round_id: rounds, ..secure_task() };
        let first = take_part(&mut e, &t, Some(&config), &mut ledger, &policy, &mut Sampler::os()).unwrap();
        // The same round again: the stored coin, never a second flip; a joined round is not joined twice by the caller.
        if first.is_none() {
            assert!(take_part(&mut e, &t, Some(&config), &mut ledger, &policy, &mut Sampler::os()).unwrap().is_none());
        } else {
            joined += 1;
        }
    }
    assert_eq!(ledger.entries.len(), 1);
    let spent = ledger.spent(&policy).unwrap();
    assert!(spent.curious_server_epsilon > 0.0 && spent.curious_server_epsilon <= 2.2, "{spent:?}");
    // z = 6 against a curious server: one round fits in ε 2.2 (ε ≈ 1.56), two do not (≈ 2.27).
    let mut refused = false;
    for round in rounds + 1..rounds + 60 {
        let t = RoundTask { round_id: round, ..secure_task() };
        match take_part(&mut e, &t, Some(&config), &mut ledger, &policy, &mut Sampler::os()) {
            Ok(None) => continue,
            Err(HearthError::DeviceBudgetSpent(_)) => {
                refused = true;
                break;
            }
            other => panic!("round {round}: {:?}", other.map(|p| p.is_some())),
        }
    }
    assert!(refused, "the budget never stopped participation");
    assert_eq!(ledger.entries.len(), 1, "a refused round costs nothing");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn rounds_for_another_model_or_too_few_events_are_refused_before_training() {
    let mut e = engine();
    let before = e.local_u().to_vec();
    let other = RoundTask { model_version: 4, ..task(Encoding::F32) };
    assert!(matches!(
        participate(&mut e, &other, None, &DevicePolicy::RELEASE, &mut Sampler::os()),
        Err(HearthError::WrongModel { wanted: 4, .. })
    ));
    let greedy = RoundTask { min_events: 10_000, ..task(Encoding::F32) };
    assert!(matches!(
        participate(&mut e, &greedy, None, &DevicePolicy::RELEASE, &mut Sampler::os()),
        Err(HearthError::TooFewEvents { needed: 10_000, .. })
    ));
    let bad_clip = RoundTask { clip_norm: -1.0, ..task(Encoding::F32) };
    assert!(participate(&mut e, &bad_clip, None, &DevicePolicy::RELEASE, &mut Sampler::os()).is_err());
    let unknown: Result<RoundTask, _> = serde_json::from_value(serde_json::json!({
        "round_id": 1, "model_version": 3, "clip_norm": 1.0, "noise_multiplier": 1.0, "device_id": "x"
    }));
    assert!(unknown.is_err(), "tasks with unknown fields are refused");
    assert_eq!(e.local_u(), &before[..], "refused rounds leave the device as it was");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_stored_local_embedding_restores_the_trained_ranking() {
    use hearth_core::device::catalog::Context;
    let mut trained = engine();
    participate(&mut trained, &task(Encoding::F32), None, &DevicePolicy::RELEASE, &mut Sampler::os()).unwrap();
    let logits = |e: &Engine| e.catalog_logits(&Context::default(), NOW).unwrap();

    // A device that reloads: same profile and catalog, fresh engine, the stored embedding.
    let mut reloaded = engine();
    assert_ne!(logits(&reloaded), logits(&trained), "training changed the device's scores");
    reloaded.set_local_u(trained.local_u()).unwrap();
    assert_eq!(logits(&reloaded), logits(&trained));

    // A stored embedding of another width or with a non-finite value is refused and changes nothing.
    let kept = reloaded.local_u().to_vec();
    let short = &kept[..kept.len() - 1];
    assert!(matches!(reloaded.set_local_u(short), Err(HearthError::Shape { name, .. }) if name == "local_u"));
    let mut nan = kept.clone();
    nan[2] = f32::NAN;
    assert!(matches!(reloaded.set_local_u(&nan), Err(HearthError::NonFinite { name, index: 2 }) if name == "local_u"));
    assert_eq!(reloaded.local_u(), &kept[..]);

    // Erase forgets it with the profile.
    reloaded.erase_profile();
    assert!(reloaded.local_u().iter().all(|v| *v == 0.0));
}

/// The demo's visitor, at engine level: sports pages read and ads shown, none clicked. A round
/// of local training must leave the ranking as it was: fitted on negatives alone, `local_u`
/// learned to push down exactly the ads the reading had earned (the demo e2e's sports top 30
/// went from all sports to none).
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_round_without_clicks_leaves_the_ranking_as_it_was() {
    let ads: Vec<Ad> = (0..6).map(|i| ad(&format!("ad{i}"), if i % 2 == 0 { "sports" } else { "finance" })).collect();
    let mut profile = Profile::new(ProfileConfig::default()).unwrap();
    let mut ts = NOW - 60 * 60_000;
    for _ in 0..5 {
        ts += 60_000;
        profile
            .record(Event { kind: EventKind::PageView, ts, topics: vec!["sports".into()], keywords: vec![], ad: None })
            .unwrap();
        for a in &ads {
            ts += 60_000;
            profile.record(ad_event(EventKind::Impression, ts, a)).unwrap();
        }
    }
    let mut e = Engine::new(pack(4), profile).unwrap();
    e.set_catalog(ads).unwrap();
    let before = e.catalog_logits(&Context::default(), NOW).unwrap();
    let examples = e.examples().unwrap();
    assert_eq!(examples.len(), 30);
    assert!(examples.iter().all(|x| x.label == 0.0));
    e.train(&examples, &TrainConfig::default()).unwrap();
    assert!(e.local_u().iter().all(|&u| u == 0.0), "local_u {:?}", e.local_u());
    assert_eq!(e.catalog_logits(&Context::default(), NOW).unwrap(), before);
}
