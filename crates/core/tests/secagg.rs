//! Secure aggregation seen by each server alone: what a curious leader or helper records about
//! one report is uniform mod 2^B and uncorrelated with the device's update, and the two
//! servers' sums still add up to the updates.

mod common;
use common::correlation;

use hearth_core::privacy::noise::{Sampler, SeededRandom};
use hearth_core::privacy::seal::{HelperKey, KeyPair};
use hearth_core::privacy::shares::{Binding, MASK, Report, SHARE_BITS, SecAggTask, ShareSum, build_report, expand};

const D: usize = 64;
const DEVICES: usize = 4_000;

fn binding() -> Binding {
    Binding {
        round_id: 3,
        model_version: 2,
        params: D as u64,
        clip_norm: 1.0,
        local_noise: 0.0,
        secagg: SecAggTask { clients: 10, leader_noise: 4.0, helper_noise: 4.0 },
    }
}

/// χ² of `values` (mod 2^B) over 64 equal bins against the uniform distribution.
fn chi2_uniform(values: &[u32]) -> f64 {
    let mut bins = [0u32; 64];
    for v in values {
        bins[((v & MASK) >> (SHARE_BITS - 6)) as usize] += 1;
    }
    let expected = values.len() as f64 / 64.0;
    bins.iter().map(|&c| (f64::from(c) - expected).powi(2) / expected).sum()
}

/// Devices whose first coordinate is either large positive or large negative (the secret), the
/// views the leader (its share) and the helper (−PRG(seed)) record of that coordinate.
fn views() -> (Vec<f64>, Vec<u32>, Vec<u32>) {
    let helper = KeyPair::from_secret(1, &[3; 32]);
    let key = HelperKey::from_config(&helper.config()).unwrap();
    let b = binding();
    let mut rng = Sampler::os();
    let mut pick = Sampler::from_source(SeededRandom::new(11));
    let (mut secret, mut leader, mut helper_view) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..DEVICES {
        let sign = if pick.uniform().unwrap() < 0.5 { -1.0 } else { 1.0 };
        let mut delta = vec![0.0f32; D];
        delta[0] = sign * 0.9;
        let built = build_report(delta, &b, &key, &mut rng).unwrap();
        let r = built.report;
        let seed = helper.open(r.key_id, &r.enc, &r.sealed, &Report::aad(&r.report_id, r.key_id, &b)).unwrap();
        secret.push(built.grid[0] as f64);
        leader.push(r.share[0]);
        helper_view.push(expand(&seed, D).next().unwrap().wrapping_neg() & MASK);
    }
    (secret, leader, helper_view)
}

#[test]
fn a_curious_leader_or_helper_sees_uniform_values_uncorrelated_with_the_update() {
    let (secret, leader, helper) = views();
    assert!(secret.iter().any(|v| *v > 0.0) && secret.iter().any(|v| *v < 0.0));
    // 63 degrees of freedom: the 0.999 quantile is 103.4.
    for (who, view) in [("leader", &leader), ("helper", &helper)] {
        let chi2 = chi2_uniform(view);
        assert!(chi2 < 103.4, "{who}'s view is not uniform: χ² = {chi2}");
        // Split by the secret: each half must look uniform too (a leak would shift one half).
        for positive in [true, false] {
            let half: Vec<u32> = view.iter().zip(&secret).filter(|(_, s)| (**s > 0.0) == positive).map(|(v, _)| *v).collect();
            let chi2 = chi2_uniform(&half);
            assert!(chi2 < 103.4, "{who}'s view given the secret's sign {positive}: χ² = {chi2}");
        }
        let as_signed: Vec<f64> = view.iter().map(|&v| f64::from(hearth_core::privacy::shares::centred(v))).collect();
        let r = correlation(&secret, &as_signed);
        // |r| of independent samples is below 4/√n but with probability 6e-5.
        assert!(r.abs() < 4.0 / (DEVICES as f64).sqrt(), "{who}'s view correlates with the update: r = {r}");
    }
    // Together, the two views give back the update exactly.
    for ((s, l), h) in secret.iter().zip(&leader).zip(&helper) {
        assert_eq!(f64::from(hearth_core::privacy::shares::centred(l.wrapping_add(*h))), *s);
    }
}

#[test]
fn the_views_are_not_uniform_when_the_mask_is_left_out() {
    // The χ² test can fail: the unmasked values (what a plaintext server sees) fail it.
    let (secret, _, _) = views();
    let unmasked: Vec<u32> = secret.iter().map(|&s| (s as i64) as u32 & MASK).collect();
    assert!(chi2_uniform(&unmasked) > 1000.0);
}

#[test]
fn sums_with_both_servers_noise_decode_to_the_updates_plus_that_noise() {
    let helper = KeyPair::from_secret(1, &[3; 32]);
    let key = HelperKey::from_config(&helper.config()).unwrap();
    let b = binding();
    let plan = b.plan().unwrap();
    let mut rng = Sampler::os();
    let (mut leader, mut helper_sum, mut truth) = (ShareSum::new(D), ShareSum::new(D), vec![0i64; D]);
    for i in 0..10 {
        let delta: Vec<f32> = (0..D).map(|j| ((i + j) % 5) as f32 - 2.0).collect();
        let built = build_report(delta, &b, &key, &mut rng).unwrap();
        let r = built.report;
        leader.add(r.share.iter().copied());
        helper_sum.add_unmask(&helper.open(r.key_id, &r.enc, &r.sealed, &Report::aad(&r.report_id, r.key_id, &b)).unwrap());
        truth.iter_mut().zip(&built.grid).for_each(|(t, g)| *t += g);
    }
    leader.add_noise(plan.sigma_leader, &mut Sampler::from_source(SeededRandom::new(1))).unwrap();
    helper_sum.add_noise(plan.sigma_helper, &mut Sampler::from_source(SeededRandom::new(2))).unwrap();
    let mut noise = ShareSum::new(D);
    noise.add_noise(plan.sigma_leader, &mut Sampler::from_source(SeededRandom::new(1))).unwrap();
    noise.add_noise(plan.sigma_helper, &mut Sampler::from_source(SeededRandom::new(2))).unwrap();
    let decoded = plan.decode(&leader.values(), &helper_sum.values()).unwrap();
    let noise = plan.decode(&noise.values(), &vec![0; D]).unwrap();
    for ((d, t), n) in decoded.iter().zip(&truth).zip(&noise) {
        assert!((d - (*t as f64 * plan.step + n)).abs() < 1e-9);
    }
    let rms = (noise.iter().map(|n| n * n).sum::<f64>() / D as f64).sqrt() / plan.step;
    let sigma = (plan.sigma_leader.powi(2) + plan.sigma_helper.powi(2)).sqrt();
    assert!((rms / sigma - 1.0).abs() < 0.35, "noise rms {rms} grid units, σ {sigma}");
}

#[test]
fn the_poisoning_check_passes_honest_sums_and_names_a_pushed_row() {
    use hearth_core::model::params::{Arch, Params};
    let layout = Params::init(Arch { buckets: 512, dim: 8, hidden: 12 }, 1).layout;
    let d = layout.last().map_or(0, |p| p.offset + p.len());
    let b = Binding { params: d as u64, ..binding() };
    let plan = b.plan().unwrap();
    let helper = KeyPair::from_secret(1, &[3; 32]);
    let key = HelperKey::from_config(&helper.config()).unwrap();
    let emb = layout.iter().find(|p| p.name == "emb").unwrap();
    let width = emb.shape[1];
    let mut rng = Sampler::os();
    let release = |poison: Option<u32>, rng: &mut Sampler<_>| {
        let (mut leader, mut helper_sum) = (ShareSum::new(d), ShareSum::new(d));
        for i in 0..10 {
            let delta: Vec<f32> = (0..d).map(|j| (((i * 31 + j * 7) % 11) as f32 - 5.0) / 40.0).collect();
            let mut r = build_report(delta, &b, &key, rng).unwrap().report;
            if let (Some(push), 0) = (poison, i) {
                // Row 3 of the embedding, pushed by `push` grid units per coordinate.
                for v in &mut r.share[emb.offset + 3 * width..emb.offset + 4 * width] {
                    *v = v.wrapping_add(push) & MASK;
                }
            }
            leader.add(r.share.iter().copied());
            helper_sum.add_unmask(&helper.open(r.key_id, &r.enc, &r.sealed, &Report::aad(&r.report_id, r.key_id, &b)).unwrap());
        }
        leader.add_noise(plan.sigma_leader, rng).unwrap();
        helper_sum.add_noise(plan.sigma_helper, rng).unwrap();
        plan.implausible_block(&plan.decode(&leader.values(), &helper_sum.values()).unwrap(), &layout)
    };
    for _ in 0..5 {
        assert_eq!(release(None, &mut rng), None, "an honest release was called implausible");
    }
    // Within 2^23: a value the modular encoding lets any client send. This plan's bound on a row
    // of 8 is about 1.2e7 grid units (n·C̃ = 1.6e6, release σ = 8.8e5), so a push of 2^22 per
    // coordinate (row norm 1.19e7) sat on it and passed about half the time; 3·2^21 (1.78e7)
    // is above it by six of the noise's σ.
    let why = release(Some(3 << 21), &mut rng).expect("a row pushed by 3·2^21 grid units per coordinate passed");
    assert!(why.contains("emb"), "{why}");
}
