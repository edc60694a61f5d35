//! Ranking through the engine: interest moves scores, caps and diversity shape the list,
//! explanations name the profile features that matter, and bad candidates are refused.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod common;

use hearth_core::HearthError;
use hearth_core::device::catalog::{Ad, Context, MAX_CATALOG};
use hearth_core::device::engine::Engine;
use hearth_core::device::event::{Event, EventKind};
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::device::rank::{
    AD_CAPS, CAMPAIGN_CAPS, CapSpec, Diversity, FrequencyCaps, RankOptions, SESSION_GAP_MS, session_start,
};
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
    ad_event("impression", ad, ts)
}

fn ad_event(kind: &str, ad: &Ad, ts: i64) -> Event {
    event(
        serde_json::json!({"kind": kind, "ts": ts, "ad_id": ad.id, "campaign": ad.campaign, "advertiser": ad.advertiser, "category": ad.category}),
    )
}

fn ids(e: &Engine, opts: &RankOptions) -> Vec<String> {
    e.rank(&Context::default(), opts).unwrap().into_iter().map(|r| r.ad_id).collect()
}

fn top_ad(e: &Engine) -> Ad {
    let top = ids(e, &RankOptions { k: 1, ..RankOptions::at(NOW) }).remove(0);
    e.catalog().ads.iter().find(|a| a.id == top).unwrap().clone()
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn default_caps_hold_an_ad_to_two_a_session_and_three_a_day() {
    // Page views up to NOW: the session is under way.
    let mut e = engine(reader_of("sports", 3), 28);
    let top = top_ad(&e);
    // k 27 of 28 ads: one left out still leaves k, so nothing relaxes.
    let all = RankOptions { k: 27, ..RankOptions::at(NOW) };
    e.record(impression(&top, NOW - 2 * MINUTE)).unwrap();
    assert!(ids(&e, &all).contains(&top.id), "one impression this session");
    e.record(impression(&top, NOW - MINUTE)).unwrap();
    let left = ids(&e, &all);
    assert_eq!(left.len(), 27, "two this session: only that ad is left out");
    assert!(!left.contains(&top.id));
    let no_session_cap = |ad| RankOptions { caps: serde_json::from_value(serde_json::json!({"ad": ad})).unwrap(), ..all.clone() };
    assert!(ids(&e, &no_session_cap(serde_json::json!({"session": null}))).contains(&top.id), "two of three a day");
    assert!(ids(&e, &no_session_cap(serde_json::Value::Null)).contains(&top.id));
    // A third one in an earlier session, within the day: the day cap holds it back too.
    let mut e = engine(reader_of("sports", 3), 28);
    for ts in [NOW - 5 * HOUR, NOW - 2 * MINUTE, NOW - MINUTE] {
        e.record(impression(&top, ts)).unwrap();
    }
    assert!(!ids(&e, &no_session_cap(serde_json::json!({"session": null}))).contains(&top.id), "three in the day");
    // Impressions over a day old count for nothing.
    let mut e = engine(reader_of("sports", 3), 28);
    for ts in [NOW - 25 * HOUR, NOW - 24 * HOUR - 1, NOW - 24 * HOUR] {
        e.record(impression(&top, ts)).unwrap();
    }
    assert!(ids(&e, &no_session_cap(serde_json::json!({"session": null}))).contains(&top.id));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn default_caps_hold_a_campaign_to_four_a_session() {
    let mut e = engine(reader_of("sports", 3), 28);
    let top = top_ad(&e);
    let own: Vec<Ad> = e.catalog().ads.iter().filter(|a| a.campaign == top.campaign).cloned().collect();
    assert!(own.len() >= 4);
    // One impression each of four of the campaign's ads: no ad is at its own cap.
    for (i, ad) in own.iter().take(4).enumerate() {
        e.record(impression(ad, NOW - 10 * MINUTE + i as i64)).unwrap();
    }
    let left = ids(&e, &RankOptions { k: 28 - own.len(), ..RankOptions::at(NOW) });
    assert_eq!(left.len(), 28 - own.len());
    assert!(e.catalog().ads.iter().filter(|a| left.contains(&a.id)).all(|a| a.campaign != top.campaign));
    let uncapped = RankOptions {
        caps: serde_json::from_value(serde_json::json!({"campaign": null})).unwrap(),
        k: 28,
        ..RankOptions::at(NOW)
    };
    assert_eq!(ids(&e, &uncapped).len(), 28);
    assert_eq!(ids(&e, &RankOptions { caps: FrequencyCaps::NONE, k: 28, ..RankOptions::at(NOW) }).len(), 28);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_session_ends_after_thirty_minutes_without_events() {
    let mut p = Profile::new(ProfileConfig::default()).unwrap();
    assert_eq!(session_start(&p, NOW), NOW, "no events: the session starts now");
    let t = NOW - 3 * HOUR;
    for ts in [t, t + 29 * MINUTE, t + 58 * MINUTE, t + 2 * HOUR, t + 2 * HOUR + 10 * MINUTE] {
        p.record(event(serde_json::json!({"kind": "page_view", "ts": ts, "topics": ["x"]}))).unwrap();
    }
    assert_eq!(session_start(&p, t + 60 * MINUTE), t, "gaps under 30 minutes keep one session");
    assert_eq!(session_start(&p, t + 58 * MINUTE + SESSION_GAP_MS - 1), t);
    assert_eq!(
        session_start(&p, t + 58 * MINUTE + SESSION_GAP_MS),
        t + 58 * MINUTE + SESSION_GAP_MS,
        "30 minutes idle: a new one"
    );
    assert_eq!(session_start(&p, t + 2 * HOUR + 15 * MINUTE), t + 2 * HOUR, "a gap of an hour splits them");
    // Events after `now` (another clock) do not count.
    assert_eq!(session_start(&p, t + 30 * MINUTE), t);
    // Out of recording order, the same.
    let mut q = Profile::new(ProfileConfig::default()).unwrap();
    for ts in [t + 58 * MINUTE, t, t + 29 * MINUTE] {
        q.record(event(serde_json::json!({"kind": "page_view", "ts": ts, "topics": ["x"]}))).unwrap();
    }
    assert_eq!(session_start(&q, t + 60 * MINUTE), t);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn dismissed_ads_and_twice_dismissed_campaigns_never_rank() {
    // A short event log: the dismissals must outlive their events.
    let config = ProfileConfig { max_events: 5, ..ProfileConfig::default() };
    let mut e = Engine::new(common::pack(4), Profile::new(config).unwrap()).unwrap();
    e.set_catalog(catalog(28)).unwrap();
    let all = |e: &Engine| ids(e, &RankOptions { k: 28, caps: FrequencyCaps::NONE, ..RankOptions::at(NOW) });
    let top = top_ad(&e);
    e.record(ad_event("dismissal", &top, NOW - 10)).unwrap();
    for i in 0..10 {
        e.record(event(serde_json::json!({"kind": "page_view", "ts": NOW - 9 + i, "topics": ["sports"]}))).unwrap();
    }
    assert!(e.profile().events().all(|ev| ev.kind == EventKind::PageView));
    let left = all(&e);
    assert_eq!(left.len(), 27, "k above what is left: the dismissed ad still does not come back");
    assert!(!left.contains(&top.id));
    let contextual = RankOptions { k: 28, personalized: false, ..RankOptions::at(NOW) };
    assert!(!ids(&e, &contextual).contains(&top.id), "not personalized: still left out");
    // A second dismissal in the same campaign rules out all of its ads.
    let sibling = e.catalog().ads.iter().find(|a| a.campaign == top.campaign && a.id != top.id).unwrap().clone();
    let own = e.catalog().ads.iter().filter(|a| a.campaign == top.campaign).count();
    e.record(ad_event("dismissal", &sibling, NOW)).unwrap();
    let left = all(&e);
    assert_eq!(left.len(), 28 - own);
    assert!(e.catalog().ads.iter().filter(|a| left.contains(&a.id)).all(|a| a.campaign != top.campaign));
    // The scored path filters alike; erase gives them all back.
    let logits = e.catalog_logits(&Context::default(), NOW).unwrap();
    let opts = RankOptions { k: 28, ..RankOptions::at(NOW) };
    assert_eq!(e.rank_scored(&Context::default(), &opts, &logits).unwrap(), e.rank(&Context::default(), &opts).unwrap());
    e.erase_profile();
    assert_eq!(all(&e).len(), 28);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn avoided_and_capped_ads_come_back_in_order_when_too_few_remain() {
    // Six ads of six campaigns: one to avoid, one at its session cap, one at its day cap.
    let mut e = engine(reader_of("travel", 2), 6);
    let ads = e.catalog().ads.clone();
    let (avoided, session_capped, day_capped) = (&ads[0], &ads[1], &ads[2]);
    for ts in [NOW - MINUTE, NOW - 1] {
        e.record(impression(session_capped, ts)).unwrap();
    }
    for ts in [NOW - 9 * HOUR, NOW - 8 * HOUR, NOW - 7 * HOUR] {
        e.record(impression(day_capped, ts)).unwrap();
    }
    let opts = |k| RankOptions { k, avoid: vec![avoided.id.clone(), "not-in-the-catalog".into()], ..RankOptions::at(NOW) };
    let free: Vec<&str> = ads[3..].iter().map(|a| a.id.as_str()).collect();
    let got = ids(&e, &opts(3));
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|id| free.contains(&id.as_str())), "{got:?}");
    for (k, back) in [
        (4, vec![&avoided.id]),
        (5, vec![&avoided.id, &session_capped.id]),
        (6, vec![&avoided.id, &session_capped.id, &day_capped.id]),
    ] {
        let got = ids(&e, &opts(k));
        assert_eq!(got.len(), k);
        assert!(got[..3].iter().all(|id| free.contains(&id.as_str())), "k {k}: {got:?}");
        assert_eq!(got[3..].iter().collect::<Vec<_>>(), back, "k {k}: the relaxed ads follow, avoided first");
    }
    assert_eq!(ids(&e, &opts(10)).len(), 6);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn caps_read_from_json_replace_defaults_field_by_field() {
    let caps = |v: serde_json::Value| -> Result<FrequencyCaps, String> {
        let opts: RankOptions =
            serde_json::from_value(serde_json::json!({"now_ms": NOW, "caps": v})).map_err(|e| e.to_string())?;
        Ok(opts.caps)
    };
    let defaults = FrequencyCaps { ad: AD_CAPS, campaign: CAMPAIGN_CAPS };
    assert_eq!(defaults, FrequencyCaps::default());
    assert_eq!((AD_CAPS.day, AD_CAPS.session, CAMPAIGN_CAPS.day, CAMPAIGN_CAPS.session), (Some(3), Some(2), Some(6), Some(4)));
    let absent: RankOptions = serde_json::from_value(serde_json::json!({"now_ms": NOW})).unwrap();
    assert_eq!(absent, RankOptions::at(NOW));
    assert_eq!(caps(serde_json::json!({})).unwrap(), defaults);
    assert_eq!(caps(serde_json::json!({"ad": null})).unwrap(), FrequencyCaps { ad: CapSpec::NONE, ..defaults });
    assert_eq!(
        caps(serde_json::json!({"ad": {"day": 1}, "campaign": {"session": null}})).unwrap(),
        FrequencyCaps { ad: CapSpec { day: Some(1), session: Some(2) }, campaign: CapSpec { day: Some(6), session: None } }
    );
    assert_eq!(caps(serde_json::json!({"ad": null, "campaign": null})).unwrap(), FrequencyCaps::NONE);
    // Written and read back, the same caps.
    for c in [defaults, FrequencyCaps::NONE, FrequencyCaps { ad: CapSpec { day: None, session: Some(7) }, ..defaults }] {
        assert_eq!(caps(serde_json::to_value(c).unwrap()).unwrap(), c);
    }
    for bad in [
        serde_json::json!({"ad": {"day": -1}}),
        serde_json::json!({"ad": {"day": 1.5}}),
        serde_json::json!({"ad": {"week": 1}}),
        serde_json::json!({"per_ad": {"max": 1, "window_ms": 1000}}),
        serde_json::json!({"ad": "3/day"}),
    ] {
        assert!(caps(bad.clone()).is_err(), "{bad}");
    }
    let e = engine(reader_of("sports", 1), 3);
    for zero in [serde_json::json!({"ad": {"day": 0}}), serde_json::json!({"campaign": {"session": 0}})] {
        let opts = RankOptions { caps: caps(zero.clone()).unwrap(), ..RankOptions::at(NOW) };
        assert!(
            matches!(e.rank(&Context::default(), &opts), Err(HearthError::InvalidRankOptions(m)) if m.contains("null")),
            "{zero}"
        );
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_ranking_that_is_not_personalized_ignores_the_profile() {
    let fan = engine(reader_of("sports", 30), 40);
    let nobody = engine(Profile::new(ProfileConfig::default()).unwrap(), 40);
    let context = Context { topics: vec!["travel".into()], slot: Some("sidebar".into()), hour: Some(9), ..Context::default() };
    let contextual = RankOptions { k: 40, personalized: false, ..RankOptions::at(NOW) };
    let personal = RankOptions { k: 40, ..RankOptions::at(NOW) };
    let ranked = fan.rank(&context, &contextual).unwrap();
    assert_eq!(ranked, nobody.rank(&context, &personal).unwrap(), "as for an empty profile");
    assert!(ranked.iter().all(|r| r.why.is_empty()), "nothing of the profile explains it");
    assert_ne!(ranked, fan.rank(&context, &personal).unwrap(), "the profile moves a personalized ranking");
    let logits = fan.catalog_logits(&context, NOW).unwrap();
    assert!(matches!(fan.rank_scored(&context, &contextual, &logits), Err(HearthError::InvalidRankOptions(_))));
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
    let capped = e.catalog().ads[0].clone();
    e.record(impression(&capped, NOW - HOUR)).unwrap();
    let context = Context { topics: vec!["travel".into()], slot: Some("sidebar".into()), hour: Some(9), ..Context::default() };
    let logits = e.catalog_logits(&context, NOW).unwrap();
    let caps = FrequencyCaps { ad: CapSpec { day: Some(1), session: None }, campaign: CapSpec::NONE };
    let rule = Diversity { slots: 4, max_per_advertiser: Some(1), max_per_category: Some(2) };
    for opts in [
        RankOptions { k: 30, ..RankOptions::at(NOW) },
        RankOptions { k: 5, explain: 0, ..RankOptions::at(NOW) },
        RankOptions { k: 30, caps, ..RankOptions::at(NOW) },
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
