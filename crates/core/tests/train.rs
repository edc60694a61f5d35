//! Local training: the hand-derived gradient against finite differences and against the
//! independent numpy implementation in crates/core/tests/vectors/train_fixture.py, the Adam formula, labelling,
//! and that training on a known signal learns it, also on a brand-new device.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod common;

use common::{ARCH, ad, ad_event, random_slots, spec, sports_fan};
use hearth_core::HearthError;
use hearth_core::device::catalog::Ad;
use hearth_core::device::event::{Event, EventKind};
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::learning::train::{
    Adam, AdamState, DISMISSAL_WEIGHT, Example, TrainConfig, example_loss, examples, mean_loss, train,
};
use hearth_core::model::features::Slots;
use hearth_core::model::params::{Arch, Gaussian, Params};
use serde::Deserialize;

/// Written by `python3 crates/core/tests/vectors/train_fixture.py`; regenerate it rather than editing it.
const FIXTURE: &str = include_str!("vectors/train.json");

#[derive(Deserialize)]
struct Fixture {
    arch: FixtureArch,
    adam: Adam,
    local_l2: f32,
    reconstruction_steps: usize,
    batch_size: usize,
    params: Vec<f32>,
    local_u: Vec<f32>,
    examples: Vec<FixtureExample>,
    mean_loss: f32,
    grad: Vec<f32>,
    grad_u: Vec<f32>,
    local_u_reconstructed: Vec<f32>,
    params_after: Vec<f32>,
}

#[derive(Deserialize)]
struct FixtureArch {
    buckets: usize,
    dim: usize,
    hidden: usize,
}

#[derive(Deserialize)]
struct FixtureSlots {
    ids: Vec<i64>,
    weights: Vec<f32>,
}

#[derive(Deserialize)]
struct FixtureExample {
    user: FixtureSlots,
    context: FixtureSlots,
    ad: FixtureSlots,
    label: f32,
    weight: f32,
}

fn slots(s: &FixtureSlots) -> Slots {
    Slots { ids: s.ids.clone(), weights: s.weights.clone() }
}

fn fixture() -> (Fixture, Params, Vec<Example>) {
    let f: Fixture = serde_json::from_str(FIXTURE).unwrap();
    let arch = Arch { buckets: f.arch.buckets, dim: f.arch.dim, hidden: f.arch.hidden };
    let p = Params::new(arch, f.params.clone()).unwrap();
    let ex = f
        .examples
        .iter()
        .map(|e| Example { user: slots(&e.user), context: slots(&e.context), ad: slots(&e.ad), label: e.label, weight: e.weight })
        .collect();
    (f, p, ex)
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "{what}[{i}]: {g} vs {w}");
    }
}

/// Summed gradient over `ex`, divided by the total weight.
fn mean_grad(p: &Params, u: &[f32], ex: &[Example]) -> (Vec<f32>, Vec<f32>) {
    let total: f32 = ex.iter().map(|e| e.weight).sum();
    let (mut g, mut gu) = (vec![0.0; p.values.len()], vec![0.0; u.len()]);
    for e in ex {
        example_loss(p, u, e, Some(&mut g), Some(&mut gu));
    }
    (g.iter().map(|x| x / total).collect(), gu.iter().map(|x| x / total).collect())
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn gradient_matches_numpy() {
    let (f, p, ex) = fixture();
    assert!((mean_loss(&p, &f.local_u, &ex) - f.mean_loss).abs() < 1e-5, "loss");
    let (g, gu) = mean_grad(&p, &f.local_u, &ex);
    assert!(g.iter().filter(|x| **x != 0.0).count() > 50, "the fixture exercises most parameters");
    assert_close(&g, &f.grad, 1e-5, "grad");
    assert_close(&gu, &f.grad_u, 1e-5, "grad local_u");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn reconstruction_and_global_steps_match_numpy() {
    let (f, p, ex) = fixture();
    let cfg = TrainConfig {
        reconstruction_steps: f.reconstruction_steps,
        reconstruction: f.adam,
        local_l2: f.local_l2,
        epochs: 1,
        batch_size: f.batch_size,
        global: f.adam,
    };
    let out = train(&p, &f.local_u, &ex, &cfg).unwrap();
    assert_close(&out.local_u, &f.local_u_reconstructed, 1e-5, "reconstructed local_u");
    let after: Vec<f32> = p.values.iter().zip(&out.delta).map(|(a, d)| a + d).collect();
    assert_close(&after, &f.params_after, 1e-5, "parameters after the global steps");
}

/// Central differences in f32 on a small random model, every parameter and local_u.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn gradient_matches_finite_differences() {
    let arch = Arch { buckets: 24, dim: 4, hidden: 5 };
    let mut rng = Gaussian::new(5);
    let p =
        Params::new(arch, (0..arch.layout().iter().map(|s| s.len()).sum()).map(|_| 0.5 * rng.normal() as f32).collect()).unwrap();
    let u: Vec<f32> = (0..arch.dim).map(|_| 0.3 * rng.normal() as f32).collect();
    let ex: Vec<Example> = (0..6)
        .map(|i| Example {
            user: random_slots(&mut rng, 5, arch.buckets),
            context: random_slots(&mut rng, 2, arch.buckets),
            ad: random_slots(&mut rng, 3, arch.buckets),
            label: (i % 2) as f32,
            weight: if i == 5 { DISMISSAL_WEIGHT } else { 1.0 },
        })
        .collect();
    let (g, gu) = mean_grad(&p, &u, &ex);
    let eps = 1e-2f32;
    let check = |analytic: f32, plus: f32, minus: f32, what: String| {
        let fd = (plus - minus) / (2.0 * eps);
        assert!((fd - analytic).abs() <= 2e-3 + 2e-2 * fd.abs(), "{what}: finite difference {fd}, analytic {analytic}");
    };
    for (i, &analytic) in g.iter().enumerate() {
        let (mut hi, mut lo) = (p.clone(), p.clone());
        hi.values[i] += eps;
        lo.values[i] -= eps;
        check(analytic, mean_loss(&hi, &u, &ex), mean_loss(&lo, &u, &ex), format!("param {i}"));
    }
    for i in 0..u.len() {
        let (mut hi, mut lo) = (u.clone(), u.clone());
        hi[i] += eps;
        lo[i] -= eps;
        check(gu[i], mean_loss(&p, &hi, &ex), mean_loss(&p, &lo, &ex), format!("local_u {i}"));
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn adam_follows_the_bias_corrected_formula() {
    let cfg = Adam { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    let mut state = AdamState::new(cfg, 1);
    let mut theta = [1.0f32];
    let (mut m, mut v, mut x) = (0.0f64, 0.0f64, 1.0f64);
    for (t, g) in [0.5f64, -2.0, 0.25].into_iter().enumerate() {
        state.step(&mut theta, &[g as f32]);
        m = 0.9 * m + 0.1 * g;
        v = 0.999 * v + 0.001 * g * g;
        let k = t as i32 + 1;
        x -= 0.1 * (m / (1.0 - 0.9f64.powi(k))) / ((v / (1.0 - 0.999f64.powi(k))).sqrt() + 1e-8);
        assert!((theta[0] as f64 - x).abs() < 1e-6, "step {k}: {} vs {x}", theta[0]);
    }
    // The first step moves by lr whatever the gradient's scale: the bias correction at work.
    let mut first = [0.0f32];
    AdamState::new(cfg, 1).step(&mut first, &[1e-4]);
    assert!((first[0] + 0.1).abs() < 1e-4, "{}", first[0]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn events_become_labelled_examples_without_leaking_their_label() {
    let (sports, finance, travel) = (ad("s1", "sports"), ad("f1", "finance"), ad("t1", "travel"));
    let mut profile = Profile::new(ProfileConfig::default()).unwrap();
    let min = 60_000;
    for e in [
        Event { kind: EventKind::PageView, ts: 0, topics: vec!["sports".into()], keywords: vec![], ad: None },
        ad_event(EventKind::Impression, min, &sports),
        ad_event(EventKind::Click, 2 * min, &sports), // the impression above is clicked
        ad_event(EventKind::Impression, 3 * min, &finance), // never clicked: a negative
        ad_event(EventKind::Dismissal, 4 * min, &travel),
        ad_event(EventKind::Impression, 5 * min, &travel),
        ad_event(EventKind::Click, 5 * min + 31 * min, &travel), // too late to claim it
    ] {
        profile.record(e).unwrap();
    }
    let s = spec();
    let catalog = [sports.clone(), finance.clone()];
    let ex = examples(&profile, &s, |id| catalog.iter().find(|a| a.id == id)).unwrap();
    let got: Vec<(f32, f32)> = ex.iter().map(|e| (e.label, e.weight)).collect();
    assert_eq!(got, vec![(1.0, 1.0), (0.0, 1.0), (0.0, DISMISSAL_WEIGHT), (0.0, 1.0), (1.0, 1.0)]);
    // The catalog's content features are used when the ad is known, the event's own otherwise.
    assert_eq!(ex[0].ad, sports.encode(&s));
    assert_eq!(ex[2].ad, Ad { features: vec![], ..travel.clone() }.encode(&s));
    // The click's user side is the profile before the click: it cannot contain adv:adv-s1 yet.
    let clicked_adv = s.bucket("adv:adv-s1") as i64;
    assert!(!ex[0].user.ids.contains(&clicked_adv));
    assert!(ex[1].user.ids.contains(&clicked_adv), "later examples see the earlier click");
    assert!(ex.iter().all(|e| e.context.ids.iter().all(|&id| id == 0)), "ad events carry no page context");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn training_learns_a_known_signal_on_a_new_device() {
    let now = 1_750_000_000_000;
    let (profile, ads) = sports_fan(now);
    let s = spec();
    let ex = examples(&profile, &s, |id| ads.iter().find(|a| a.id == id)).unwrap();
    assert!(ex.len() > 100, "{} examples", ex.len());
    let p = Params::init(ARCH, 3);
    // A brand-new device: no stored local embedding.
    let zeros = vec![0.0; ARCH.dim];
    let out = train(&p, &zeros, &ex, &TrainConfig::default()).unwrap();
    assert!(out.local_u.iter().any(|v| *v != 0.0), "reconstruction moved local_u");
    assert!(out.loss_reconstructed < out.loss_before, "{} -> {}", out.loss_before, out.loss_reconstructed);
    assert!(out.loss_after < out.loss_reconstructed, "{} -> {}", out.loss_reconstructed, out.loss_after);

    // The trained model, with the device's embedding, prefers the sports ads it learnt from.
    let after = Params::new(ARCH, p.values.iter().zip(&out.delta).map(|(a, d)| a + d).collect()).unwrap();
    let score = |params: &Params, u: &[f32], a: &Ad| {
        let e = Example { ad: a.encode(&s), label: 1.0, weight: 1.0, ..ex[ex.len() - 1].clone() };
        -example_loss(params, u, &e, None, None) // log-likelihood of a click
    };
    let gap = |params: &Params, u: &[f32]| score(params, u, &ads[0]) - score(params, u, &ads[1]);
    assert!(gap(&after, &out.local_u) > gap(&p, &zeros) + 0.5, "{} vs {}", gap(&after, &out.local_u), gap(&p, &zeros));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_device_without_clicks_keeps_its_local_embedding() {
    // A sports reader shown sports ads who never clicks: one class of label only.
    let now = 1_750_000_000_000;
    let (profile, ads) = sports_fan(now);
    let s = spec();
    let all = examples(&profile, &s, |id| ads.iter().find(|a| a.id == id)).unwrap();
    let negatives: Vec<Example> = all.iter().filter(|e| e.label == 0.0).cloned().collect();
    let positives: Vec<Example> = all.iter().filter(|e| e.label == 1.0).cloned().collect();
    assert!(negatives.len() > 10 && !positives.is_empty());
    let p = Params::init(ARCH, 3);
    let start: Vec<f32> = (0..ARCH.dim).map(|i| 0.01 * i as f32).collect();
    for one_class in [&negatives, &positives] {
        let out = train(&p, &start, one_class, &TrainConfig::default()).unwrap();
        assert_eq!(out.local_u, start, "no contrast, no personal embedding");
        assert_eq!(out.loss_reconstructed, out.loss_before);
        assert!(out.delta.iter().any(|d| *d != 0.0), "the global model still learns the click rate");
    }
    // One click among them is a contrast, and the embedding is fitted.
    let mixed: Vec<Example> = negatives.iter().chain(&positives[..1]).cloned().collect();
    let out = train(&p, &start, &mixed, &TrainConfig::default()).unwrap();
    assert_ne!(out.local_u, start);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn bad_training_settings_are_typed_errors() {
    let (f, p, ex) = fixture();
    for cfg in [
        TrainConfig { batch_size: 0, ..TrainConfig::default() },
        TrainConfig { global: Adam { lr: -1.0, ..Adam::with_lr(0.1) }, ..TrainConfig::default() },
        TrainConfig { reconstruction: Adam { beta2: 1.0, ..Adam::with_lr(0.1) }, ..TrainConfig::default() },
        TrainConfig { local_l2: f32::NAN, ..TrainConfig::default() },
    ] {
        assert!(matches!(train(&p, &f.local_u, &ex, &cfg), Err(HearthError::InvalidTraining(_))), "{cfg:?}");
    }
    assert!(matches!(train(&p, &[0.0; 7], &ex, &TrainConfig::default()), Err(HearthError::Shape { .. })));
}
