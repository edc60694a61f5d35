//! Small packs and inputs shared by the integration tests.
#![allow(dead_code)]

use hearth_core::device::catalog::Ad;
use hearth_core::device::event::{AdRef, Event, EventKind};
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::model::features::{FeatureSpec, HASH_NAME, Slots};
use hearth_core::model::pack::ModelPack;
use hearth_core::model::params::{Arch, Gaussian, Params};
use hearth_core::model::scorer::Request;

pub const ARCH: Arch = Arch { buckets: 512, dim: 8, hidden: 12 };

pub fn spec() -> FeatureSpec {
    FeatureSpec { hash: HASH_NAME.into(), seed: 11, buckets: ARCH.buckets as u32, user_slots: 10, context_slots: 4, ad_slots: 6 }
}

pub fn pack_bytes(seed: u64) -> (Vec<u8>, String) {
    ModelPack::write(&Params::init(ARCH, seed), &spec(), 3)
}

pub fn pack(seed: u64) -> ModelPack {
    let (onnx, manifest) = pack_bytes(seed);
    ModelPack::load(&onnx, &manifest).expect("generated pack loads")
}

/// Random padded slots: some real ids, the rest padding, weights of both signs.
pub fn random_slots(rng: &mut Gaussian, slots: usize, buckets: usize) -> Slots {
    let used = 1 + (rng.next_u64() as usize % slots);
    let mut ids = vec![0i64; slots];
    let mut weights = vec![0f32; slots];
    for i in 0..used {
        ids[i] = 1 + (rng.next_u64() % (buckets as u64 - 1)) as i64;
        weights[i] = rng.normal() as f32;
    }
    Slots { ids, weights }
}

pub fn random_request(rng: &mut Gaussian) -> Request {
    let s = spec();
    Request {
        user: random_slots(rng, s.user_slots, ARCH.buckets),
        local_u: (0..ARCH.dim).map(|_| 0.3 * rng.normal() as f32).collect(),
        context: random_slots(rng, s.context_slots, ARCH.buckets),
    }
}

pub fn ad_event(kind: EventKind, ts: i64, ad: &Ad) -> Event {
    Event {
        kind,
        ts,
        topics: vec![],
        keywords: vec![],
        ad: Some(AdRef {
            ad_id: ad.id.clone(),
            campaign: ad.campaign.clone(),
            advertiser: ad.advertiser.clone(),
            category: ad.category.clone(),
        }),
    }
}

pub fn ad(id: &str, category: &str) -> Ad {
    Ad {
        id: id.into(),
        campaign: Some(format!("camp-{category}")),
        advertiser: Some(format!("adv-{id}")),
        category: Some(category.into()),
        features: vec![format!("topic:{category}")],
    }
}

/// A visitor who reads sports, clicks sports ads and ignores finance ads.
pub fn sports_fan(now: i64) -> (Profile, Vec<Ad>) {
    let ads: Vec<Ad> = (0..6).map(|i| ad(&format!("ad{i}"), if i % 2 == 0 { "sports" } else { "finance" })).collect();
    let mut profile = Profile::new(ProfileConfig::default()).unwrap();
    let mut ts = now - 1_000 * 60_000;
    for round in 0..20 {
        ts += 60_000;
        let page = Event { kind: EventKind::PageView, ts, topics: vec!["sports".into()], keywords: vec![], ad: None };
        profile.record(page).unwrap();
        for a in &ads {
            ts += 60_000;
            profile.record(ad_event(EventKind::Impression, ts, a)).unwrap();
            if a.category.as_deref() == Some("sports") && round % 2 == 0 {
                profile.record(ad_event(EventKind::Click, ts + 1_000, a)).unwrap();
            }
        }
    }
    (profile, ads)
}

/// Pearson's correlation of two samples: what the secure-aggregation and measurement view tests
/// bound to show a server's view says nothing about a secret.
pub fn correlation(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}
