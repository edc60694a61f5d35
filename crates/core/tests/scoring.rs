//! tract against the plain-Rust reference, and the cut graph against the whole one.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod common;

use common::{ARCH, random_request, random_slots, spec};
use hearth_core::model::forward;
use hearth_core::model::params::Gaussian;
use hearth_core::model::scorer::{Scorer, WholeGraph};

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn tract_matches_reference_on_random_inputs() {
    let mut rng = Gaussian::new(99);
    for seed in 0..4 {
        let pack = common::pack(seed);
        let scorer = Scorer::new(&pack).unwrap();
        let whole = WholeGraph::new(&pack).unwrap();
        let p = &pack.params;
        for n in [1usize, 7, 64] {
            let req = random_request(&mut rng);
            let ads: Vec<_> = (0..n).map(|_| random_slots(&mut rng, spec().ad_slots, ARCH.buckets)).collect();
            let ids: Vec<i64> = ads.iter().flat_map(|s| s.ids.clone()).collect();
            let weights: Vec<f32> = ads.iter().flat_map(|s| s.weights.clone()).collect();

            let side = scorer.ad_side(&ids, &weights).unwrap();
            let ref_side: Vec<f32> = ads.iter().flat_map(|s| forward::ad_side(p, &s.ids, &s.weights)).collect();
            assert_close(&side, &ref_side, 1e-5, "ad side");

            let rs = forward::request_side(p, &req);
            let expected: Vec<f32> = ref_side.chunks(ARCH.ad_side_width()).map(|row| forward::logit(p, &rs, row)).collect();
            assert_close(&scorer.logits(&req, &side).unwrap(), &expected, 1e-5, "cut graph");
            assert_close(&whole.logits(&req, &ids, &weights).unwrap(), &expected, 1e-5, "whole graph");
        }
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn user_gradient_matches_finite_differences() {
    let pack = common::pack(5);
    let p = &pack.params;
    let mut rng = Gaussian::new(3);
    let req = random_request(&mut rng);
    let ad = random_slots(&mut rng, spec().ad_slots, ARCH.buckets);
    let side = forward::ad_side(p, &ad.ids, &ad.weights);
    let rs = forward::request_side(p, &req);
    let grad = forward::user_gradient(p, &rs, &side);
    let h = 1e-3f32;
    for (i, &analytic) in grad.iter().enumerate() {
        let shifted = |delta: f32| {
            let mut r = rs.clone();
            r.user[i] += delta;
            // q depends on the user vector through w1_user.
            for (j, q) in r.q.iter_mut().enumerate() {
                *q += delta * p.get("w1_user")[i * ARCH.hidden + j];
            }
            forward::logit(p, &r, &side)
        };
        let numeric = (shifted(h) - shifted(-h)) / (2.0 * h);
        assert!((numeric - analytic).abs() < 2e-2, "d/du[{i}]: numeric {numeric} vs analytic {analytic}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn empty_batch_scores_nothing() {
    let scorer = Scorer::new(&common::pack(1)).unwrap();
    let mut rng = Gaussian::new(1);
    assert!(scorer.ad_side(&[], &[]).unwrap().is_empty());
    assert!(scorer.logits(&random_request(&mut rng), &[]).unwrap().is_empty());
}
