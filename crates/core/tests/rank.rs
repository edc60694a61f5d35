//! Ranking through the engine: interest moves scores, caps and diversity shape the list,
//! explanations name the profile features that matter, and bad candidates are refused.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod common;

use hearth_core::HearthError;
use hearth_core::device::catalog::{Ad, Context, MAX_CATALOG};
use hearth_core::device::engine::Engine;
use hearth_core::device::event::Event;
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::device::rank::{Cap, Diversity, FrequencyCaps, RankOptions};
use hearth_core::model::forward::sigmoid;

const NOW: i64 = 1_700_000_000_000;
const TOPICS: [&str; 4] = ["sports", "finance", "travel", "cooking"];

fn ad(id: usize) -> Ad {
    let topic = TOPICS[id % TOPICS.len()];
    Ad {
        id: format!("ad{id}"),
        campaign: Some(format!("camp{}", id % 7)),
        advertiser: Some(format!("adv{}", id % 5)),
        category: Some(topic.into()),
        features: vec![format!("topic:{topic}")],
    }
}

fn catalog(n: usize) -> Vec<Ad> {
    (0..n).map(ad).collect()
}

fn event(json: serde_json::Value) -> Event {
    Event::from_json(&json.to_string()).unwrap()
}

fn reader_of(topic: &str, views: usize) -> Profile {
    let mut p = Profile::new(ProfileConfig::default()).unwrap();
    for i in 0..views {
        p.record(event(serde_json::json!({"kind": "page_view", "ts": NOW - 1000 * i as i64, "topics": [topic]}))).unwrap();
    }
    p
}

fn engine(profile: Profile, n: usize) -> Engine {
    let mut e = Engine::new(common::pack(4), profile).unwrap();
    e.set_catalog(catalog(n)).unwrap();
    e
}

fn category_mean(e: &Engine, topic: &str) -> f32 {
    let logits = e.catalog_logits(&Context::default(), NOW).unwrap();
    let own: Vec<f32> =
        e.catalog().ads.iter().zip(&logits).filter(|(a, _)| a.category.as_deref() == Some(topic)).map(|(_, l)| *l).collect();
    own.iter().sum::<f32>() / own.len() as f32
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn reading_about_a_topic_moves_its_ads_up() {
    let sports_fan = engine(reader_of("sports", 20), 40);
    let banker = engine(reader_of("finance", 20), 40);
    let lift = category_mean(&sports_fan, "sports") - category_mean(&banker, "sports");
    let other = category_mean(&sports_fan, "finance") - category_mean(&banker, "finance");
    assert!(lift > 0.0 && lift > other, "sports lift {lift}, finance lift {other}");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn top_k_is_sorted_and_agrees_with_catalog_logits() {
    let e = engine(reader_of("travel", 5), 30);
    let logits = e.catalog_logits(&Context::default(), NOW).unwrap();
    let ranked = e.rank(&Context::default(), &RankOptions { k: 7, ..RankOptions::at(NOW) }).unwrap();
    assert_eq!(ranked.len(), 7);
    let mut best: Vec<f32> = logits.clone();
    best.sort_by(|a, b| b.total_cmp(a));
    for (r, expected) in ranked.iter().zip(&best) {
        assert_eq!(r.score, *expected);
        assert!((r.probability - sigmoid(r.score)).abs() < 1e-7);
        let i = e.catalog().ads.iter().position(|a| a.id == r.ad_id).unwrap();
        assert_eq!(logits[i], r.score);
    }
    let all = e.rank(&Context::default(), &RankOptions { k: 100, ..RankOptions::at(NOW) }).unwrap();
    assert_eq!(all.len(), 30);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn one_off_candidates_rank_like_the_installed_catalog() {
    let e = engine(reader_of("cooking", 3), 25);
    let context = Context { topics: vec!["travel".into()], slot: Some("sidebar".into()), hour: Some(9), ..Context::default() };
    let opts = RankOptions { k: 25, ..RankOptions::at(NOW) };
    assert_eq!(e.rank(&context, &opts).unwrap(), e.rank_candidates(catalog(25), &context, &opts).unwrap());
}

fn impression(ad: &Ad, ts: i64) -> Event {
    event(
        serde_json::json!({"kind": "impression", "ts": ts, "ad_id": ad.id, "campaign": ad.campaign, "advertiser": ad.advertiser, "category": ad.category}),
    )
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn frequency_caps_hold_back_ads_and_campaigns_within_the_window() {
    let mut e = engine(reader_of("sports", 3), 28);
    let hour = 3_600_000;
    let top = e.rank(&Context::default(), &RankOptions { k: 1, ..RankOptions::at(NOW) }).unwrap()[0].ad_id.clone();
    let top_ad = e.catalog().ads.iter().find(|a| a.id == top).unwrap().clone();
    // Two impressions inside the window, one long before it.
    for ts in [NOW - 10 * hour, NOW - hour, NOW - 60_000] {
        e.record(impression(&top_ad, ts)).unwrap();
    }
    let ids =
        |opts: &RankOptions| -> Vec<String> { e.rank(&Context::default(), opts).unwrap().into_iter().map(|r| r.ad_id).collect() };
    let per_ad = |max| RankOptions {
        k: 28,
        caps: FrequencyCaps { per_ad: Some(Cap { max, window_ms: 2 * hour }), per_campaign: None },
        ..RankOptions::at(NOW)
    };
    assert!(!ids(&per_ad(2)).contains(&top), "two impressions in the window reach a cap of 2");
    assert!(ids(&per_ad(3)).contains(&top), "the old impression is outside the window");
    let per_campaign = RankOptions {
        k: 28,
        caps: FrequencyCaps { per_ad: None, per_campaign: Some(Cap { max: 1, window_ms: 2 * hour }) },
        ..RankOptions::at(NOW)
    };
    let left = ids(&per_campaign);
    let campaign = top_ad.campaign.clone();
    assert_eq!(left.len(), 28 - e.catalog().ads.iter().filter(|a| a.campaign == campaign).count());
    assert!(e.catalog().ads.iter().filter(|a| left.contains(&a.id)).all(|a| a.campaign != campaign));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn diversity_limits_one_advertiser_and_category_in_the_top_slots() {
    let e = engine(reader_of("finance", 10), 40);
    // Five advertisers and four categories: four slots can always be filled within the rule.
    let rule = Diversity { slots: 4, max_per_advertiser: Some(1), max_per_category: Some(2) };
    let opts = RankOptions { k: 40, diversity: Some(rule), ..RankOptions::at(NOW) };
    let ranked = e.rank(&Context::default(), &opts).unwrap();
    let ad_of = |id: &str| e.catalog().ads.iter().find(|a| a.id == id).unwrap().clone();
    let top: Vec<Ad> = ranked[..4].iter().map(|r| ad_of(&r.ad_id)).collect();
    for a in &top {
        assert_eq!(top.iter().filter(|b| b.advertiser == a.advertiser).count(), 1);
        assert!(top.iter().filter(|b| b.category == a.category).count() <= 2);
    }
    // Every ad is still there, and the passed-over ones keep score order after the top slots.
    assert_eq!(ranked.len(), 40);
    assert!(ranked[4..].windows(2).all(|w| w[0].score >= w[1].score));
    let plain = e.rank(&Context::default(), &RankOptions { k: 40, ..RankOptions::at(NOW) }).unwrap();
    assert_eq!(plain[0], ranked[0], "the best ad always keeps first place");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn why_this_ad_names_the_profile_features_that_drive_it() {
    let mut profile = reader_of("sports", 30);
    profile.record(event(serde_json::json!({"kind": "page_view", "ts": NOW - 5, "keywords": ["kettle"]}))).unwrap();
    let e = engine(profile, 20);
    let ranked = e.rank(&Context::default(), &RankOptions { k: 20, explain: 2, ..RankOptions::at(NOW) }).unwrap();
    for r in &ranked {
        assert!(!r.why.is_empty() && r.why.len() <= 2);
        assert!(r.why.windows(2).all(|w| w[0].contribution.abs() >= w[1].contribution.abs()));
        assert!(r.why.iter().all(|c| c.feature == "topic:sports" || c.feature == "kw:kettle"));
    }
    let sports = ranked.iter().find(|r| r.ad_id == "ad0").unwrap();
    assert_eq!(sports.why[0].feature, "topic:sports");
    assert!(sports.why[0].contribution > 0.0, "a shared topic raises the ad's score");
    let silent = e.rank(&Context::default(), &RankOptions { explain: 0, ..RankOptions::at(NOW) }).unwrap();
    assert!(silent.iter().all(|r| r.why.is_empty()));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn bad_candidates_and_options_are_refused() {
    let mut e = engine(reader_of("sports", 1), 3);
    let opts = RankOptions::at(NOW);
    let ctx = Context::default();
    let too_many: Vec<Ad> = (0..MAX_CATALOG + 1)
        .map(|i| Ad { id: i.to_string(), campaign: None, advertiser: None, category: None, features: vec![] })
        .collect();
    assert!(
        matches!(e.rank_candidates(too_many, &ctx, &opts), Err(HearthError::TooLarge { found, .. }) if found == MAX_CATALOG + 1)
    );
    let wide = Ad { features: (0..common::spec().ad_slots).map(|i| format!("kw:w{i}")).collect(), ..ad(1) };
    assert!(matches!(e.rank_candidates(vec![wide], &ctx, &opts), Err(HearthError::InvalidAd(_))));
    assert!(
        matches!(e.rank_candidates(vec![ad(1), ad(1)], &ctx, &opts), Err(HearthError::InvalidAd(m)) if m.contains("duplicate"))
    );
    let unkinded = Ad { features: vec!["sports".into()], ..ad(2) };
    assert!(matches!(e.rank_candidates(vec![unkinded], &ctx, &opts), Err(HearthError::InvalidAd(_))));
    let blank = Ad { id: "  ".into(), ..ad(2) };
    assert!(matches!(e.set_catalog(vec![blank]), Err(HearthError::InvalidAd(_))));
    assert_eq!(e.catalog().len(), 3, "a refused catalog leaves the installed one in place");
    let late = Context { hour: Some(24), ..Context::default() };
    assert!(matches!(e.rank(&late, &opts), Err(HearthError::InvalidContext(_))));
    let crowded =
        Context { topics: (0..common::spec().context_slots + 1).map(|i| format!("t{i}")).collect(), ..Context::default() };
    assert!(matches!(e.rank(&crowded, &opts), Err(HearthError::TooLarge { .. })));
    assert!(matches!(e.rank(&ctx, &RankOptions { k: 0, ..opts }), Err(HearthError::InvalidRankOptions(_))));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_new_model_rescores_the_catalog_and_keeps_the_profile() {
    let mut e = engine(reader_of("sports", 4), 12);
    let before = e.catalog_logits(&Context::default(), NOW).unwrap();
    let profile = e.profile().to_json();
    e.set_model(common::pack(77)).unwrap();
    let after = e.catalog_logits(&Context::default(), NOW).unwrap();
    assert_eq!(after.len(), before.len());
    assert_ne!(after, before);
    assert_eq!(e.profile().to_json(), profile);
    let fresh = engine(reader_of("sports", 4), 12);
    let mut reloaded = Engine::new(common::pack(77), fresh.profile().clone()).unwrap();
    reloaded.set_catalog(catalog(12)).unwrap();
    assert_eq!(reloaded.catalog_logits(&Context::default(), NOW).unwrap(), after);
    e.erase_profile();
    assert_eq!(e.profile().feature_count(), 0);
    assert_eq!(e.profile().events().len(), 0);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn logits_from_elsewhere_rank_like_tract_and_bad_ones_are_refused() {
    let mut e = engine(reader_of("sports", 6), 30);
    let hour = 3_600_000;
    let capped = e.catalog().ads[0].clone();
    e.record(impression(&capped, NOW - hour)).unwrap();
    let context = Context { topics: vec!["travel".into()], slot: Some("sidebar".into()), hour: Some(9), ..Context::default() };
    let logits = e.catalog_logits(&context, NOW).unwrap();
    let caps = FrequencyCaps { per_ad: Some(Cap { max: 1, window_ms: 2 * hour }), per_campaign: None };
    let rule = Diversity { slots: 4, max_per_advertiser: Some(1), max_per_category: Some(2) };
    for opts in [
        RankOptions { k: 30, ..RankOptions::at(NOW) },
        RankOptions { k: 5, explain: 0, ..RankOptions::at(NOW) },
        RankOptions { k: 30, caps: caps.clone(), ..RankOptions::at(NOW) },
        RankOptions { k: 12, caps, diversity: Some(rule), ..RankOptions::at(NOW) },
    ] {
        assert_eq!(e.rank_scored(&context, &opts, &logits).unwrap(), e.rank(&context, &opts).unwrap(), "{opts:?}");
    }
    let opts = RankOptions::at(NOW);
    for wrong in [&logits[1..], &[logits.clone(), vec![0.0]].concat()[..], &[]] {
        let e = e.rank_scored(&context, &opts, wrong).unwrap_err();
        assert!(
            matches!(&e, HearthError::Shape { expected, found, .. } if expected == &[30] && found == &[wrong.len()]),
            "{e:?}"
        );
    }
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut poisoned = logits.clone();
        poisoned[17] = bad;
        assert_eq!(e.rank_scored(&context, &opts, &poisoned), Err(HearthError::NonFiniteLogit { index: 17 }));
    }
    assert!(e.rank_scored(&context, &RankOptions { k: 0, ..opts }, &logits).is_err());
}
